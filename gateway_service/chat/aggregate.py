"""Folds a run's events into one answer, for the unary Chat call."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway_service.domain.events import AttemptUsage, Completed, FailedOver, GatewayEvent, OutputDelta
from gateway_service.domain.request import Message, Reasoning, ReasoningDelta, Role, TextDelta, ToolCall


@dataclass
class _Call:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class Answer:
    """The assistant message being assembled; a discarding failover starts it over."""

    text: list[str] = field(default_factory=list)
    reasoning: list[Reasoning] = field(default_factory=list)
    open_reasoning: list[str] = field(default_factory=list)
    calls: dict[int, _Call] = field(default_factory=dict)
    usages: list[AttemptUsage] = field(default_factory=list)
    completed: Completed | None = None

    def add(self, event: GatewayEvent) -> None:
        if isinstance(event, OutputDelta):
            self._piece(event)
        elif isinstance(event, FailedOver) and event.discard_output:
            for part in (self.text, self.reasoning, self.open_reasoning):
                part.clear()
            self.calls.clear()
        elif isinstance(event, AttemptUsage):
            self.usages.append(event)
        elif isinstance(event, Completed):
            self.completed = event

    def _piece(self, event: OutputDelta) -> None:
        piece = event.piece
        if isinstance(piece, TextDelta):
            self.text.append(piece.text)
        elif isinstance(piece, ReasoningDelta):
            self.open_reasoning.append(piece.text)
            if piece.signature or piece.redacted_data:
                self.reasoning.append(Reasoning("".join(self.open_reasoning), piece.signature, piece.redacted_data))
                self.open_reasoning.clear()
        else:
            call = self.calls.setdefault(piece.index, _Call())
            call.id = call.id or piece.id
            call.name = call.name or piece.name
            call.arguments.append(piece.arguments_json)

    def message(self) -> Message:
        reasoning = list(self.reasoning)
        if self.open_reasoning:
            reasoning.append(Reasoning("".join(self.open_reasoning)))
        calls = tuple(ToolCall(c.id, c.name, "".join(c.arguments) or "{}") for _, c in sorted(self.calls.items()))
        return Message(Role.ASSISTANT, "".join(self.text), calls, reasoning=tuple(reasoning))
