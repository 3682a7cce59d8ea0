"""2,000 calls under a quarter of the upstream answers going wrong (see `tests/chaos.py`):
every call classified, every envelope truthful, none lost, no crash, no traceback.
`make chaos` runs the same with 10,000 calls."""

from __future__ import annotations

import json

from tests.chaos import run


async def test_chaos_every_call_classified_and_truthful() -> None:
    result = await run(2000, concurrency=16)
    print("\nchaos:", json.dumps(result))
    assert result["untrue_examples"] == []
    assert (result["classified_pct"], result["truthful_pct"], result["lost"]) == (100, 100, 0)
    assert (result["crashes"], result["tracebacks"]) == (0, 0)
    drawn = result["faults_drawn"]
    assert {"late ", "delay ", "garbage ", "rate_limited ", "expired session"} <= drawn.keys()
    assert sum(result["resets"].values()) > 0
    # The mix reaches every answer the gateway can give a caller here.
    seen = {outcome.split()[0] for outcome in result["outcomes"]}
    assert {"ACCEPTED", "CANCELED", "FAILED", "UNKNOWN"} <= seen
