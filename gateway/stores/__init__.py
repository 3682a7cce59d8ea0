"""Idempotency stores: `memory` (one process) and `redis` (shared by replicas), both behind
`gateway.idempotency.IdempotencyStore`. The composition root picks one from the config."""
