"""A local upstream that speaks the OpenAI, Anthropic, Gemini and Cohere wire formats and injects faults.

One HTTP/1.1 server (plain asyncio, no framework) answers:

    POST /v1/chat/completions                                OpenAI Chat Completions (stream or not)
    POST /v1/messages                                        Anthropic Messages (stream or not)
    POST /v1beta/models/{model}:streamGenerateContent?alt=sse   Gemini, streaming
    POST /v1beta/models/{model}:generateContent              Gemini, one response
    POST /v2/chat                                            Cohere v2 chat (stream or not)

Any API key is accepted. Streams replay each provider's documented sequence, one
word per chunk: OpenAI's role chunk, deltas, finish_reason chunk, usage chunk with
empty `choices` (when `stream_options.include_usage` is set) and `data: [DONE]`;
Anthropic's message_start, content_block_start, ping, content_block_delta,
content_block_stop, message_delta, message_stop; Gemini's `alt=sse` chunks with
usageMetadata and a final finishReason; Cohere's message-start, content-start/-delta/-end,
tool-plan-delta, tool-call-start/-delta/-end and message-end with finish_reason and usage.

Run it:  python -m llm_simulator --port 8089 [--chunk-delay-ms 30]   (30 ms between words by default)
Point a provider at it:  base_url: http://127.0.0.1:8089/v1   (openai, openai_compatible)
                         base_url: http://127.0.0.1:8089      (anthropic, cohere; gemini with api_version v1beta)

What the model answers (deterministic, so tests can assert exact output)
-----------------------------------------------------------------------
Markers in the LAST USER MESSAGE steer it (they are stripped from the echo):
    (none)                       "Hello from the simulator. You said: <your text>"
    [[reply:Some exact text]]    that text instead
    [[think:Some reasoning]]     reasoning first (OpenAI-compatible `reasoning_content`, Anthropic
                                 thinking block with a signature, Gemini `thought` parts)
    [[redacted:OPAQUE]]          Anthropic only: a redacted_thinking block carrying OPAQUE
    [[call:get_weather {"city": "Paris"}]]   a tool call (several markers: parallel calls);
                                 ignored when the last message is a tool result, which is answered
                                 with "The tool answered: <result>"
max_tokens cuts the answer (finish "length"), stop sequences cut it at the sequence, JSON
output wraps it as {"answer": "..."}, and an Anthropic assistant prefill is continued.

Faults
------
Ask for a fault with a marker  [[fault:KIND key=value ...]]  in the last user message, or
queue one on the server (the next matching requests get it):
    curl -XPOST localhost:8089/_sim/faults -d '{"fault": "429 retry_after=2", "times": 1}'
Options on any fault: api=openai|anthropic|gemini|cohere and model=NAME restrict it to one wire
format / model (so the same conversation fails on one provider and succeeds on the next).

  before the stream (HTTP error status, each provider's own error body):
    429 retry_after=S retry_after_ms=MS   rate limited; headers Retry-After / retry-after-ms
                                 (Gemini: google.rpc.RetryInfo.retryDelay in the body instead)
    quota                        OpenAI 429 insufficient_quota; Anthropic 400 "credit balance is too
                                 low"; Gemini 429 "prepayment credits are depleted", no RetryInfo;
                                 Cohere 429 "Trial key ... 1000 API calls / month"
    401 | 403                    auth failure (401 echoes the key sent, as some upstreams do;
                                 Gemini answers 400 API_KEY_INVALID like the real API); OpenAI's 401
                                 takes echo=raw|urlencoded|base64|basic|masked|reversed|spaced|upper|hex
    400                          invalid request
    context                      context length exceeded, worded as each provider does
    529 | overloaded             Anthropic 529 overloaded_error; 503 elsewhere
    500, 502, 503, 504, any 4xx/5xx    that status with the provider's error body
  in the stream (after HTTP 200), before content chunk number `at` (default 0):
    slow ms=M                    first content chunk only after M ms
    stall at=N [ms=M]            stop sending (until the client leaves, or M ms then drop it)
    disconnect at=N              drop the TCP connection mid-body
    truncate at=N                end the body cleanly with no finish reason (and no [DONE])
    ... at=99 final=K            any stream fault after all content and the first K closing events
                                 (OpenAI finish chunk, usage, [DONE]; Anthropic message_delta, message_stop)
    malformed at=N               send an unparseable chunk, then end
    error at=N [type=T]          an in-stream error: Anthropic `event: error` (type, default
                                 overloaded_error), OpenAI `data: {"error":...}`, Gemini error chunk,
                                 Cohere message-end with finish_reason ERROR
    filter                       half the answer, then a content-filter finish
                                 (content_filter / refusal / SAFETY; Cohere v2 has none: COMPLETE)

Rate limits
-----------
`--rate-limit "requests=3 window=60 model=gpt-4o-mini-3rpm"` (repeatable; or POST /_sim/ratelimits
'{"limits": ["requests=3 window=60"]}') enforces a limit per wire format, model and key, states what is
left in each provider's own headers (OpenAI/Groq `x-ratelimit-*`, Anthropic `anthropic-ratelimit-*`) and
refuses a request past it with 429 and `retry-after` (Gemini: RetryInfo). llm_simulator/ratelimit.py.

Observations
------------
Every request is recorded (api, model, fault, status, content chunks sent, outcome:
completed | answered | error | aborted | truncated | stalled | malformed | client_disconnected,
and whether the client hung up mid-stream). In tests use `handle.simulator.observations` and
`await handle.simulator.wait_for_requests(n)`, then `await obs.done.wait()`; from a shell:
    curl localhost:8089/_sim/requests          curl -XPOST localhost:8089/_sim/reset

Try it with grpcurl through the gateway, no keys needed. A config pointing two providers here:
    providers:
      - {name: sim-gemini, type: gemini, base_url: "http://127.0.0.1:8090", api_version: v1beta,
         api_key_env: SIM_KEY, models: [{name: gemini-2.0-flash, context_window: 1000000}]}
      - {name: sim-openai, type: openai, base_url: "http://127.0.0.1:8090/v1",
         api_key_env: SIM_KEY, models: [{name: gpt-4o-mini, context_window: 128000}]}
    routes: {default: [sim-gemini/gemini-2.0-flash, sim-openai/gpt-4o-mini]}
then
    gateway-service simulate --port 8090 &
    SIM_KEY=sim gateway-service serve --config sim.yaml &
    grpcurl -plaintext -d '{"model": "default", "messages": [{"role": "ROLE_USER",
      "content": "hi [[fault:429 retry_after=5 api=gemini]]"}]}' \\
      localhost:50051 llmgateway.v1.ChatService/StreamChat
shows started (sim-gemini), failover (RATE_LIMITED), started (sim-openai), one delta per word,
usage and done; for the next 5 s the gateway skips sim-gemini (its cooldown). After that, with
[[fault:disconnect at=2 api=gemini]] instead, two words arrive and the stream ends with
UNAVAILABLE (the default mid-stream policy); curl localhost:8090/_sim/requests shows what each
upstream call saw.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llm_simulator.httpserver import serve_connection
from llm_simulator.ratelimit import parse_limit
from llm_simulator.server import Observation, Simulator

__all__ = ["Observation", "Simulator", "SimulatorHandle", "main", "start_simulator"]


@dataclass
class SimulatorHandle:
    """A running simulator server."""

    simulator: Simulator
    server: asyncio.Server
    host: str
    port: int
    connections: dict[asyncio.StreamWriter, asyncio.Task[None]]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        self.server.close()
        # Python 3.11's Server.close() leaves accepted connections open; a stalled stream would hang.
        for writer, task in list(self.connections.items()):
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*self.connections.values(), return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.server.wait_closed(), 1.0)


async def start_simulator(
    host: str = "127.0.0.1", port: int = 0, *, chunk_delay_s: float = 0.0, rate_limits: Sequence[str] = ()
) -> SimulatorHandle:
    """Start a simulator on host:port (0 picks a free port), enforcing `rate_limits` (ratelimit.py specs)."""
    simulator = Simulator(chunk_delay_s)
    simulator.set_rate_limits([parse_limit(spec) for spec in rate_limits])
    connections: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections[writer] = task
        try:
            await serve_connection(reader, writer, simulator.handle)
        except asyncio.CancelledError:
            # Only close() cancels these; asyncio.streams would log a cancelled callback task as an error.
            pass
        finally:
            connections.pop(writer, None)

    server = await asyncio.start_server(on_connect, host, port, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    return SimulatorHandle(simulator, server, host, bound, connections)


def main(argv: Sequence[str] | None = None, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> int:
    """`python -m llm_simulator --port N`: serve until interrupted (on uvloop when `__main__` passes it)."""
    parser = argparse.ArgumentParser(prog="python -m llm_simulator", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8089, help="port to listen on, 0 picks a free one (default 8089)")
    parser.add_argument("--chunk-delay-ms", type=float, default=30.0, help="pause between words (default 30)")
    parser.add_argument(
        "--rate-limit",
        action="append",
        default=[],
        metavar="SPEC",
        help='a rate limit to enforce and state in headers, e.g. "requests=3 window=60 model=M" (repeatable)',
    )
    args = parser.parse_args(argv)
    for spec in args.rate_limit:
        try:
            parse_limit(spec)
        except ValueError as exc:
            parser.error(str(exc))
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(args.host, args.port, args.chunk_delay_ms / 1000, args.rate_limit))
    return 0


async def _serve(host: str, port: int, chunk_delay_s: float, rate_limits: Sequence[str]) -> None:
    handle = await start_simulator(host, port, chunk_delay_s=chunk_delay_s, rate_limits=rate_limits)
    print(f"simulator listening on {handle.base_url}", file=sys.stderr, flush=True)
    await handle.server.serve_forever()
