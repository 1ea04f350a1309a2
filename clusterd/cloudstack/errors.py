"""
Errors of the CloudStack integration.

CloudStack answers an error as ``{"<command>response": {"errorcode": N,
"cserrorcode": M, "errortext": "…"}}`` with HTTP status N.  `error_for_answer`
turns such an answer (or a bare HTTP error from a proxy) into the right class.
Every error carries ``status`` (CloudStack's errorcode, or the HTTP status;
None when there was no answer) and a message naming the command; never the
API key, the secret key or a signature.

Not found: CloudStack has no "not found" code.  An id that names nothing fails
while the API server converts the UUID parameter, with 431 and a text such as
"Unable to execute API command attachvolume due to invalid value. Invalid
parameter id value=… due to incorrect long value format, or entity does not
exist …", or "Unable to find …".  So a 431 whose text says the entity does not
exist, or that something could not be found, is raised as `CloudStackNotFound`,
a subclass of `CloudStackParameterError` (code that catches parameter errors
still catches it).
"""

from __future__ import annotations

import json
import re
from typing import Any

from clusterd.errors import ClusterError

__all__ = [
    "CloudStackError",
    "CloudStackAuthError",
    "CloudStackParameterError",
    "CloudStackNotFound",
    "CloudStackCapacityError",
    "CloudStackResourceInUse",
    "CloudStackInternalError",
    "CloudStackUnavailable",
    "CloudStackJobFailed",
    "CloudStackJobTimeout",
    "error_for_answer",
    "error_for_code",
    "NOT_FOUND_TEXT",
]

#: How much of an error text goes into a message.
MAX_DETAIL = 300

#: 431 texts that mean "no such entity" (see the module docstring).
NOT_FOUND_TEXT = re.compile(
    r"entity does not exist|unable to find|could not find|cannot find|does not exist|not found", re.IGNORECASE
)


def _detail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


class CloudStackError(ClusterError):
    """Root of the CloudStack integration's errors."""

    def __init__(self, message: str, *, status: int | None = None, errortext: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        #: CloudStack's own text, when it gave one.
        self.errortext = errortext


class CloudStackAuthError(CloudStackError):
    """CloudStack refused the credentials or the signature (401), or the account (531)."""


class CloudStackParameterError(CloudStackError):
    """CloudStack rejected a parameter (431, or 430 for a malformed one)."""


class CloudStackNotFound(CloudStackParameterError):
    """The zone, volume, VM or job named does not exist (a 431 saying so)."""


class CloudStackCapacityError(CloudStackError):
    """Insufficient capacity (533) or an account resource limit reached (532)."""


class CloudStackResourceInUse(CloudStackError):
    """The resource is in use (536), e.g. deleting a volume still attached."""


class CloudStackInternalError(CloudStackError):
    """CloudStack failed internally (530, or another CloudStack 53x code)."""


class CloudStackUnavailable(CloudStackError):
    """CloudStack could not be reached, timed out, or a 5xx came without a CloudStack error body."""

    @classmethod
    def timed_out(cls, call: str, timeout: float) -> "CloudStackUnavailable":
        return cls(f"{call}: no answer within {timeout:g}s")

    @classmethod
    def from_failure(cls, call: str, reason: BaseException) -> "CloudStackUnavailable":
        name = type(reason).__name__
        text = str(reason).strip()
        return cls(f"{call}: {name}: {_detail(text)}" if text else f"{call}: {name}")


class CloudStackJobFailed(CloudStackError):
    """An async job ended with jobstatus 2; `jobresultcode` and `errortext` are CloudStack's."""

    def __init__(self, message: str, *, jobid: str, command: str, jobresultcode: int | None, errortext: str) -> None:
        super().__init__(message, status=jobresultcode, errortext=errortext)
        self.jobid = jobid
        self.command = command
        self.jobresultcode = jobresultcode

    @classmethod
    def from_job(cls, command: str, job: dict[str, Any]) -> "CloudStackJobFailed":
        result = job.get("jobresult")
        result = result if isinstance(result, dict) else {}
        code = job.get("jobresultcode") or result.get("errorcode")
        text = str(result.get("errortext") or job.get("errortext") or "no error text")
        jobid = str(job.get("jobid", "?"))
        return cls(
            f"{command}: job {jobid} failed ({code}): {_detail(text)}",
            jobid=jobid,
            command=command,
            jobresultcode=code if isinstance(code, int) else None,
            errortext=text,
        )


class CloudStackJobTimeout(CloudStackError):
    """An async job did not finish within the job timeout; it may still finish later."""

    def __init__(self, message: str, *, jobid: str, command: str, timeout: float) -> None:
        super().__init__(message)
        self.jobid = jobid
        self.command = command
        self.timeout = timeout

    @classmethod
    def after(cls, command: str, jobid: str, timeout: float) -> "CloudStackJobTimeout":
        return cls(f"{command}: job {jobid} not finished within {timeout:g}s", jobid=jobid, command=command, timeout=timeout)


_CLASSES: dict[int, type[CloudStackError]] = {
    401: CloudStackAuthError,
    430: CloudStackParameterError,
    431: CloudStackParameterError,
    531: CloudStackAuthError,
    532: CloudStackCapacityError,
    533: CloudStackCapacityError,
    536: CloudStackResourceInUse,
}


def error_for_code(code: int, call: str, text: str) -> CloudStackError:
    """The error for CloudStack's `code` and `text` in answer to `call`."""
    message = f"{call}: CloudStack error {code}: {_detail(text)}"
    if code in (430, 431) and NOT_FOUND_TEXT.search(text):
        return CloudStackNotFound(message, status=code, errortext=text)
    cls = _CLASSES.get(code)
    if cls is None:
        if 530 <= code <= 539:
            cls = CloudStackInternalError
        elif code >= 500 or code == 429:
            cls = CloudStackUnavailable
        else:
            cls = CloudStackError
    return cls(message, status=code, errortext=text)


def error_for_answer(status: int, call: str, body: bytes) -> CloudStackError:
    """The error for an answer with HTTP `status` (not 2xx) and `body` to `call`."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    inner = None
    if isinstance(data, dict) and len(data) == 1:
        inner = next(iter(data.values()))
    if isinstance(inner, dict) and ("errorcode" in inner or "errortext" in inner):
        code = inner.get("errorcode")
        code = code if isinstance(code, int) and not isinstance(code, bool) else status
        return error_for_code(code, call, str(inner.get("errortext", "")))
    text = body.decode("utf-8", "replace")
    if status >= 500 or status == 429:
        return CloudStackUnavailable(f"{call}: HTTP {status}: {_detail(text)}", status=status)
    if status == 401:
        return CloudStackAuthError(f"{call}: HTTP 401: {_detail(text)}", status=status)
    return CloudStackError(f"{call}: HTTP {status}: {_detail(text)}", status=status)
