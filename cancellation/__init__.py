"""Generated gRPC stubs for the cancellation.v1 contract (`make proto`); never edit by hand."""
