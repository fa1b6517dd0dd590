"""The spec front end under 10,000 mutated specs: only SpecError escapes, nothing takes 5 s,
and nothing is allocated beyond the size guard."""

import pytest

from tests.reliability import fuzz

GUARD = 64 * 2**20


@pytest.fixture(autouse=True)
def small_guard(monkeypatch):
    monkeypatch.setenv("SPECC_MAX_PARAM_BYTES", str(GUARD))


@pytest.mark.slow
def test_ten_thousand_mutated_specs():
    fuzz.run(200, seed=99)  # warm up: torch loads its meta kernels lazily
    stats = fuzz.run(10_000, seed=2026)
    assert stats.cases == 10_000
    assert not stats.escapes, stats.escapes[0]
    assert stats.slowest < 5.0, stats.slowest_case
    assert stats.built > 100 and stats.spec_errors > 5_000  # the mutations reach both outcomes
    assert stats.rss_growth_mb * 2**20 < GUARD + 256 * 2**20
