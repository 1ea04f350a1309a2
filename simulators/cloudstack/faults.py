"""What goes wrong in the simulated CloudStack on purpose."""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["Faults", "FAULT_KINDS"]

#: One-shot request faults that `Faults.script` queues, applied to the next API requests in order.
FAULT_KINDS = ("error", "drop", "lose_response", "ok")


def _rate(instance: Any, attribute: "attrs.Attribute[float]", value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be from 0 to 1, not {value!r}")


def _script(instance: Any, attribute: "attrs.Attribute[list[str]]", value: list[str]) -> None:
    bad = [kind for kind in value if kind not in FAULT_KINDS]
    if bad:
        raise ValueError(f"script entries must be one of {', '.join(FAULT_KINDS)}, not {bad!r}")


@attrs.define
class Faults:
    """
    Faults to inject; change them at any time (`CloudStackSimulator.set_faults`).

    Request faults apply to every signed API request (after the signature
    check), drawn from the simulator's seeded random generator: `error_rate`
    answers `error_status` (CloudStack's JSON error shape for 53x codes, a
    plain proxy-style body otherwise); `script` queues one-shot faults:
    "error", "drop" (close the connection without answering, doing nothing),
    "lose_response" (do the work, then close without answering) and "ok".

    Job faults: `fail_jobs` lists command names (``"attachVolume"``, or
    ``"*"`` for any) whose next job fails with `job_error` (each entry is used
    once); `job_failure_rate` fails any job at random; jobs of the commands in
    `stuck_jobs` (``"*"`` for all) never finish.
    """

    error_rate: float = attrs.field(default=0.0, validator=_rate)
    error_status: int = 503
    latency: float = 0.0
    script: list[str] = attrs.field(factory=list, validator=_script)
    fail_jobs: list[str] = attrs.field(factory=list)
    job_failure_rate: float = attrs.field(default=0.0, validator=_rate)
    job_error: tuple[int, str] = (530, "Failed to complete the job (injected fault)")
    stuck_jobs: set[str] = attrs.field(factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "latency": self.latency,
            "script": list(self.script),
            "fail_jobs": list(self.fail_jobs),
            "job_failure_rate": self.job_failure_rate,
            "job_error": list(self.job_error),
            "stuck_jobs": sorted(self.stuck_jobs),
        }

    def take_job_failure(self, command: str, draw: float) -> bool:
        """Whether a new job of `command` fails (consuming a `fail_jobs` entry)."""
        for entry in (command, "*"):
            if entry in self.fail_jobs:
                self.fail_jobs.remove(entry)
                return True
        return bool(self.job_failure_rate) and draw < self.job_failure_rate

    def stuck(self, command: str) -> bool:
        return command in self.stuck_jobs or "*" in self.stuck_jobs
