"""
The HPC User API simulator's state and HTTP semantics, without twisted.web.

Two endpoints, as CSCS's HPC User API and its OIDC provider serve them:

- ``POST /oauth2/token``: OAuth2 client credentials (``grant_type``,
  ``client_id``, ``client_secret`` and optional ``scope`` in a form body, or
  the client in HTTP Basic auth) → ``{"access_token", "token_type",
  "expires_in", "scope"}``;
- ``GET /api/v1/export/waldur/projects?projects=a&projects=b`` with
  ``Authorization: Bearer <token>`` → ``{"projects": [{"posixName",
  "unixGid", ...}]}`` for the projects it knows (all of them without
  ``projects``).

Tokens expire on the injected clock.  With `auto_assign` every project
name that is not in `missing` gets a deterministic GID, so the simulator
pairs with any Waldur data set.
"""

from __future__ import annotations

import base64
import json
import secrets
import zlib
from typing import Any, Mapping, Sequence
from urllib.parse import parse_qs

import attrs
from twisted.internet.interfaces import IReactorTime

from simulators.waldur.state import FaultPlan, SimResponse

__all__ = ["HpcUserSimulator", "TOKEN_PATH", "PROJECTS_PATH", "auto_gid"]

TOKEN_PATH = "/oauth2/token"
PROJECTS_PATH = "/api/v1/export/waldur/projects"


def auto_gid(name: str) -> int:
    """The GID the simulator gives project `name` when assigning automatically."""
    return 50000 + zlib.crc32(name.encode("utf-8")) % 40000


def _json(status: int, body: Any, extra: tuple[tuple[str, str], ...] = ()) -> SimResponse:
    return SimResponse(status, (("Content-Type", "application/json"), *extra), json.dumps(body).encode())


@attrs.define(eq=False)
class HpcUserSimulator:
    clock: IReactorTime
    client_id: str = "outpost"
    client_secret: str = attrs.field(default="hpc-sim-secret", repr=False)
    #: ``expires_in`` of the tokens issued, in seconds.
    token_lifetime: int = 3600
    gids: dict[str, int] = attrs.field(factory=dict)
    missing: set[str] = attrs.field(factory=set)
    auto_assign: bool = True
    faults: FaultPlan = attrs.field(factory=FaultPlan)
    token_requests: int = 0
    project_requests: int = 0
    #: Project names asked for, request by request (while `record_requests`).
    asked: list[list[str]] = attrs.field(factory=list)
    record_requests: bool = True
    listeners: list[Any] = attrs.field(factory=list)
    _tokens: dict[str, float] = attrs.field(factory=dict, repr=False)

    def fail_next(self, *outcomes: int | str) -> None:
        self.faults.queue.extend(outcomes)

    def expire_tokens(self) -> None:
        """Revoke every token issued so far (clients must fetch a new one)."""
        self._tokens.clear()

    def gid_of(self, name: str) -> int | None:
        if name in self.missing:
            return None
        if name in self.gids:
            return self.gids[name]
        return auto_gid(name) if self.auto_assign else None

    def handle(self, method: str, path: str, query: Mapping[str, Sequence[str]], headers: Mapping[str, str], body: bytes) -> SimResponse:
        if path == TOKEN_PATH:
            if method != "POST":
                return _json(405, {"error": "invalid_request", "error_description": "use POST"})
            return self._token(headers, body)
        if path == PROJECTS_PATH:
            if method != "GET":
                return _json(405, {"detail": "Method not allowed"})
            return self._projects(query, headers)
        return _json(404, {"detail": "Not Found"})

    def _token(self, headers: Mapping[str, str], body: bytes) -> SimResponse:
        self.token_requests += 1
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, client_secret = base64.b64decode(credentials).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return _json(401, {"error": "invalid_client"})
        if form.get("grant_type") != "client_credentials":
            return _json(400, {"error": "unsupported_grant_type"})
        if client_id != self.client_id or client_secret != self.client_secret:
            return _json(401, {"error": "invalid_client", "error_description": "Invalid client credentials"})
        token = secrets.token_urlsafe(24)
        self._tokens[token] = self.clock.seconds() + self.token_lifetime
        answer = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "scope": form.get("scope", "openid"),
        }
        return _json(200, answer, (("Cache-Control", "no-store"),))

    def _projects(self, query: Mapping[str, Sequence[str]], headers: Mapping[str, str]) -> SimResponse:
        self.project_requests += 1
        scheme, _, token = headers.get("authorization", "").partition(" ")
        expiry = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expiry is None or expiry <= self.clock.seconds():
            return _json(401, {"detail": "Invalid or expired token"}, (("WWW-Authenticate", 'Bearer error="invalid_token"'),))
        names = list(query.get("projects", []))
        if self.record_requests:
            self.asked.append(names)
        if not names:
            names = sorted(self.gids)
        found = []
        for name in dict.fromkeys(names):
            gid = self.gid_of(name)
            if gid is not None:
                found.append({"posixName": name, "unixGid": gid, "name": name.replace("-", " ").title(), "status": "active"})
        return _json(200, {"projects": found})
