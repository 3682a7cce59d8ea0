"""The cancellation gateway: one gRPC call, three upstreams, one result envelope."""

NAME = "cancellation-gateway"
