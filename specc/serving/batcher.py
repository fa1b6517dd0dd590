"""Dynamic batching: a queue, a deadline and a list of futures.

Requests arrive with their inputs (batch dim first). The loop takes the oldest waiting request and
runs it with the requests *like it* that are waiting, as one batch in the model's thread, then splits
each output back into its requests' rows. Before it runs, it waits for more, until `max_batch` rows
are waiting or the oldest request's deadline (arrival + timeout) passes, but only while other
requests are arriving (their bodies being read: `arriving()`): a lone request runs at once.
Requests are alike when every input has the same datatype and the same sizes past the batch dim: a
sequence of 7 tokens is never padded or merged with one of 9. Others stay queued for the next round.

    batcher = Batcher(model.run, Limits(max_batch=16, timeout_s=0.002))
    with batcher.arriving() as ticket:   # while the request's body is read and checked
        outs = await batcher.submit([x], ticket)   # x: (rows, ...) -> each output's (rows, ...)
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .stats import Stats

Run = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class Limits:
    max_batch: int = 1  # rows per execution; 1: requests run one by one
    timeout_s: float = 0.0  # how long the oldest request waits for others


@dataclass(eq=False)  # compared by identity: the arrays have no single truth value
class Pending:
    arrays: list[np.ndarray]
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)
    rows: int = field(init=False)
    key: tuple = field(init=False)  # requests with equal keys may share a run

    def __post_init__(self) -> None:
        self.rows = len(self.arrays[0])
        self.key = tuple((x.dtype.str, x.shape[1:]) for x in self.arrays)


class Batcher:
    def __init__(self, run: Run, limits: Limits, stats: Stats | None = None):
        self.run, self.limits, self.stats = run, limits, stats or Stats()
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.waiting: list[Pending] = []
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="model")  # one model run at a time
        self.task: asyncio.Task | None = None
        self.coming = 0  # requests announced by arriving() that have not been submitted yet

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.pool.shutdown(wait=True)

    @contextlib.contextmanager
    def arriving(self) -> Iterator[list[bool]]:
        """Announce a request that is still being read: batches wait for it (up to their deadline)."""
        ticket = [True]
        self.coming += 1
        try:
            yield ticket
        finally:
            self._arrived(ticket)

    def _arrived(self, ticket: list[bool] | None) -> None:
        if ticket and ticket[0]:
            ticket[0] = False
            self.coming -= 1

    async def submit(self, arrays: list[np.ndarray], ticket: list[bool] | None = None) -> list[np.ndarray]:
        """Queue one request (its inputs, batch dim first); its outputs when its batch has run."""
        self._arrived(ticket)
        p = Pending(arrays, asyncio.get_running_loop().create_future())
        await self.queue.put(p)
        return await p.future

    async def _loop(self) -> None:
        while True:
            if not self.waiting:
                self.waiting.append(await self.queue.get())
            first = self.waiting[0]
            deadline = first.arrived + self.limits.timeout_s
            while self._gather(first) and self.coming > 0:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    self.waiting.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            group = self._take(first)
            try:
                await self._execute(group)
            except Exception as e:  # a bug here must answer the requests, not stop the loop
                for p in group:
                    self._fail(p, e)

    def _gather(self, first: Pending) -> bool:
        """Move what has arrived to the waiting list; whether `first`'s batch has room for more."""
        while not self.queue.empty():
            self.waiting.append(self.queue.get_nowait())
        return sum(p.rows for p in self.waiting if p.key == first.key) < self.limits.max_batch

    def _take(self, first: Pending) -> list[Pending]:
        """The oldest request and those like it, oldest first, up to max_batch rows (the oldest alone
        when it is larger)."""
        group, rows = [], 0
        for p in self.waiting:
            if p.key == first.key and (not group or rows + p.rows <= self.limits.max_batch):
                group.append(p)
                rows += p.rows
        self.waiting = [p for p in self.waiting if p not in group]
        return group

    async def _execute(self, group: list[Pending]) -> None:
        group = [p for p in group if not p.future.done()]  # a client that went away needs no answer
        if not group:
            return
        started = time.perf_counter()
        xs = [np.concatenate([p.arrays[i] for p in group]) if len(group) > 1 else group[0].arrays[i]
              for i in range(len(group[0].arrays))]
        loop = asyncio.get_running_loop()
        try:
            outs = await loop.run_in_executor(self.pool, self.run, xs)
        except Exception as e:
            if len(group) > 1:  # one request's values may be what failed: run each alone, so only it fails
                for p in group:
                    await self._execute([p])
                return
            self._fail(group[0], e)
            return
        ran = time.perf_counter() - started
        self.stats.executed(sum(p.rows for p in group), ran)
        self._answer(group, outs, started)

    def _fail(self, p: Pending, e: Exception) -> None:
        text = str(e).strip()
        if not p.future.done():
            p.future.set_exception(ModelFailed(text.splitlines()[0][:300] if text else type(e).__name__))
        self.stats.failed(time.perf_counter() - p.arrived)

    def _answer(self, group: list[Pending], outs: list[np.ndarray], started: float) -> None:
        at = 0
        for p in group:
            part = outs if len(group) == 1 else [o[at:at + p.rows] for o in outs]  # this request's rows
            at += p.rows
            if not p.future.done():
                p.future.set_result(part)
                self.stats.answered(p.rows, started - p.arrived, time.perf_counter() - p.arrived)


class ModelFailed(Exception):
    """The model raised on a request that passed every check (the message is the model's first line)."""
