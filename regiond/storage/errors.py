"""
Errors of the storage resources integration.

`StorageError` is the root; it derives from `regiond.errors.RegionError`
so the region's boundaries treat it as a known failure.  Messages name
URLs and statuses, never tokens or client secrets.
"""

from __future__ import annotations

from regiond.errors import RegionError

__all__ = ["StorageError", "UpstreamError", "UpstreamTimeout", "WaldurError", "WaldurTimeout", "HpcUserApiError", "HpcUserApiTimeout"]


class StorageError(RegionError):
    """The root of every error the storage integration raises on purpose."""


class UpstreamError(StorageError):
    """An upstream HTTP API (Waldur, the HPC User API) failed or answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @classmethod
    def from_status(cls, what: str, method: str, url: str, status: int) -> UpstreamError:
        return cls(f"{what} answered HTTP {status} to {method} {url}", status)

    @classmethod
    def unreachable(cls, what: str, method: str, url: str, reason: str) -> UpstreamError:
        return cls(f"{what} unreachable for {method} {url}: {reason}")

    @classmethod
    def bad_body(cls, what: str, method: str, url: str, reason: str) -> UpstreamError:
        return cls(f"{what} sent an unusable answer to {method} {url}: {reason}")


class UpstreamTimeout(UpstreamError):
    """An upstream API did not answer within the configured timeout (after retries)."""

    @classmethod
    def after(cls, what: str, method: str, url: str, seconds: float) -> UpstreamTimeout:
        return cls(f"{what} did not answer {method} {url} within {seconds:g}s")


class WaldurError(UpstreamError):
    """Waldur failed; the storage resources API answers 502 (504 for `WaldurTimeout`)."""


class WaldurTimeout(WaldurError, UpstreamTimeout):
    pass


class HpcUserApiError(UpstreamError):
    """The HPC User API or its token endpoint failed (the GID lookup falls back or skips)."""


class HpcUserApiTimeout(HpcUserApiError, UpstreamTimeout):
    pass
