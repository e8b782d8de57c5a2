"""What the simulated model answers: a Plan built from the normalised prompt and its markers.

The answer is deterministic so tests can assert exact events: the text of a
`[[reply:...]]` marker, else "Hello from the simulator. You said: <prompt>"; a
`[[think:...]]` marker adds reasoning before it, as does a request that asks for
reasoning ("Thinking about: <prompt>" without a marker) unless it turned reasoning
off; `[[call:NAME {json}]]` markers make the model call tools instead. Text is
split into words, one chunk each.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from llm_simulator.faults import MARKER, Fault, parse_fault, strip_markers

_WORDS = re.compile(r"\s*\S+")


@dataclass
class Prompt:
    """What the simulator needs from any wire format's request."""

    api: str
    model: str
    stream: bool
    messages: list[tuple[str, str]]  # (role, text) with roles system/user/assistant/tool
    tool_names: list[str] = field(default_factory=list)
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    json_mode: bool = False
    include_usage: bool = False
    thinking: bool | None = None  # the request asked for reasoning, turned it off, or said nothing (None)
    show_reasoning: bool = True  # False: reasoning is spent and counted in usage, its text not sent
    rejection: str = ""  # what the real API says when it refuses the request's reasoning parameters (HTTP 400)

    @property
    def last_user(self) -> str:
        return next((text for role, text in reversed(self.messages) if role == "user"), "")

    @property
    def last_role(self) -> str:
        return self.messages[-1][0] if self.messages else ""


@dataclass(frozen=True)
class PlannedCall:
    id: str
    name: str
    arguments_json: str


@dataclass
class Plan:
    reasoning: list[str]
    text: list[str]
    calls: list[PlannedCall]
    finish: str  # stop | length | tool_calls | content_filter
    input_tokens: int
    output_tokens: int
    fault: Fault | None = None
    redacted: list[str] = field(default_factory=list)  # Anthropic redacted_thinking blocks


def markers(text: str, name: str) -> list[str]:
    return [body.strip() for kind, body in MARKER.findall(text) if kind == name]


def marker_fault(prompt: Prompt) -> Fault | None:
    """The request's own rejection, else the first fault marker in the last user message that targets this api
    and model."""
    if prompt.rejection:
        return Fault("invalid", 400)
    for spec in markers(prompt.last_user, "fault"):
        fault = parse_fault(spec)
        if fault.applies_to(prompt.api, prompt.model):
            return fault
    return None


def make_plan(prompt: Prompt, fault: Fault | None) -> Plan:
    user = prompt.last_user
    calls = _calls(user) if prompt.last_role == "user" else []
    text = _reply_text(prompt, calls)
    words = _WORDS.findall(text)
    finish = "tool_calls" if calls else "stop"
    if prompt.max_tokens is not None and len(words) > prompt.max_tokens:
        words, finish = words[: prompt.max_tokens], "length"
    if fault is not None and fault.kind == "filter":
        words, calls, finish = words[: len(words) // 2], [], "content_filter"
    reasoning = _reasoning(prompt)
    input_tokens = sum(len(_WORDS.findall(t)) for _, t in prompt.messages)
    output = len(words) + len(reasoning) + sum(len(c.arguments_json) // 4 + 1 for c in calls)
    return Plan(reasoning, words, calls, finish, input_tokens, output, fault, markers(user, "redacted"))


def _reasoning(prompt: Prompt) -> list[str]:
    if prompt.thinking is False:
        return []
    specs = markers(prompt.last_user, "think")
    if not specs and prompt.thinking:
        specs = [f"Thinking about: {strip_markers(prompt.last_user)}"]
    return [w for spec in specs for w in _WORDS.findall(spec)]


def _reply_text(prompt: Prompt, calls: list[PlannedCall]) -> str:
    if prompt.last_role == "tool":
        text = f"The tool answered: {prompt.messages[-1][1]}"
    else:
        replies = markers(prompt.last_user, "reply")
        if replies:
            text = replies[0]
        elif calls:
            return ""
        else:
            text = f"Hello from the simulator. You said: {strip_markers(prompt.last_user)}"
    text = _cut_at_stop(text, prompt.stop)
    if prompt.json_mode:
        text = json.dumps({"answer": text})
    if prompt.last_role == "assistant":
        # Assistant prefill: continue the answer after the part the caller already has.
        prefix = prompt.messages[-1][1]
        text = text[len(prefix) :] if text.startswith(prefix) else text
    return text


def _cut_at_stop(text: str, stop: list[str]) -> str:
    cuts = [text.index(s) for s in stop if s and s in text]
    return text[: min(cuts)] if cuts else text


def _calls(user: str) -> list[PlannedCall]:
    calls = []
    for n, spec in enumerate(markers(user, "call")):
        name, _, args = spec.partition(" ")
        arguments = json.dumps(json.loads(args)) if args.strip() else "{}"
        calls.append(PlannedCall(f"call_{n}_{name}", name, arguments))
    return calls


def split_json(arguments: str, pieces: int = 3) -> list[str]:
    """Arguments JSON in a few fragments, the way providers stream them."""
    size = max(1, -(-len(arguments) // pieces))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]
