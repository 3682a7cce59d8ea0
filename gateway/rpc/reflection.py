"""gRPC server reflection under both of its names: `grpc.reflection.v1` (what current
grpcurl, Postman and client libraries ask first) and `grpc.reflection.v1alpha` (what older
ones ask). grpcio-reflection serves only v1alpha. The two protocols are the same messages
in another package, so v1 is the same servicer behind a second registration, and its
descriptor (for clients that describe the reflection service itself) is v1alpha's with the
package renamed.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

V1ALPHA = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
V1_NAME = "grpc.reflection.v1.ServerReflection"
NAMES = (V1_NAME, V1ALPHA.full_name)


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """v1alpha's file descriptor, moved to the v1 package."""
    old, new = "grpc.reflection.v1alpha", "grpc.reflection.v1"
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = "grpc/reflection/v1/reflection.proto", new
    proto.options.Clear()  # v1alpha's options name v1alpha's generated packages
    for method in proto.service[0].method:
        method.input_type = method.input_type.replace(f".{old}.", f".{new}.")
        method.output_type = method.output_type.replace(f".{old}.", f".{new}.")
    for message in proto.message_type:
        for field in message.field:
            if field.type_name:  # assigning even "" would mark it set on a scalar
                field.type_name = field.type_name.replace(f".{old}.", f".{new}.")
    return proto


def _v1_descriptor() -> ServiceDescriptor:
    pool = descriptor_pool.Default()
    try:
        found = pool.FindServiceByName(V1_NAME)
    except KeyError:
        pool.Add(_v1_file())
        found = pool.FindServiceByName(V1_NAME)
    return found


V1 = _v1_descriptor()


def enable_reflection(server: grpc.aio.Server, service_names: tuple[str, ...]) -> None:
    """Serves reflection of `service_names` (and of itself) under v1 and v1alpha."""
    servicer = ReflectionServicer((*service_names, *NAMES))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    handler = grpc.method_handlers_generic_handler(V1_NAME, {"ServerReflectionInfo": method})
    server.add_generic_rpc_handlers((handler,))
