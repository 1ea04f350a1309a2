"""How long the simulated MAAS takes, and what goes wrong on purpose."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["Durations", "Faults", "FAULT_KINDS"]

#: One-shot faults that `Faults.script` queues, applied to the next API requests in order.
FAULT_KINDS = ("error", "drop", "lose_response", "ok")


@attrs.define
class Durations:
    """Seconds each change takes on the simulator's clock."""

    commissioning: float = 30.0
    testing: float = 10.0
    deploying: float = 60.0
    releasing: float = 5.0
    disk_erasing: float = 20.0
    power: float = 3.0
    #: A soft power-off asks the OS first, so it takes longer.
    soft_power_off: float = 10.0

    @classmethod
    def fast(cls) -> "Durations":
        """Short durations for demos and tests on a real clock."""
        return cls(0.3, 0.1, 0.5, 0.2, 0.3, 0.1, 0.2)


def _rate(instance: Any, attribute: "attrs.Attribute[float]", value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be from 0 to 1, not {value!r}")


@attrs.define
class Faults:
    """
    Faults to inject; change them at any time (`MAASSimulator.set_faults`).

    Rates apply to every authenticated API request (not ``describe/``,
    ``version/`` or ``/_sim/``), drawn from the simulator's seeded random
    generator.  `script` queues one-shot faults for the next requests, in
    order: "error" (answer `error_status`), "drop" (close the connection
    without answering), "lose_response" (do the work, then close the
    connection without answering: a POST whose outcome the client cannot
    know) and "ok" (no fault).
    """

    error_rate: float = attrs.field(default=0.0, validator=_rate)
    error_status: int = 503
    #: Sent as Retry-After (seconds) with injected errors; None for no header.
    retry_after: float | None = None
    #: Seconds added before every API answer.
    latency: float = 0.0
    drop_rate: float = attrs.field(default=0.0, validator=_rate)
    lose_response_rate: float = attrs.field(default=0.0, validator=_rate)
    #: Machines whose BMC does not answer: power actions do nothing and their power state becomes "error".
    bmc_failures: set[str] = attrs.field(factory=set)
    #: ``{(system_id, action)}``: the next commission/deploy/release of that machine fails.
    failing_actions: set[tuple[str, str]] = attrs.field(factory=set)
    #: Any commission/deploy/release fails with this probability.
    action_failure_rate: float = attrs.field(default=0.0, validator=_rate)
    script: list[str] = attrs.field(factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "retry_after": self.retry_after,
            "latency": self.latency,
            "drop_rate": self.drop_rate,
            "lose_response_rate": self.lose_response_rate,
            "bmc_failures": sorted(self.bmc_failures),
            "failing_actions": sorted([list(a) for a in self.failing_actions]),
            "action_failure_rate": self.action_failure_rate,
            "script": list(self.script),
        }
