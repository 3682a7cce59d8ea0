"""The upstream registry. A new upstream is one module plus its entry in `_REGISTERED`."""

from __future__ import annotations

from collections.abc import Mapping

from adapters import kiiex, zuora
from adapters.base import Upstream
from gateway.config import OptionsParser

_REGISTERED = (kiiex.UPSTREAM, zuora.UPSTREAM)

UPSTREAMS: Mapping[str, Upstream] = {upstream.name: upstream for upstream in _REGISTERED}

OPTION_PARSERS: Mapping[str, OptionsParser] = {
    name: upstream.parse_options for name, upstream in UPSTREAMS.items()
}

SUPPORTED_JOBS: frozenset[type] = frozenset(job for u in UPSTREAMS.values() for job in u.jobs)


def code_tables_markdown() -> str:
    """The normalization reference for the README: a side-by-side summary, then each table."""
    verdicts = sorted(
        {(v.outcome, v.reason, v.retryable) for u in UPSTREAMS.values() for v in u.codes.values()},
        key=lambda v: (v[0].value, v[1].value, v[2]),
    )
    names = list(UPSTREAMS)
    lines = [
        "| outcome | reason | retryable | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for outcome, reason, retryable in verdicts:
        cells = [
            ", ".join(
                f"`{code}`"
                for code, v in UPSTREAMS[name].codes.items()
                if (v.outcome, v.reason, v.retryable) == (outcome, reason, retryable)
            )
            for name in names
        ]
        lines.append(
            f"| {outcome.name} | {reason.name} | {'yes' if retryable else 'no'} | "
            + " | ".join(cells)
            + " |"
        )
    for name, upstream in UPSTREAMS.items():
        lines += ["", f"**{name}**", "", "| signal | meaning | outcome | reason | retryable |"]
        lines.append("|---|---|---|---|---|")
        lines += [
            f"| `{code}` | {v.meaning} | {v.outcome.name} | {v.reason.name} | "
            f"{'yes' if v.retryable else 'no'} |"
            for code, v in upstream.codes.items()
        ]
    return "\n".join(lines) + "\n"
