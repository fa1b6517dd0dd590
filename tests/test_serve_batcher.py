"""The dynamic batcher alone (STYLE 16): a queue, a deadline and a list of futures, driven by real
requests on an event loop, with a small numpy model that records each batch it runs."""
import asyncio

import numpy as np
import pytest

from specc.serving.batcher import Batcher, Limits, ModelFailed


class Recorder:
    """y = 2x + the row count of its batch's time dim; remembers the batch shapes it ran."""

    def __init__(self):
        self.shapes = []

    def __call__(self, xs):
        x = xs[0]
        self.shapes.append(x.shape)
        if (x < 0).any():
            raise ValueError("negative input")
        return [x * 2, x.sum(axis=tuple(range(1, x.ndim)))]


def run(limits, requests, model=None):
    """Submit every request at once; (their answers or exceptions, the model)."""
    model = model or Recorder()

    async def main():
        b = Batcher(model, limits)
        b.start()
        try:
            return await asyncio.gather(*[b.submit([x]) for x in requests], return_exceptions=True), b
        finally:
            await b.stop()

    answers, b = asyncio.run(main())
    return answers, model, b


def rows(n, width, start):
    return np.arange(start, start + n * width, dtype=np.float32).reshape(n, width)


def test_concurrent_requests_share_a_run_and_each_gets_its_own_rows():
    reqs = [rows(n, 3, 100 * i) for i, n in enumerate([1, 2, 3, 1, 1])]
    answers, model, b = run(Limits(max_batch=16, timeout_s=0.05), reqs)
    assert model.shapes == [(8, 3)]
    for x, (doubled, summed) in zip(reqs, answers):
        assert np.array_equal(doubled, x * 2) and np.array_equal(summed, x.sum(1))
    stats = b.stats.report("m")["model_stats"][0]
    assert (stats["inference_count"], stats["execution_count"]) == (8, 1)
    assert stats["inference_stats"]["success"]["count"] == 5
    assert [s["batch_size"] for s in stats["batch_stats"]] == [8]


def test_a_batch_never_exceeds_max_batch_and_keeps_arrival_order():
    reqs = [rows(2, 1, 10 * i) for i in range(5)]
    answers, model, _ = run(Limits(max_batch=4, timeout_s=0.05), reqs)
    assert model.shapes == [(4, 1), (4, 1), (2, 1)]
    assert all(np.array_equal(a[0], x * 2) for x, a in zip(reqs, answers))


def test_a_request_larger_than_max_batch_runs_alone():
    reqs = [rows(1, 2, 0), rows(9, 2, 50), rows(1, 2, 90)]
    answers, model, _ = run(Limits(max_batch=4, timeout_s=0.05), reqs)
    assert sorted(model.shapes) == [(2, 2), (9, 2)]
    assert all(np.array_equal(a[0], x * 2) for x, a in zip(reqs, answers))


def test_requests_differing_in_a_non_batch_dim_are_never_merged():
    seq = [np.ones((1, 7), np.float32), np.ones((2, 9), np.float32), np.ones((1, 7), np.float32) * 3,
           np.ones((1, 9), np.int64)]
    answers, model, _ = run(Limits(max_batch=16, timeout_s=0.05), seq)
    assert sorted(model.shapes) == [(1, 9), (2, 7), (2, 9)]  # the int64 request is not merged with float ones
    for x, a in zip(seq, answers):
        assert a[0].shape == x.shape and a[0].dtype == x.dtype and np.array_equal(a[0], x * 2)


def test_a_failing_row_fails_only_its_own_request():
    reqs = [rows(1, 2, 0), -rows(1, 2, 1), rows(2, 2, 5)]
    answers, model, b = run(Limits(max_batch=8, timeout_s=0.05), reqs)
    assert isinstance(answers[1], ModelFailed) and str(answers[1]) == "negative input"
    assert np.array_equal(answers[0][0], reqs[0] * 2) and np.array_equal(answers[2][0], reqs[2] * 2)
    assert model.shapes[0] == (4, 2)  # tried together first, then each alone
    assert b.stats.report("m")["model_stats"][0]["inference_stats"]["fail"]["count"] == 1


def test_without_a_timeout_only_requests_already_queued_are_merged():
    answers, model, _ = run(Limits(max_batch=1, timeout_s=0.0), [rows(1, 1, i) for i in range(3)])
    assert model.shapes == [(1, 1)] * 3 and [float(a[0][0, 0]) for a in answers] == [0.0, 2.0, 4.0]


def test_a_batch_waits_only_for_requests_still_arriving_and_at_most_until_its_deadline():
    model = Recorder()

    async def main():
        b = Batcher(model, Limits(max_batch=64, timeout_s=0.3))
        b.start()
        clock = asyncio.get_running_loop().time
        t0 = clock()
        await b.submit([rows(1, 1, 0)])  # nothing else arriving: it runs at once
        lone = clock() - t0
        with b.arriving() as ticket:  # a second request is being read when the first is queued
            first = asyncio.create_task(b.submit([rows(1, 1, 1)]))
            await asyncio.sleep(0.1)
            second = await b.submit([rows(1, 1, 2)], ticket)
        merged = [await first, second]
        with b.arriving():  # announced, but it never comes (its body was bad): the deadline ends the wait
            t0 = clock()
            await b.submit([rows(1, 1, 3)])
            waited = clock() - t0
        await b.stop()
        return lone, merged, waited

    lone, merged, waited = asyncio.run(main())
    assert lone < 0.2 and 0.3 <= waited < 0.8
    assert model.shapes == [(1, 1), (2, 1), (1, 1)]
    assert [float(m[0][0, 0]) for m in merged] == [2.0, 4.0]
