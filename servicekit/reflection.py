"""Server reflection that serves the contracts' comments, under both reflection protocols.

Tools speak either `grpc.reflection.v1alpha` (grpcurl up to 1.8.7) or `grpc.reflection.v1` (newer
grpcurl, `buf curl`, Postman). v1 is v1alpha under a new package name, message for message and field
for field, so one servicer answers both (`add_reflection`); grpcio-reflection ships only v1alpha.

The generated `_pb2` modules carry descriptors without comments, and the stock reflection
servicer rebuilds file descriptors from them (`CopyToProto` drops source info), so
`grpcurl describe` would show bare fields. The contracts package ships, per proto package,
a `descriptor_set.binpb` built with source info; files found there are served as built.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

DESCRIPTOR_SET = "descriptor_set.binpb"
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"


def v1_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc.reflection.v1's descriptor: v1alpha's, renamed (so `describe` works for v1 too)."""
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    old, new = f".{file.package}.", ".grpc.reflection.v1."
    file.name, file.package = V1_FILE, "grpc.reflection.v1"
    file.ClearField("options")
    for message in file.message_type:
        for field in message.field:
            if field.type_name:  # assigning "" would mark it set on a scalar field
                field.type_name = field.type_name.replace(old, new)
    for method in file.service[0].method:
        method.input_type = method.input_type.replace(old, new)
        method.output_type = method.output_type.replace(old, new)
    return file


def add_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Reflection for `service_names` (plus both reflection services), on v1alpha and v1."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.Add(v1_file())
    servicer = CommentedReflectionServicer((*service_names, reflection.SERVICE_NAME, V1_SERVICE))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": v1}),))


def commented_files(service_names: tuple[str, ...]) -> dict[str, bytes]:
    """Serialized FileDescriptorProtos with comments, by file name, for the services' packages."""
    files: dict[str, bytes] = {}
    for package in {name.rsplit(".", 1)[0] for name in service_names}:
        try:
            data = (resources.files(package) / DESCRIPTOR_SET).read_bytes()
        except (ModuleNotFoundError, FileNotFoundError):
            continue
        for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
            files.setdefault(file.name, file.SerializeToString())
    return files


class CommentedReflectionServicer(reflection.aio.ReflectionServicer):
    """The stock asyncio reflection servicer, answering file requests with commented descriptors."""

    def __init__(self, service_names: tuple[str, ...]) -> None:
        super().__init__(service_names)
        self._commented = commented_files(service_names)

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        return self._with_comments(super()._file_by_filename(request, filename))

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        return self._with_comments(super()._file_containing_symbol(request, fully_qualified_name))

    def _with_comments(self, response: reflection_pb2.ServerReflectionResponse) -> Any:
        if not response.HasField("file_descriptor_response"):
            return response
        protos = response.file_descriptor_response.file_descriptor_proto
        for i, serialized in enumerate(protos):
            name = descriptor_pb2.FileDescriptorProto.FromString(serialized).name
            if name in self._commented:
                protos[i] = self._commented[name]
        return response
