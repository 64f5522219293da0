"""Recompute username keys: look-alikes of ASCII letters now fold into them.

``service.domain.rules.identity_key`` gained a step after NFKC_Casefold
(Cyrillic a U+0430, Turkish dotless i U+0131, "İ", ... become "a", "i"; see
that module). Keys
stored before it no longer match what lookups and the unique index compare,
so this recomputes ``username_key`` from each row's ``username``. E-mail keys
did not change.

Two existing accounts may have names that now share a key ("admin", and
"admin" spelt with a Cyrillic a). Merging or renaming accounts is not a decision a
migration can make: it fails, naming the ids of each such group, and changes
nothing (every migration runs in one transaction). Rename one account of each
group (UpdateUser or SQL) and migrate again.

Only rows whose key changes are written; reading is in batches of ids, and
only the changed rows are held in memory (names that were already ASCII keep
their keys, so on most databases that is none).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from tortoise import migrations
from tortoise.migrations import operations as ops

from service.db.migrate import MigrationFailed
from service.domain.rules import identity_key

if TYPE_CHECKING:
    from tortoise.backends.base.client import BaseDBAsyncClient
    from tortoise.migrations.schema_editor.base import BaseSchemaEditor

BATCH = 1000


class KeyCollision(MigrationFailed):
    """Existing users whose names the new keys no longer tell apart."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = {key: sorted(ids) for key, ids in sorted(groups.items())}
        described = "; ".join(
            f"users {', '.join(map(str, ids))} would all have the username key {key!r}"
            for key, ids in self.groups.items()
        )
        super().__init__(
            "cannot recompute username keys: "
            + described
            + ". Rename all but one user of each group, then migrate again; nothing was changed."
        )


def _placeholders(dialect: str, count: int, start: int = 1) -> list[str]:
    if dialect == "postgres":
        return [f"${i}" for i in range(start, start + count)]
    return ["?"] * count


async def _changed_keys(client: BaseDBAsyncClient, dialect: str) -> dict[int, tuple[str, str]]:
    """Row id -> (stored key, new key), for the rows whose key changes."""
    changed: dict[int, tuple[str, str]] = {}
    last = 0
    after, limit = _placeholders(dialect, 2)
    query = (
        f"SELECT id, username, username_key FROM users WHERE id > {after} ORDER BY id LIMIT {limit}"
    )
    while True:
        rows = await client.execute_query_dict(query, [last, BATCH])
        for row in rows:
            new = identity_key(row["username"])
            if new != row["username_key"]:
                changed[int(row["id"])] = (row["username_key"], new)
        if len(rows) < BATCH:
            return changed
        last = int(rows[-1]["id"])


async def _collisions(
    client: BaseDBAsyncClient, dialect: str, changed: dict[int, tuple[str, str]]
) -> dict[str, list[int]]:
    """New keys that more than one row would have, with those rows' ids."""
    holders: dict[str, set[int]] = defaultdict(set)
    for row_id, (_, new) in changed.items():
        holders[new].add(row_id)
    keys = list(holders)
    for start in range(0, len(keys), BATCH):
        chunk = keys[start : start + BATCH]
        query = (
            "SELECT id, username_key FROM users"
            f" WHERE username_key IN ({', '.join(_placeholders(dialect, len(chunk)))})"
        )
        for row in await client.execute_query_dict(query, chunk):
            # A changed row leaves its stored key; an unchanged one keeps it.
            if int(row["id"]) not in changed:
                holders[row["username_key"]].add(int(row["id"]))
    return {key: sorted(ids) for key, ids in holders.items() if len(ids) > 1}


async def recompute_username_keys(apps: Any, schema_editor: BaseSchemaEditor) -> None:
    client = schema_editor.client
    dialect = client.capabilities.dialect
    changed = await _changed_keys(client, dialect)
    if not changed:
        return
    collisions = await _collisions(client, dialect, changed)
    if collisions:
        raise KeyCollision(collisions)
    key, row_id = _placeholders(dialect, 2)
    update = f"UPDATE users SET username_key = {key} WHERE id = {row_id}"
    # Two passes, so that no row takes a key another changed row still holds.
    # '#' cannot occur in a username, so the interim keys are free.
    for row_id_value in changed:
        await client.execute_query(update, [f"#{row_id_value}", row_id_value])
    for row_id_value, (_, new) in changed.items():
        await client.execute_query(update, [new, row_id_value])


class Migration(migrations.Migration):
    dependencies = [("models", "0002_auth_throttle")]

    operations = [ops.RunPython(recompute_username_keys)]
