"""An in-memory Dispatch: what was sent, to which queue, in order."""

from __future__ import annotations

from dataclasses import dataclass, field

from davit.operations.messages import Message


@dataclass
class FakeDispatch:
    sent: list[tuple[str, Message]] = field(default_factory=list)

    def send(self, message: Message, queue: str) -> None:
        self.sent.append((queue, message))

    def to(self, queue: str) -> list[Message]:
        """The messages sent to ``queue``."""
        return [message for sent_to, message in self.sent if sent_to == queue]

    def clear(self) -> None:
        self.sent.clear()
