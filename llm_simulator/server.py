"""The simulator's request handling: route, pick a fault, answer or stream, record what happened."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import llm_simulator.wire_anthropic as wire_anthropic
import llm_simulator.wire_cohere as wire_cohere
import llm_simulator.wire_gemini as wire_gemini
import llm_simulator.wire_openai as wire_openai
from llm_simulator.faults import Fault, FaultSpecError, parse_fault
from llm_simulator.httpserver import Request, Responder
from llm_simulator.plan import Plan, Prompt, make_plan, marker_fault
from llm_simulator.ratelimit import Limit, RateLimiter, Verdict, parse_limit
from llm_simulator.wire import Frame, Wire


@dataclass
class Observation:
    """What the simulator saw and did for one request; tests assert on these."""

    api: str
    path: str
    model: str
    headers: dict[str, str]
    body: dict[str, Any]
    fault: str = ""
    status: int = 200
    chunks_sent: int = 0
    outcome: str = "pending"  # answered | completed | aborted | truncated | stalled | client_disconnected | error
    client_disconnected: bool = False
    received_at: float = field(default_factory=time.monotonic)  # when the request was read (monotonic s)
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def to_json(self) -> dict[str, Any]:
        keys = ("api", "path", "model", "fault", "status", "chunks_sent", "outcome", "client_disconnected")
        return {k: getattr(self, k) for k in keys}


@dataclass
class ScriptedFault:
    fault: Fault
    remaining: int  # -1: forever


class Simulator:
    """State of one simulator server: scripted faults, pacing and observations."""

    def __init__(self, chunk_delay_s: float = 0.0) -> None:
        self.chunk_delay_s = chunk_delay_s
        self.observations: list[Observation] = []
        self._script: list[ScriptedFault] = []
        self._standing: Fault | None = None
        self._ids = itertools.count(1)
        self._new_request = asyncio.Condition()
        self.rate_limiter = RateLimiter()

    def set_rate_limits(self, limits: list[Limit]) -> None:
        """Enforce `limits` (llm_simulator/ratelimit.py) from now on, each window empty; []: none."""
        self.rate_limiter.set(limits)

    def set_standing_fault(self, spec: str | None) -> None:
        """Give every request `spec` (after markers and queued faults) until changed; None: none."""
        self._standing = parse_fault(spec) if spec else None

    def push_fault(self, spec: str, times: int = 1) -> None:
        """Inject `spec` (same syntax as a marker) into the next `times` matching requests (-1: all)."""
        self._script.append(ScriptedFault(parse_fault(spec), times))

    def clear(self) -> None:
        self._script.clear()
        self.observations.clear()

    async def wait_for_requests(self, count: int) -> list[Observation]:
        """Wait until at least `count` requests arrived."""
        async with self._new_request:
            await self._new_request.wait_for(lambda: len(self.observations) >= count)
        return self.observations[:count]

    async def handle(self, request: Request, out: Responder) -> None:
        if request.path.startswith("/_sim/"):
            await self._control(request, out)
            return
        route = _route(request)
        if route is None:
            await out.send_json(404, {"error": {"message": f"no such endpoint {request.method} {request.path}"}})
            return
        wire, model, stream = route
        try:
            body = request.json()
        except ValueError:
            await out.send_json(400, {"error": {"message": "request body is not JSON"}})
            return
        await self._answer(wire, model, stream, request, body, out)

    async def _answer(
        self,
        wire: Wire,
        model: str,
        stream: bool | None,
        request: Request,
        body: dict[str, Any],
        out: Responder,
    ) -> None:
        prompt: Prompt = wire.parse(body, model, stream)
        obs = Observation(prompt.api, request.path, prompt.model, request.headers, body)
        await self._record(obs)
        try:
            fault = marker_fault(prompt) or self._scripted(prompt) or self._standing
        except FaultSpecError as exc:
            obs.status, obs.outcome = 400, "error"
            await out.send_json(400, {"error": {"message": str(exc)}})
            obs.done.set()
            return
        obs.fault = fault.kind if fault else ""
        try:
            await self._respond(wire, prompt, make_plan(prompt, fault), request, out, obs)
        finally:
            obs.client_disconnected = out.gone.is_set()
            if obs.client_disconnected and obs.outcome in ("pending", "stalled"):
                obs.outcome = "client_disconnected"
            obs.done.set()

    async def _respond(
        self, wire: Wire, prompt: Prompt, plan: Plan, request: Request, out: Responder, obs: Observation
    ) -> None:
        request_id = f"req_sim{next(self._ids):06d}"
        limited = self.rate_limiter.check(prompt, _api_key(request))
        headers = {**limited.headers, wire.REQUEST_ID_HEADER: request_id}
        if limited.retry_after_s is not None:
            obs.fault = "rate_limit"
            obs.status, obs.outcome = await self._refuse(wire, limited, prompt, request, headers, out)
            return
        fault = plan.fault
        if fault is not None and fault.kind not in ("slow", "filter") and not fault.in_stream:
            obs.status, obs.outcome = await self._error(wire, fault, prompt, request, request_id, out)
            return
        if not prompt.stream:
            if fault is not None and fault.kind == "slow":
                await asyncio.sleep((fault.ms or 0) / 1000)
            await out.send_json(200, wire.complete(plan, prompt, request_id), headers)
            obs.outcome = "answered"
            return
        await out.start_stream(headers)
        await self._stream(wire, wire.frames(plan, prompt, request_id), fault, out, obs)

    async def _error(
        self, wire: Wire, fault: Fault, prompt: Prompt, request: Request, request_id: str, out: Responder
    ) -> tuple[int, str]:
        status, body, headers = wire.error(fault, prompt, _api_key(request))
        await out.send_json(status, body, {**headers, wire.REQUEST_ID_HEADER: request_id})
        return status, "error"

    async def _refuse(
        self, wire: Wire, limited: Verdict, prompt: Prompt, request: Request, headers: dict[str, str], out: Responder
    ) -> tuple[int, str]:
        """A request past a rate limit: 429 in the provider's own form, saying when to come back."""
        assert limited.retry_after_s is not None
        fault = parse_fault(f"429 retry_after={max(1, math.ceil(limited.retry_after_s))}")
        status, body, error_headers = wire.error(fault, prompt, _api_key(request))
        await out.send_json(status, body, {**error_headers, **headers})
        return status, "error"

    async def _stream(
        self, wire: Wire, frames: list[Frame], fault: Fault | None, out: Responder, obs: Observation
    ) -> None:
        finals = 0
        for frame in frames:
            if fault is not None and _fault_due(fault, frame, obs.chunks_sent, finals):
                await self._stream_fault(wire, fault, out, obs)
                return
            await self._pace(frame, fault, out, first=obs.chunks_sent == 0 and finals == 0)
            if out.gone.is_set():
                obs.outcome = "client_disconnected"
                return
            await out.send_chunk(frame.data)
            obs.chunks_sent += frame.kind == "content"
            finals += frame.kind == "final"
        await out.end_stream()
        obs.outcome = "completed"

    async def _pace(self, frame: Frame, fault: Fault | None, out: Responder, *, first: bool) -> None:
        if frame.kind == "pre":
            return
        if first and fault is not None and fault.kind == "slow":
            await _sleep_unless_gone(out, (fault.ms or 0) / 1000)
        elif frame.kind == "content" and self.chunk_delay_s:
            await _sleep_unless_gone(out, self.chunk_delay_s)

    async def _stream_fault(self, wire: Wire, fault: Fault, out: Responder, obs: Observation) -> None:
        if fault.kind == "disconnect":
            out.abort()
            obs.outcome = "aborted"
        elif fault.kind == "stall":
            obs.outcome = "stalled"
            await _sleep_unless_gone(out, None if fault.ms is None else fault.ms / 1000)
            if not out.gone.is_set():
                out.abort()
        elif fault.kind == "truncate":
            await out.end_stream()
            obs.outcome = "truncated"
        else:
            await out.send_chunk(wire.malformed() if fault.kind == "malformed" else wire.stream_error(fault))
            await out.end_stream()
            obs.outcome = fault.kind

    def _scripted(self, prompt: Prompt) -> Fault | None:
        for entry in self._script:
            if entry.fault.applies_to(prompt.api, prompt.model):
                if entry.remaining > 0:
                    entry.remaining -= 1
                    if entry.remaining == 0:
                        self._script.remove(entry)
                return entry.fault
        return None

    async def _record(self, obs: Observation) -> None:
        async with self._new_request:
            self.observations.append(obs)
            self._new_request.notify_all()

    async def _control(self, request: Request, out: Responder) -> None:
        if request.path == "/_sim/requests" and request.method == "GET":
            await out.send_json(200, {"requests": [o.to_json() for o in self.observations]})
        elif request.path == "/_sim/faults" and request.method == "POST":
            spec = request.json()
            try:
                self.push_fault(str(spec.get("fault", "")), int(spec.get("times", 1)))
            except (FaultSpecError, ValueError) as exc:
                await out.send_json(400, {"error": {"message": str(exc)}})
                return
            await out.send_json(200, {"queued": len(self._script)})
        elif request.path == "/_sim/ratelimits" and request.method == "POST":
            try:
                self.set_rate_limits([parse_limit(str(spec)) for spec in request.json().get("limits", [])])
            except (FaultSpecError, ValueError, AttributeError) as exc:
                await out.send_json(400, {"error": {"message": str(exc)}})
                return
            await out.send_json(200, {"limits": len(self.rate_limiter.limits)})
        elif request.path == "/_sim/reset" and request.method == "POST":
            self.clear()
            await out.send_json(200, {})
        else:
            await out.send_json(404, {"error": {"message": f"no such control endpoint {request.path}"}})


def _route(request: Request) -> tuple[Wire, str, bool | None] | None:
    """(wire module, model from the path or "", stream flag from the path or None)."""
    if request.method != "POST":
        return None
    if request.path.endswith("/chat/completions"):
        return wire_openai, "", None
    if request.path.endswith("/messages"):
        return wire_anthropic, "", None
    if request.path.endswith("/v2/chat"):
        return wire_cohere, "", None
    if "/models/" in request.path and ":" in request.path:
        model, _, method = request.path.split("/models/", 1)[1].partition(":")
        if method in ("streamGenerateContent", "generateContent"):
            return wire_gemini, model, method == "streamGenerateContent"
    return None


def _api_key(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return (
        auth.removeprefix("Bearer ")
        or request.headers.get("x-api-key", "")
        or request.headers.get("x-goog-api-key", request.query.get("key", ""))
    )


def _fault_due(fault: Fault, frame: Frame, content_sent: int, finals_sent: int) -> bool:
    """A stream fault fires before content chunk number `at`, or before the closing events when the answer
    is shorter (after the first `final` of them)."""
    if not fault.in_stream or frame.kind == "pre":
        return False
    return (frame.kind == "final" or content_sent >= fault.at) and finals_sent >= fault.final


async def _sleep_unless_gone(out: Responder, seconds: float | None) -> None:
    try:
        await asyncio.wait_for(out.gone.wait(), seconds)
    except TimeoutError:
        pass
