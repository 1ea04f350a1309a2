"""
How the CloudStack client retries calls and polls async jobs.

`RetryPolicy` is the cluster's jittered exponential backoff (shared with the
MAAS client).  `PollPolicy` spaces ``queryAsyncJobResult`` calls: `initial`
seconds before the first poll, then each wait `factor` times the last, at most
`cap`.
"""

from __future__ import annotations

from typing import Iterator

import attrs

from clusterd.maas.retry import RetryPolicy

__all__ = ["RetryPolicy", "PollPolicy", "RETRY_STATUSES"]

#: HTTP answers (without a CloudStack error body) after which an idempotent call is tried again.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


def _positive(instance: "PollPolicy", attribute: "attrs.Attribute[float]", value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{attribute.name} must be a number above 0, not {value!r}")


@attrs.frozen
class PollPolicy:
    initial: float = attrs.field(default=0.5, validator=_positive)
    factor: float = attrs.field(default=2.0, validator=_positive)
    cap: float = attrs.field(default=5.0, validator=_positive)

    def delays(self) -> Iterator[float]:
        """The waits before each poll, forever: 0.5, 1, 2, 4, 5, 5, …"""
        delay = min(self.initial, self.cap)
        while True:
            yield delay
            delay = min(self.cap, delay * self.factor)
