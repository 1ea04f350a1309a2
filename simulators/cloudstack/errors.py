"""
The simulator's error answers, in CloudStack's shape.

CloudStack answers ``{"<command>response": {"uuidList": [], "errorcode": N,
"cserrorcode": M, "errortext": "…"}}`` with HTTP status N.  The codes are
CloudStack's ApiErrorCode values.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "UNAUTHORIZED",
    "MALFORMED_PARAMETER",
    "PARAM_ERROR",
    "UNSUPPORTED_ACTION",
    "INTERNAL_ERROR",
    "ACCOUNT_RESOURCE_LIMIT",
    "INSUFFICIENT_CAPACITY",
    "RESOURCE_IN_USE",
    "CS_ERROR_CODES",
]

UNAUTHORIZED = 401
MALFORMED_PARAMETER = 430
PARAM_ERROR = 431
UNSUPPORTED_ACTION = 432
INTERNAL_ERROR = 530
ACCOUNT_RESOURCE_LIMIT = 532
INSUFFICIENT_CAPACITY = 533
RESOURCE_IN_USE = 536

#: CloudStack's cserrorcode (the Java exception class) for each errorcode.
CS_ERROR_CODES = {
    401: 9999,
    430: 9999,
    431: 4350,  # InvalidParameterValueException
    432: 9999,
    530: 4250,  # CloudRuntimeException
    532: 4370,  # ResourceAllocationException
    533: 4310,  # InsufficientCapacityException
    536: 4380,  # ResourceInUseException
}


class ApiError(Exception):
    """An error CloudStack answers with `errorcode` (also the HTTP status)."""

    def __init__(self, errorcode: int, errortext: str) -> None:
        super().__init__(errortext)
        self.errorcode = errorcode
        self.errortext = errortext

    def to_json(self) -> dict[str, object]:
        return {
            "uuidList": [],
            "errorcode": self.errorcode,
            "cserrorcode": CS_ERROR_CODES.get(self.errorcode, 9999),
            "errortext": self.errortext,
        }

    @classmethod
    def unauthorized(cls) -> "ApiError":
        return cls(UNAUTHORIZED, "unable to verify user credentials and/or request signature")

    @classmethod
    def missing(cls, command: str, name: str) -> "ApiError":
        return cls(PARAM_ERROR, f"Unable to execute API command {command.lower()} due to missing parameter {name}")

    @classmethod
    def no_entity(cls, command: str, name: str, value: str) -> "ApiError":
        """What CloudStack says for an id that names nothing (it fails converting the UUID)."""
        return cls(
            PARAM_ERROR,
            f"Unable to execute API command {command.lower()} due to invalid value. Invalid parameter {name} "
            f"value={value} due to incorrect long value format, or entity does not exist or due to incorrect "
            "parameter annotation for the field in api cmd class.",
        )

    @classmethod
    def invalid(cls, text: str) -> "ApiError":
        return cls(PARAM_ERROR, text)

    @classmethod
    def unknown_command(cls) -> "ApiError":
        return cls(UNSUPPORTED_ACTION, "The given command does not exist or it is not available for the user")
