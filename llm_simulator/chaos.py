"""Chaos run: callers keep StreamChat calls going through a gateway whose upstreams flap (llm_simulator/flapping.py).

`run_chaos` flaps the upstreams and runs `callers` StreamChat loops against the gateway at `target` for
the same `seconds`; each call is kept as a Call (when it started and ended, its attempts, whether it
answered, and whether the answer was whole). `Report` judges the calls against the upstreams' own log:
the share of calls started while some upstream was up that answered, answers that ended `done`
incomplete, requests inside a 429's Retry-After, and the longest time a call waited behind stalls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from llm_simulator.flapping import Flapping
from llmgateway.v1 import chat_service_pb2 as pb
from llmgateway.v1 import chat_service_pb2_grpc

ANSWER = "Hello from the simulator. You said: {}"


@dataclass
class Attempt:
    provider: str
    started: float
    ended: float = 0.0
    outcome: str = ""  # "done", a FailureReason name, or "error" when the call ended on it


@dataclass
class Call:
    caller: int
    started: float
    prompt: str
    ended: float = 0.0
    done: bool = False
    text: str = ""
    code: str = "OK"
    message: str = ""
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def whole(self) -> bool:
        return self.text == ANSWER.format(self.prompt)

    @property
    def stalls(self) -> list[Attempt]:
        """Attempts that ended for want of a first token (or by the call's deadline)."""
        return [a for a in self.attempts if a.outcome in ("FAILURE_REASON_TIMEOUT", "timeout")]

    def stalled_s(self) -> float:
        return sum(a.ended - a.started for a in self.stalls)


async def _one_call(chat: chat_service_pb2_grpc.ChatServiceStub, call: Call, timeout_s: float) -> None:
    request = pb.StreamChatRequest(model="default", messages=[pb.Message(role=pb.ROLE_USER, content=call.prompt)])
    pieces: list[str] = []
    try:
        async for event in chat.StreamChat(request, timeout=timeout_s):
            kind, now = event.WhichOneof("event"), time.monotonic()
            if kind == "started":
                call.attempts.append(Attempt(event.started.provider, now))
            elif kind == "failover":
                call.attempts[-1].ended, call.attempts[-1].outcome = now, pb.FailureReason.Name(event.failover.reason)
            elif kind == "delta":
                pieces.append(event.delta.text)
            elif kind == "done":
                call.done = True
                call.attempts[-1].ended, call.attempts[-1].outcome = now, "done"
    except grpc.aio.AioRpcError as error:
        call.code, call.message = error.code().name, error.details() or ""
        if call.attempts and not call.attempts[-1].outcome:
            call.attempts[-1].ended, call.attempts[-1].outcome = time.monotonic(), _last_outcome(error)
    call.text, call.ended = "".join(pieces), time.monotonic()


def _last_outcome(error: grpc.aio.AioRpcError) -> str:
    """The last attempt's outcome from the status: "timeout" when its ErrorInfo says so, else "error"."""
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            last = info.metadata.get(f"attempt_{info.metadata.get('attempts', '0')}", "")
            return "timeout" if " timeout:" in last else "error"
    return "timeout" if error.code() is grpc.StatusCode.DEADLINE_EXCEEDED else "error"


async def _caller(
    chat: chat_service_pb2_grpc.ChatServiceStub, caller: int, until: float, timeout_s: float, calls: list[Call]
) -> None:
    number = 0
    while time.monotonic() < until:
        number += 1
        call = Call(caller, time.monotonic(), f"caller {caller} call {number}")
        calls.append(call)
        await _one_call(chat, call, timeout_s)


async def run_chaos(
    flapping: Flapping, target: str, *, callers: int = 20, seconds: float = 12.0, timeout_s: float = 10.0
) -> list[Call]:
    """Flap for `seconds` while `callers` loops call StreamChat on the gateway at `target` (host:port)."""
    calls: list[Call] = []
    async with grpc.aio.insecure_channel(target) as channel:
        chat = chat_service_pb2_grpc.ChatServiceStub(channel)
        until = time.monotonic() + seconds
        loops = [_caller(chat, n, until, timeout_s, calls) for n in range(callers)]
        await asyncio.gather(flapping.run(seconds), *loops)
    return calls


@dataclass(frozen=True)
class Report:
    calls: int
    counted: int  # started while some upstream was up (by the upstreams' own log)
    answered: int  # of those, ended `done` with the whole answer
    incomplete: int  # ended `done` with a wrong or partial answer (any call)
    inside_retry_after: list[str]
    longest_stall_wait_s: float
    most_stalls: int  # the most attempts one call waited out for a first token
    failures: dict[str, int]  # code: count, of counted calls that did not answer
    examples: list[str]  # the first few of those, with their attempts (seconds since the first change)

    @property
    def success(self) -> float:
        return self.answered / self.counted if self.counted else 0.0

    def __str__(self) -> str:
        return (
            f"{self.calls} calls, {self.counted} started while an upstream was up, {self.answered} answered "
            f"({self.success:.2%}); {self.incomplete} ended done incomplete; {len(self.inside_retry_after)} "
            f"requests inside a Retry-After; longest wait behind stalls {self.longest_stall_wait_s:.3f}s "
            f"(at most {self.most_stalls} stalled attempts in one call); "
            f"failures {self.failures}" + "".join(f"\n  {e}" for e in self.examples)
        )


def report(flapping: Flapping, calls: Sequence[Call], grace_s: float) -> Report:
    counted = [c for c in calls if flapping.up_at(c.started)]
    failures: dict[str, int] = {}
    for call in counted:
        if not call.done:
            failures[call.code] = failures.get(call.code, 0) + 1
    return Report(
        calls=len(calls),
        counted=len(counted),
        answered=sum(1 for c in counted if c.done and c.whole),
        incomplete=sum(1 for c in calls if c.done and not c.whole),
        inside_retry_after=flapping.inside_retry_after(grace_s),
        longest_stall_wait_s=max((c.stalled_s() for c in calls), default=0.0),
        most_stalls=max((len(c.stalls) for c in calls), default=0),
        failures=failures,
        examples=[_describe(c, flapping.log[0].at) for c in counted if not c.done][:5],
    )


def _describe(call: Call, start: float) -> str:
    tried = ", ".join(f"{a.provider} {a.started - start:.3f}-{a.ended - start:.3f} {a.outcome}" for a in call.attempts)
    return f"{call.prompt} at {call.started - start:.3f}: {call.code} {call.message[:400]} [{tried}]"


def per_second(calls: Sequence[Call], start: float, seconds: int) -> list[tuple[int, int]]:
    """(calls started, of them answered whole) for each second since `start`."""
    buckets = [(0, 0)] * seconds
    for call in calls:
        second = int(call.started - start)
        if 0 <= second < seconds:
            started, ok = buckets[second]
            buckets[second] = (started + 1, ok + (call.done and call.whole))
    return buckets
