"""Property-based fuzzing of every RPC of both servers (Health and reflection included) with random bytes, mutated
messages and well-formed adversarial ones: never UNKNOWN or INTERNAL, no Python exception name or traceback text in
any message or detail, trailers within 4 KiB, and both servers alive afterwards.

Bounded for the suite (FUZZ_EXAMPLES examples per method, default 12; methods whose request has no fields get a
quarter of that, at least 3, there being little to vary). A longer run:

    FUZZ_EXAMPLES=500 .venv/bin/pytest tests/hostile/test_fuzz.py
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from google.protobuf import descriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schema_service.database import with_database
from tests.hostile.servers import MAX_TRAILER_BYTES, Outcome, Served, gateway, raw_call, schema_service
from tests.hostile.strategies import payloads

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
pytestmark = pytest.mark.timeout(max(120, EXAMPLES * 20))
FORBIDDEN_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
PYTHON_TEXT = re.compile(
    r"Traceback|File \"|\b(Decode|Recursion|Overflow|Value|Type|Key|Attribute|Assertion|Index|UnicodeDecode|"
    r"UnicodeEncode|Runtime|ZeroDivision|NotImplemented)Error\b"
)
GATEWAY_METHODS = ["StreamChat", "Chat", "Check", "Watch", "ServerReflectionInfo"]
SCHEMA_METHODS = [
    "Migrate",
    "WaitForVersion",
    "WriteMetrics",
    "StreamMetrics",
    "QueryMetrics",
    "ListBaselines",
    "ListAnomalies",
    "Check",
    "Watch",
    "ServerReflectionInfo",
]
# Requests without fields: only unknown fields and broken bytes to vary, so fewer examples.
FIELDLESS = [
    ("gateway", "ListProviders"),
    ("gateway", "WatchProviders"),
    ("schema", "GetStatus"),
    ("schema", "VerifySchema"),
    ("schema", "LintMigrations"),
]
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
FEW = settings(FUZZ, max_examples=max(3, EXAMPLES // 4))


@pytest.fixture(scope="module")
async def gateway_served() -> AsyncIterator[Served]:
    async with gateway() as served:
        yield served


@pytest.fixture(scope="module")
async def schema_served(pg_admin_dsn: str, migrated_template: str) -> AsyncIterator[Served]:
    name = f"fuzz_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"')
        async with schema_service(with_database(pg_admin_dsn, name)) as served:
            yield served
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def check(method: descriptor.MethodDescriptor, outcome: Outcome) -> None:
    where = f"{method.full_name}: {outcome.code.name} {outcome.message!r}"
    assert outcome.code not in FORBIDDEN_CODES, where
    assert not PYTHON_TEXT.search(outcome.message), where
    if outcome.status is not None:
        details = outcome.status.SerializeToString().decode("utf-8", "replace")
        assert not PYTHON_TEXT.search(details), f"{where} details {details!r}"
    assert outcome.trailer_bytes <= MAX_TRAILER_BYTES, where


async def fuzz_one(served: Served, name: str, data: st.DataObject) -> None:
    method = next(m for m in served.methods() if m.name == name)
    payload = data.draw(payloads(method.input_type), label="payload")
    repeat = data.draw(st.integers(1, 2)) if method.client_streaming else 1
    # Watch-like streams hold until the deadline when the request is valid; that is a fine answer.
    timeout = 0.5 if method.server_streaming else 5.0
    check(method, await raw_call(served.channel, method, [payload] * repeat, timeout=timeout))


@pytest.mark.parametrize("name", GATEWAY_METHODS)
@FUZZ
@given(data=st.data())
async def test_fuzz_gateway(gateway_served: Served, name: str, data: st.DataObject) -> None:
    await fuzz_one(gateway_served, name, data)


@pytest.mark.parametrize("name", SCHEMA_METHODS)
@FUZZ
@given(data=st.data())
async def test_fuzz_schema_service(schema_served: Served, name: str, data: st.DataObject) -> None:
    await fuzz_one(schema_served, name, data)


@pytest.mark.parametrize(("server", "name"), FIELDLESS)
@FEW
@given(data=st.data())
async def test_fuzz_fieldless_requests(
    gateway_served: Served, schema_served: Served, server: str, name: str, data: st.DataObject
) -> None:
    await fuzz_one(gateway_served if server == "gateway" else schema_served, name, data)


async def _serving(served: Served) -> bool:
    response = await health_pb2_grpc.HealthStub(served.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


async def test_both_servers_are_alive_after_the_fuzzing(gateway_served: Served, schema_served: Served) -> None:
    assert await _serving(gateway_served) and await _serving(schema_served)
