"""How far an operation's volume data has come, for ``--wait`` (pure): bytes done of the total, the
throughput over the last half minute, and the time left at that rate."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from davit.api.objects import RawObject

#: Throughput is measured over this much of the recent past: long enough to smooth the steps in which
#: node agents report bytes, short enough to follow a change of pace.
WINDOW_SECONDS = 30.0


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def volume_bytes(obj: RawObject) -> tuple[int, int]:
    """(bytes done, bytes in total) over the operation's volumes; (0, 0) while it lists none."""
    volumes = [v for v in (obj.get("status") or {}).get("volumes") or [] if isinstance(v, dict)]
    done = sum(_count(v.get("bytesDone")) for v in volumes)
    total = sum(_count(v.get("totalSize")) for v in volumes)
    return done, max(total, done)


@dataclass
class Progress:
    """Samples of bytes done over time; ``rate`` and ``eta`` from the ones in the window."""

    samples: deque[tuple[float, int]] = field(default_factory=deque)
    done: int = 0
    total: int = 0

    def add(self, at: float, obj: RawObject) -> None:
        self.done, self.total = volume_bytes(obj)
        if self.samples and self.done < self.samples[-1][1]:
            self.samples.clear()  # a volume started over (a retry): the old pace no longer applies
        self.samples.append((at, self.done))
        while len(self.samples) > 2 and at - self.samples[0][0] > WINDOW_SECONDS:
            self.samples.popleft()

    def rate(self) -> float | None:
        """Bytes per second over the window; None before two samples a moment apart."""
        if len(self.samples) < 2:
            return None
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else None

    def eta(self) -> float | None:
        """Seconds left at the current rate; None when nothing is moving or the total is unknown."""
        rate = self.rate()
        if not rate or rate <= 0 or self.total <= 0:
            return None
        return max(0.0, (self.total - self.done) / rate)
