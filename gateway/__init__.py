"""The cancellation gateway: one gRPC call, three upstreams, one result envelope."""

from importlib import metadata

NAME = "cancellation-gateway"


def _version() -> str:
    try:
        return metadata.version(NAME)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


VERSION = _version()
