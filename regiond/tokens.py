"""
API tokens: bearer tokens with a role, stored only as SHA-256 hashes.

Tokens are 256 random bits, so a fast unsalted hash is enough: there is
nothing to brute-force that is cheaper than guessing the token itself.  The
plaintext is shown once, when the token is made.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import attrs

from regiond import events
from regiond.db import Database

__all__ = ["TokenStore", "ROLES", "ADMIN", "READ", "hash_token"]

ADMIN = "admin"
READ = "read"
ROLES = (ADMIN, READ)
PREFIX = "opt_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@attrs.frozen
class TokenStore:
    db: Database

    async def create(self, role: str, name: str = "", actor: str = "") -> tuple[int, str]:
        """Make a token; returns (id, plaintext).  The plaintext is not kept."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        token = PREFIX + secrets.token_urlsafe(32)

        async def work(tx: Any) -> int:
            row = await tx.fetchone(
                "INSERT INTO api_tokens (name, role, token_hash) VALUES (%s, %s, %s) RETURNING id",
                (name, role, hash_token(token)),
            )
            await events.record(tx, "token.created", actor=actor, subject=name, outcome="ok", data={"id": row["id"], "role": role})
            return int(row["id"])

        return await self.db.transaction(work), token

    async def verify(self, token: str) -> dict[str, Any] | None:
        """The live token's id, name and role, or None."""
        if not token.startswith(PREFIX) or len(token) > 200:
            return None
        # One round trip, and a write at most once a minute per token rather
        # than on every request: last_used_at is for operators, not auditing.
        row = await self.db.fetchone(
            "WITH found AS (SELECT id, name, role, last_used_at FROM api_tokens"
            "               WHERE token_hash = %s AND revoked_at IS NULL),"
            " touched AS (UPDATE api_tokens t SET last_used_at = now() FROM found"
            "             WHERE t.id = found.id AND (found.last_used_at IS NULL"
            "                   OR found.last_used_at < now() - interval '1 minute'))"
            " SELECT id, name, role FROM found",
            (hash_token(token),),
        )
        return None if row is None else {"id": int(row["id"]), "name": row["name"], "role": row["role"]}

    async def list(self) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT id, name, role, created_at, last_used_at, revoked_at FROM api_tokens ORDER BY id"
        )
        return [
            {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
            for r in rows
        ]

    async def revoke(self, token_id: int, actor: str = "") -> bool:
        async def work(tx: Any) -> bool:
            n = await tx.execute("UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL", (token_id,))
            if n:
                await events.record(tx, "token.revoked", actor=actor, outcome="ok", data={"id": token_id})
            return bool(n)

        return await self.db.transaction(work)
