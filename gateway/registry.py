"""The registered upstreams and their job kinds, and what is derived from them.

Built by the composition root from the adapter modules' `Upstream` records; everything that
varies by job kind (proto conversion, CLI subcommands, sandbox examples, start-up metric
series, the code tables in docs/STATUS_CODES.md) reads it from here instead of naming the kinds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.jobs import JobKind
from gateway.schema import Section
from gateway.upstream import Upstream


class Registry:
    def __init__(self, upstreams: Iterable[Upstream]) -> None:
        self.upstreams: Mapping[str, Upstream] = {u.name: u for u in upstreams}
        kinds = [kind for u in self.upstreams.values() for kind in u.jobs]
        self.job_kinds: Mapping[str, type[JobKind]] = {k.proto_field: k for k in kinds}
        if len(self.job_kinds) != len(kinds):
            raise ValueError("two job kinds claim the same proto field")

    @property
    def option_schemas(self) -> Mapping[str, type[Section]]:
        return {name: u.options for name, u in self.upstreams.items()}

    def code_tables_markdown(self) -> str:
        """The normalization reference (docs/STATUS_CODES.md): a side-by-side summary, then
        each table."""
        tables = {name: u.codes for name, u in self.upstreams.items()}
        verdicts = sorted(
            {
                (v.outcome, v.reason, v.retryable)
                for codes in tables.values()
                for v in codes.values()
            },
            key=lambda v: (v[0].value, v[1].value, v[2]),
        )
        lines = [
            "| outcome | reason | retryable | " + " | ".join(tables) + " |",
            "|---|---|---|" + "---|" * len(tables),
        ]
        for outcome, reason, retryable in verdicts:
            cells = [
                ", ".join(
                    f"`{code}`"
                    for code, v in codes.items()
                    if (v.outcome, v.reason, v.retryable) == (outcome, reason, retryable)
                )
                for codes in tables.values()
            ]
            lines.append(
                f"| {outcome.name} | {reason.name} | {_yes(retryable)} | "
                + " | ".join(cells)
                + " |"
            )
        for name, codes in tables.items():
            lines += ["", f"**{name}**", "", "| signal | meaning | outcome | reason | retryable |"]
            lines.append("|---|---|---|---|---|")
            lines += [
                f"| `{code}` | {v.meaning} | {v.outcome.name} | {v.reason.name} | "
                f"{_yes(v.retryable)} |"
                for code, v in codes.items()
            ]
        return "\n".join(lines) + "\n"

    def secret_fields_markdown(self) -> str:
        """The body fields each upstream declares as credentials (docs/SECURITY.md)."""
        lines = ["| upstream | body fields redacted by name (any case) |", "|---|---|"]
        lines += [
            f"| {name} | {', '.join(f'`{f}`' for f in sorted(u.secret_fields))} |"
            for name, u in self.upstreams.items()
        ]
        return "\n".join(lines) + "\n"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"
