"""The docs' reference material is rendered from the code, not a copy that drifts."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.app.cli import RENDERED, rendered

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("page", ["STATUS_CODES.md", "CONFIGURATION.md", "SECURITY.md"])
def test_the_reference_blocks_are_rendered_from_the_code(page: str) -> None:
    text = (DOCS / page).read_text()
    assert any(begin in text for begin, _ in RENDERED), page
    assert rendered(text) == text, f"docs/{page} is stale: run make docs"


def test_every_key_of_the_file_is_in_the_configuration_reference() -> None:
    text = (DOCS / "CONFIGURATION.md").read_text()
    for key in ("server.shutdown_grace_seconds", "retry.max_attempts", "breaker.reset_seconds",
                "idempotency.redis_url_env", "tracing.sample_ratio", "token_sha256",
                "password_env", "client_secret_env", "data_center"):  # fmt: skip
        assert f"`{key}`" in text, key
