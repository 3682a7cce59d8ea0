"""The gRPC edge: the servicer (protobuf <-> typed objects), interceptors, reflection and
the gRPC server's own settings."""
