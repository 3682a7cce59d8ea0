"""The composition root's one list: the upstreams this build serves, a line each. A new
upstream is its package under `adapters/` and one line here (docs/ADDING_AN_UPSTREAM.md)."""

from __future__ import annotations

from importlib import import_module

from gateway.registry import Registry

INSTALLED = (
    "kiiex",
    "zuora",
)
REGISTRY = Registry(import_module(f"adapters.{name}").UPSTREAM for name in INSTALLED)
