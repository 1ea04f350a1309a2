"""What goes wrong in the simulated VIM on purpose (request faults; task failures are the templates' business)."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["Faults", "FAULT_KINDS"]

#: One-shot request faults that `Faults.script` queues, applied to the next API requests in order.
FAULT_KINDS = ("error", "drop", "ok")


def _rate(instance: Any, attribute: "attrs.Attribute[float]", value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be from 0 to 1, not {value!r}")


def _status(instance: Any, attribute: "attrs.Attribute[int]", value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise ValueError(f"{attribute.name} must be an HTTP error status from 400 to 599, not {value!r}")


def _latency(instance: Any, attribute: "attrs.Attribute[float]", value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 600:
        raise ValueError(f"{attribute.name} must be from 0 to 600 seconds, not {value!r}")


def _script(instance: Any, attribute: "attrs.Attribute[list[str]]", value: list[str]) -> None:
    if not isinstance(value, list):
        raise ValueError(f"script must be a list of {', '.join(FAULT_KINDS)}, not {value!r}")
    bad = [kind for kind in value if kind not in FAULT_KINDS]
    if bad:
        raise ValueError(f"script entries must be one of {', '.join(FAULT_KINDS)}, not {bad!r}")


@attrs.define
class Faults:
    """
    Faults to inject into the ``/v1/infrastructures`` and ``/v1/templates``
    API (not ``GET /v1``, not ``/_sim``); change them at any time
    (`VimSimulator.set_faults`, ``POST /_sim/faults``, ``--fault``).

    Every request first waits `latency` seconds.  Then `script` is consulted:
    its first entry is taken off and applied ("error": answer `error_status`
    without doing anything; "drop": close the connection without answering,
    doing nothing; "ok": no fault), so ``script: ["error", "error"]`` fails
    the next two requests.  With the script empty, a fraction `error_rate`
    of requests (drawn from the simulator's seeded generator) answer
    `error_status`.  503 is what the driver treats as temporary.
    """

    error_rate: float = attrs.field(default=0.0, validator=_rate)
    error_status: int = attrs.field(default=503, validator=_status)
    latency: float = attrs.field(default=0.0, validator=_latency)
    script: list[str] = attrs.field(factory=list, validator=_script)

    def to_dict(self) -> dict[str, Any]:
        return {"error_rate": self.error_rate, "error_status": self.error_status, "latency": self.latency, "script": list(self.script)}
