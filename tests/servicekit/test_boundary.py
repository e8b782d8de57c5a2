"""The one servicer error boundary (servicekit.boundary), on a real grpc.aio server over a real channel."""

from __future__ import annotations

import ast
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status

from servicekit.boundary import ErrorBoundary
from servicekit.errors import ServiceError

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(20)


class Refused(ServiceError):
    code = code_pb2.FAILED_PRECONDITION
    reason = "REFUSED"
    domain = "test"


@contextlib.contextmanager
def translate_key_errors(method: str) -> Iterator[None]:
    try:
        yield
    except KeyError as exc:
        raise Refused(f"{method}: no such key {exc}") from exc


BOUNDARY = ErrorBoundary("test", translate=translate_key_errors)
FAILURES: dict[str, BaseException] = {
    "domain": Refused("not now"),
    "bug": RuntimeError("password=hunter2"),
    "translated": KeyError("k"),
}


async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    async with BOUNDARY(context, "Unary"):
        raise FAILURES[request.decode()]
    return b""  # pragma: no cover - the boundary always ends the call here


async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    async with BOUNDARY(context, "Stream"):
        yield b"first"
        raise FAILURES[request.decode()]


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Boundary", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    await server.stop(None)


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


async def call(channel: grpc.aio.Channel, method: str, failure: str) -> tuple[list[bytes], grpc.aio.AioRpcError]:
    received: list[bytes] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if method == "Unary":
            await channel.unary_unary("/test.Boundary/Unary")(failure.encode())
        else:
            async for item in channel.unary_stream("/test.Boundary/Stream")(failure.encode()):
                received.append(item)
    return received, caught.value


@pytest.mark.parametrize("method", ["Unary", "Stream"])
async def test_a_service_error_leaves_as_its_status_with_details(channel: grpc.aio.Channel, method: str) -> None:
    _, error = await call(channel, method, "domain")
    assert (error.code(), error.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "not now")
    assert (error_info(error).reason, error_info(error).domain) == ("REFUSED", "test")


@pytest.mark.parametrize("method", ["Unary", "Stream"])
async def test_a_bug_is_internal_logged_and_its_text_kept_out_of_the_answer(
    channel: grpc.aio.Channel, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="servicekit.boundary"):
        received, error = await call(channel, method, "bug")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in (error.details() or "") and "RuntimeError" in (error.details() or "")
    assert (error_info(error).reason, error_info(error).domain) == ("INTERNAL", "test")
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [RuntimeError]
    assert received == ([b"first"] if method == "Stream" else [])


async def test_translate_maps_a_library_failure_first(channel: grpc.aio.Channel) -> None:
    _, error = await call(channel, "Unary", "translated")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(error).reason == "REFUSED"


def aborts(path: Path) -> list[str]:
    """Calls of `abort(...)` or `context.abort(...)` in a module: only the boundary may end a call."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func: Any = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name == "abort":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_servicers_end_calls_only_through_the_boundary() -> None:
    servicers = sorted((ROOT / "gateway_service" / "api").glob("*.py")) + sorted(
        (ROOT / "schema_service" / "api").glob("*.py")
    )
    assert servicers and [hit for path in servicers for hit in aborts(path)] == []
    assert aborts(ROOT / "servicekit" / "boundary.py") != []  # the check sees an abort where there is one
