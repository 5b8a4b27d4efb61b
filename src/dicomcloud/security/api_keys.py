"""API keys for machines: ``dck_<id>.<secret>``, shown once at creation; the index keeps
only the SHA-256 of the secret, the tenant, the permissions and the timestamps.

Why SHA-256 and not a password hash (argon2, scrypt): the secret is 256 random bits from
``secrets``, not something a person chose, so there is no dictionary to try and a
brute-force search of 2**256 values is out of reach however fast the hash is.  A slow
hash would only add tens of milliseconds to every request.  The stored digest is
compared in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dicomcloud.index import schema
from dicomcloud.index.unit_of_work import Runner
from dicomcloud.security.principal import AuthenticationFailed, Permission, Principal

PREFIX = "dck_"
_KEY = re.compile(r"^dck_(?P<id>[0-9a-f]{16})\.(?P<secret>[A-Za-z0-9_-]{43})$")
#: ``last_used_at`` is written at most this often per key (a write per request would
#: compete with ingest for the index).
LAST_USED_RESOLUTION = 300.0


@dataclass(frozen=True)
class ApiKey:
    """One API key as listed (never its secret)."""

    key_id: str
    tenant_id: str
    name: str
    permissions: frozenset[Permission]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """Timestamps come back naive from SQLite and MySQL; they are UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _encode_permissions(permissions: frozenset[Permission]) -> str:
    return ",".join(sorted(p.value for p in permissions))


def _row_to_key(row: sa.Row[tuple[object, ...]]) -> ApiKey:
    mapping = row._mapping
    created = _aware(mapping["created_at"])
    assert created is not None
    return ApiKey(
        key_id=mapping["key_id"],
        tenant_id=mapping["tenant_id"],
        name=mapping["name"],
        permissions=Permission.parse_list(mapping["permissions"]),
        created_at=created,
        revoked_at=_aware(mapping["revoked_at"]),
        last_used_at=_aware(mapping["last_used_at"]),
    )


class ApiKeyStore:
    """API keys in the index database (table ``api_key``, migration 0005)."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._last_written: dict[str, float] = {}

    async def create(
        self, tenant_id: str, permissions: frozenset[Permission], name: str
    ) -> tuple[ApiKey, str]:
        """A new key and its full text (shown once; only its hash is kept)."""
        if not permissions:
            raise ValueError("an API key needs at least one permission")
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        key = ApiKey(key_id, tenant_id, name, permissions, _now(), None, None)
        values = {
            "key_id": key_id,
            "tenant_id": tenant_id,
            "name": name,
            "permissions": _encode_permissions(permissions),
            "secret_hash": _digest(secret),
            "created_at": key.created_at,
            "revoked_at": None,
            "last_used_at": None,
        }

        def work(conn: Connection) -> None:
            conn.execute(sa.insert(schema.api_key).values(values))

        await self._runner.run(work, write=True, what="create an API key")
        return key, f"{PREFIX}{key_id}.{secret}"

    async def list(self, tenant_id: str | None = None) -> list[ApiKey]:
        """Every key (of ``tenant_id`` when given), oldest first."""
        query = sa.select(schema.api_key).order_by(
            schema.api_key.c.created_at, schema.api_key.c.key_id
        )
        if tenant_id is not None:
            query = query.where(schema.api_key.c.tenant_id == tenant_id)

        def work(conn: Connection) -> list[ApiKey]:
            return [_row_to_key(row) for row in conn.execute(query)]

        return await self._runner.run(work, what="list API keys")

    async def revoke(self, key_id: str) -> bool:
        """Revoke ``key_id`` for good; False if there is no such key not yet revoked."""
        table = schema.api_key
        update = (
            sa.update(table)
            .where(table.c.key_id == key_id, table.c.revoked_at.is_(None))
            .values(revoked_at=_now())
        )

        def work(conn: Connection) -> int:
            return conn.execute(update).rowcount

        return await self._runner.run(work, write=True, what="revoke an API key") == 1

    async def principal(self, presented: str) -> Principal:
        """The caller a presented key proves; AuthenticationFailed otherwise (the same
        reason for an unknown and a wrong key, so keys cannot be probed)."""
        match = _KEY.match(presented.strip())
        if match is None:
            raise AuthenticationFailed("the API key is malformed (dck_<id>.<secret>)")
        key_id = match["id"]
        table = schema.api_key
        query = sa.select(table).where(table.c.key_id == key_id)

        def work(conn: Connection) -> tuple[ApiKey, str] | None:
            row = conn.execute(query).first()
            return None if row is None else (_row_to_key(row), row._mapping["secret_hash"])

        found = await self._runner.run(work, what="look up an API key")
        expected = found[1] if found else _digest("unknown")
        matches = hmac.compare_digest(expected, _digest(match["secret"]))
        if found is None or not matches:
            raise AuthenticationFailed("the API key is not valid")
        key = found[0]
        if key.revoked:
            raise AuthenticationFailed("the API key has been revoked")
        await self._touch(key_id)
        return Principal(f"apikey:{key_id}", "apikey", {key.tenant_id: key.permissions})

    async def _touch(self, key_id: str) -> None:
        now = time.monotonic()
        if now - self._last_written.get(key_id, -LAST_USED_RESOLUTION) < LAST_USED_RESOLUTION:
            return
        self._last_written[key_id] = now
        table = schema.api_key
        update = sa.update(table).where(table.c.key_id == key_id).values(last_used_at=_now())

        def work(conn: Connection) -> None:
            conn.execute(update)

        await self._runner.run(work, write=True, what="record an API key's use")


def describe(keys: Sequence[ApiKey]) -> list[dict[str, str]]:
    """Keys as rows of text (for the CLI)."""
    return [
        {
            "id": key.key_id,
            "tenant": key.tenant_id,
            "name": key.name,
            "permissions": _encode_permissions(key.permissions),
            "created": key.created_at.isoformat(timespec="seconds"),
            "revoked": key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "",
            "last used": key.last_used_at.isoformat(timespec="seconds") if key.last_used_at else "",
        }
        for key in keys
    ]
