"""The README's normalization reference is the adapters' tables, not a copy that drifts."""

from __future__ import annotations

from pathlib import Path

from gateway.cli import with_code_tables

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_code_tables_match_the_adapters() -> None:
    text = README.read_text()
    assert with_code_tables(text) == text, "the README's tables are stale: run make readme"
