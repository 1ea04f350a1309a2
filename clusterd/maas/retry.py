"""How the MAAS client retries: jittered exponential backoff, honouring Retry-After."""

from __future__ import annotations

from typing import Callable

import attrs

__all__ = ["RetryPolicy", "RETRY_STATUSES", "UNKNOWN_OUTCOME_STATUSES"]

#: Answers after which a call is tried again.
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: Of those, the ones a proxy gives when MAAS may have acted anyway (a POST's outcome is unknown).
UNKNOWN_OUTCOME_STATUSES = frozenset({502, 504})
#: Never wait longer than this for a Retry-After, whatever the server says.
MAX_RETRY_AFTER = 300.0


def _check_attempts(instance: "RetryPolicy", attribute: "attrs.Attribute[int]", value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"attempts must be a whole number of at least 1, not {value!r}")


def _check_seconds(instance: "RetryPolicy", attribute: "attrs.Attribute[float]", value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{attribute.name} must be a number of seconds, at least 0, not {value!r}")


@attrs.frozen
class RetryPolicy:
    """
    `attempts` tries in all (1: never retry); before try n+1 wait a random
    time up to ``min(cap, base * 2**(n-1))`` ("full jitter"), or the server's
    Retry-After when it gave one (capped at 300 s).
    """

    attempts: int = attrs.field(default=4, validator=_check_attempts)
    base: float = attrs.field(default=0.5, validator=_check_seconds)
    cap: float = attrs.field(default=30.0, validator=_check_seconds)

    def delay(self, failures: int, rng: Callable[[], float], retry_after: float | None = None) -> float:
        """Seconds to wait after the `failures`-th failed try (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        ceiling = min(self.cap, self.base * 2.0 ** min(failures - 1, 62))
        return ceiling * rng()


def parse_retry_after(value: bytes | str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds; None for none or an HTTP date."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 and seconds == seconds else None
