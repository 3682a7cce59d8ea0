"""The edges that speak to upstreams: one package per upstream (`adapters.<name>`), the
shared HTTP edge (`adapters.http`), the simulators' shared parts (`adapters.simulation`) and
the list of installed upstreams (`adapters.installed`). Importing this package imports none
of them."""
