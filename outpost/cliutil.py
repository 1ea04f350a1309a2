"""
What every ``outpost`` subcommand shares: exit codes, the one blocking HTTP
call into the reactor (through crochet), finding the token, and output as
tables or ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from pathlib import Path
from typing import Any, Sequence, cast

import crochet

__all__ = [
    "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_NOT_FOUND", "EXIT_UNAVAILABLE", "EXIT_AUTH", "DEFAULT_URL", "TOKEN_FILE",
    "HTTP_TIMEOUT", "CommandError", "http_request", "region_dsn", "find_token", "api", "table", "emit",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_AUTH = 0, 1, 2, 3, 4, 5
DEFAULT_URL = "http://127.0.0.1:5240/"
TOKEN_FILE = Path("~/.config/outpost/token")
HTTP_TIMEOUT = 30.0


class CommandError(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


_STATUS_EXIT = {401: EXIT_AUTH, 403: EXIT_AUTH, 404: EXIT_NOT_FOUND, 503: EXIT_UNAVAILABLE, 504: EXIT_UNAVAILABLE}


# -- the blocking boundary -------------------------------------------------


@crochet.wait_for(timeout=HTTP_TIMEOUT + 5)
def http_request(method: str, url: str, token: str | None, body: Any = None) -> Any:
    """(status, parsed JSON body) of one request to the region."""
    import treq

    async def go() -> tuple[int, Any]:
        headers = {"Accept": ["application/json"]}
        if token:
            headers["Authorization"] = [f"Bearer {token}"]
        kwargs: dict[str, Any] = {"headers": headers, "timeout": HTTP_TIMEOUT}
        if body is not None:
            kwargs["json"] = body
        response = await treq.request(method, url, **kwargs)
        text = await response.text()
        try:
            return response.code, json.loads(text) if text else None
        except ValueError:
            return response.code, {"error": {"message": text[:200]}}

    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(go())


# -- helpers ---------------------------------------------------------------


def region_dsn(config_path: str | None, dsn: str | None) -> str:
    if dsn:
        return dsn
    from regiond.config import load_config
    from regiond.db import EmbeddedPostgres, IEmbeddedPostgresReactor

    text = Path(config_path).read_text() if config_path else ""
    config = load_config(text)
    if config.database.dsn:
        return config.database.dsn
    # Only the DSN is read, which comes from the directory alone: no reactor is needed.
    return EmbeddedPostgres(cast(IEmbeddedPostgresReactor, None), config.postgres_dir).dsn


def find_token(given: str | None) -> str:
    if given:
        return given
    if os.environ.get("OUTPOST_TOKEN"):
        return os.environ["OUTPOST_TOKEN"]
    path = TOKEN_FILE.expanduser()
    if path.exists():
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CommandError(f"{path} is readable by others; chmod 600 {path}", EXIT_AUTH)
        return path.read_text().strip()
    raise CommandError("no API token: use --token, $OUTPOST_TOKEN or ~/.config/outpost/token", EXIT_AUTH)


def api(args: argparse.Namespace, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
    url = args.url.rstrip("/") + path
    token = find_token(args.token) if auth else None
    try:
        status, data = http_request(method, url, token, body)
    except crochet.TimeoutError:
        raise CommandError(f"no answer from {args.url} within {HTTP_TIMEOUT:g}s", EXIT_UNAVAILABLE) from None
    except Exception as e:
        raise CommandError(f"cannot reach the region at {args.url}: {e}", EXIT_UNAVAILABLE) from None
    if status >= 400:
        error = (data or {}).get("error", {}) if isinstance(data, dict) else {}
        # Ours is {"error": {"message"}}; the Ignition-compatible routes answer {"localizedMessage"}.
        message = error.get("message") if isinstance(error, dict) else None
        if message is None and isinstance(data, dict):
            message = data.get("localizedMessage")
        raise CommandError(f"{message or 'HTTP ' + str(status)} (HTTP {status})", _STATUS_EXIT.get(status, EXIT_ERROR))
    return data


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [list(map(str, headers))] + [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def emit(args: argparse.Namespace, data: Any, human: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else human)
