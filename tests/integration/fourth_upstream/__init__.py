"""A throwaway fourth upstream, "ticketing", registered only by the test that proves a new
upstream needs a proto oneof member, one job class, one adapter module, one simulator and
one registration line, and no edit to the servicer, the CLI or the sandbox."""
