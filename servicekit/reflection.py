"""Server reflection that serves the contracts' comments.

The generated `_pb2` modules carry descriptors without comments, and the stock reflection
servicer rebuilds file descriptors from them (`CopyToProto` drops source info), so
`grpcurl describe` would show bare fields. The contracts package ships, per proto package,
a `descriptor_set.binpb` built with source info; files found there are served as built.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

DESCRIPTOR_SET = "descriptor_set.binpb"


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
