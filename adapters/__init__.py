"""The adapters, one module per upstream. Registering a new upstream is one line here."""

from __future__ import annotations

from adapters import kiiex, zuora
from gateway.registry import Registry

REGISTRY = Registry((kiiex.UPSTREAM, zuora.UPSTREAM))
