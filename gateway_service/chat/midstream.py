"""What the caller already holds of the answer, and what a failure after output may still do with it.

Output flows to the caller as it arrives, so an attempt can fail after some of it was sent. The
request's mid-stream policy decides what happens then:

    FAIL       the call ends with MidStreamFailure (UNAVAILABLE), saying how many deltas were sent
    RESTART    the next candidate starts over; FailedOver tells the caller to discard what it holds
    CONTINUE   the next candidate continues from the text sent so far, given as an assistant prefill;
               refused (MidStreamFailure) once tool-call deltas were sent, which a prefill cannot carry

Whatever the policy, output that was delivered and never retracted must not pass for a whole answer:
when no candidate is left to take over, the run ends with MidStreamFailure too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from gateway_service.chat.attempt import Piece
from gateway_service.chat.outcome import attempts_metadata
from gateway_service.domain.events import AttemptRecord, OutputDelta
from gateway_service.domain.request import ChatRequest, Message, MidStreamPolicy, Role, TextDelta, ToolCallDelta
from gateway_service.errors import MidStreamFailure


@dataclass
class Delivered:
    """The output sent to the caller: every piece counted, and the current answer's text and tool calls."""

    policy: MidStreamPolicy
    sequence: int = 0  # pieces sent across all attempts (OutputDelta.sequence)
    pieces: int = 0  # pieces the caller holds of the current answer (reset by RESTART)
    text: list[str] = field(default_factory=list)  # the current answer's text, CONTINUE's prefill
    tool_calls: bool = False  # tool-call deltas are in the current answer
    prefill: bool = False  # the next candidate must continue the answer (CONTINUE after output)

    def deliver(self, piece: Piece) -> OutputDelta:
        self.sequence += 1
        self.pieces += 1
        if isinstance(piece, TextDelta):
            self.text.append(piece.text)
        elif isinstance(piece, ToolCallDelta):
            self.tool_calls = True
        return OutputDelta(self.sequence, piece)

    def after_failure(self, failed: AttemptRecord, records: Sequence[AttemptRecord]) -> bool:
        """Apply the policy to a failed attempt; True when the caller must discard what it holds (RESTART).

        Raises MidStreamFailure when the policy cannot go on (FAIL, or CONTINUE after tool calls).
        """
        if not self.pieces:
            return False
        if self.policy is MidStreamPolicy.FAIL:
            raise self.failure(failed, records)
        if self.policy is MidStreamPolicy.CONTINUE and self.tool_calls:
            raise self.failure(failed, records, "CONTINUE refused after tool-call deltas")
        if self.policy is MidStreamPolicy.CONTINUE:
            self.prefill = True
            return False
        self.text.clear()
        self.tool_calls = False
        self.pieces = 0
        return True

    def check_retracted(self, failed: AttemptRecord, discard: bool, records: Sequence[AttemptRecord]) -> None:
        """No candidate is left: output delivered and never retracted must not pass for a whole answer."""
        if self.pieces or discard:
            raise self.failure(failed, records, f"no candidate left to {self.policy.value} the answer")

    def next_request(self, request: ChatRequest) -> ChatRequest:
        """The request for the next candidate: with the answer so far as a prefill under CONTINUE."""
        if not self.prefill or not self.text:
            return request
        # Anthropic refuses a final assistant turn ending in whitespace; the answer resumes after it.
        prefill = "".join(self.text).rstrip()
        return replace(request, messages=(*request.messages, Message(Role.ASSISTANT, content=prefill)))

    def failure(self, failed: AttemptRecord, records: Sequence[AttemptRecord], why: str = "") -> MidStreamFailure:
        """UNAVAILABLE after output was sent: says what was delivered, so it can never pass for complete."""
        metadata = {
            **attempts_metadata(records),
            "provider": failed.provider,
            "model": failed.model,
            "delivered_deltas": str(self.sequence),
            "policy": self.policy.name,
        }
        outcome = failed.outcome.value if failed.outcome else "unknown"
        policy = f"mid-stream policy {self.policy.name}" + (f": {why}" if why else "")
        # What happened to the answer first: the provider's own message can be long, and details are capped.
        return MidStreamFailure(
            f"{failed.provider}/{failed.model} failed after {self.sequence} deltas were sent; {policy}; "
            f"the answer is incomplete ({outcome}: {failed.message})",
            metadata=metadata,
        )
