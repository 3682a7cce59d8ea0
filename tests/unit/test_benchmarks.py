"""`make bench`'s in-process stage still runs on the code as it is: a benchmark that no
longer starts is caught here, not at the next measurement (its figures are not judged)."""

from __future__ import annotations

from benchmarks.inprocess import measure


async def test_the_in_process_benchmark_runs() -> None:
    figures = await measure(20)
    assert set(figures) >= {"gateway_us_per_call"}
    assert figures["gateway_us_per_call"] > 0
