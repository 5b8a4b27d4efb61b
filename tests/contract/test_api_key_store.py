"""``ApiKeyStore`` on every SQL backend (SQLite, PostgreSQL, MySQL/MariaDB), on a brand-new
database migrated to 0005: create, verify, list, revoke, and only a digest is stored."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from dicomcloud.index import schema
from dicomcloud.index.sql_index import SqlIndex
from dicomcloud.security.api_keys import ApiKeyStore
from dicomcloud.security.principal import AuthenticationFailed, Permission

READ_WRITE = frozenset({Permission.READ, Permission.WRITE})


async def test_api_keys_round_trip(sql_url: str) -> None:
    index = SqlIndex.from_url(sql_url)
    try:
        await index.migrate()
        store = ApiKeyStore(index.runner)
        key, text = await store.create("hospital-a", READ_WRITE, "ai-pipeline")
        other, other_text = await store.create("hospital-b", frozenset({Permission.READ}), "b")

        principal = await store.principal(text)
        assert principal.subject == f"apikey:{key.key_id}"
        assert principal.permissions_in("hospital-a") == READ_WRITE
        assert principal.permissions_in("hospital-b") == frozenset()
        assert not principal.acts_for("hospital-b")

        async with index.engine.connect() as conn:
            rows = (await conn.execute(sa.select(schema.api_key))).mappings().all()
        secret = text.split(".", 1)[1]
        assert {row["key_id"] for row in rows} == {key.key_id, other.key_id}
        mine = next(row for row in rows if row["key_id"] == key.key_id)
        assert mine["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
        assert all(secret not in str(value) for row in rows for value in row.values())

        listed = await store.list()
        assert [(k.key_id, k.tenant_id, k.name) for k in listed] == [
            (key.key_id, "hospital-a", "ai-pipeline"),
            (other.key_id, "hospital-b", "b"),
        ]
        assert listed[0].permissions == READ_WRITE
        assert listed[0].last_used_at is not None  # the principal() above used it
        now = datetime.now(UTC)
        assert now - timedelta(minutes=5) < listed[0].created_at <= now
        assert [k.key_id for k in await store.list("hospital-b")] == [other.key_id]

        assert await store.revoke(key.key_id)
        assert not await store.revoke(key.key_id)  # already revoked
        assert not await store.revoke("0123456789abcdef")
        with pytest.raises(AuthenticationFailed, match="revoked"):
            await store.principal(text)
        revoked = (await store.list("hospital-a"))[0]
        assert revoked.revoked_at is not None and revoked.revoked_at >= revoked.created_at
        assert (await store.principal(other_text)).acts_for("hospital-b")

        forged = other_text[:-1] + ("A" if other_text[-1] != "A" else "B")
        with pytest.raises(AuthenticationFailed, match="not valid"):
            await store.principal(forged)
        with pytest.raises(AuthenticationFailed, match="malformed"):
            await store.principal("dck_nothex.secret")
    finally:
        await index.close()
