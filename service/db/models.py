"""Tortoise models. Only this package sees them; queries return entities."""

from __future__ import annotations

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model

__all__ = [
    "AuthThrottleRow",
    "CreateRequestRow",
    "EventMarkRow",
    "EventRow",
    "LedgerRow",
    "PostRow",
    "ServiceSecret",
    "UserRow",
]


class UserRow(Model):
    id = fields.BigIntField(primary_key=True)
    # Display form (NFKC, case kept) and identity key (NFKC + casefold + ASCII
    # look-alikes, see service.domain.rules). The unique index on the key is
    # what enforces uniqueness, race-free.
    username = fields.CharField(max_length=32)
    username_key = fields.CharField(max_length=96, unique=True)
    email = fields.CharField(max_length=254)
    email_key = fields.CharField(max_length=320, unique=True)
    display_name = fields.CharField(max_length=128, default="")
    password_hash = fields.CharField(max_length=255)
    # Minor units. Guarded updates keep it >= 0 (see service.db.money).
    balance = fields.BigIntField(default=0)
    create_time = fields.DatetimeField(auto_now_add=True)
    update_time = fields.DatetimeField(auto_now=True)
    # users.v1.State number of ACTIVE (1), DISABLED (2) or LOCKED (3). Deletion
    # is delete_time, not a state value, so that UndeleteUser restores the
    # state the user had (a locked user stays locked).
    state = fields.SmallIntField(default=1, db_default=1)
    # Bumped by every write of the row; the etag is derived from it, and
    # conditional writes guard on it (UPDATE ... WHERE version = ?).
    version = fields.BigIntField(default=1, db_default=1)
    # Set together by a soft delete; purge removes rows whose purge_time passed.
    delete_time = fields.DatetimeField(null=True)
    purge_time = fields.DatetimeField(null=True)

    posts: fields.ReverseRelation[PostRow]
    create_requests: fields.ReverseRelation[CreateRequestRow]

    class Meta:
        table = "users"
        indexes = (
            # Keyset pagination by creation time walks this index.
            Index(fields=("create_time", "id")),
            # Purge finds expired soft-deleted users without a scan.
            Index(fields=("purge_time",)),
        )


class PostRow(Model):
    id = fields.BigIntField(primary_key=True)
    user: fields.ForeignKeyRelation[UserRow] = fields.ForeignKeyField(
        "models.UserRow", related_name="posts", on_delete=fields.CASCADE
    )
    user_id: int
    title = fields.CharField(max_length=200)
    body = fields.TextField()
    create_time = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "posts"
        indexes = (Index(fields=("user_id", "id")),)


class CreateRequestRow(Model):
    """The request_id of an idempotent CreateUser and the user it created (aip.dev/155).

    ``fingerprint`` is a SHA-256 of the request's normalised non-secret fields
    (and of an imported password_hash), never of a password: a retry with a
    plaintext password is checked against the user's stored (slow) hash. The
    row goes with its user when the user is purged.
    """

    request_id = fields.CharField(max_length=64, primary_key=True)
    user: fields.ForeignKeyRelation[UserRow] = fields.ForeignKeyField(
        "models.UserRow", related_name="create_requests", on_delete=fields.CASCADE
    )
    user_id: int
    fingerprint = fields.CharField(max_length=64)
    create_time = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "user_create_requests"
        # Purging a user cascades here; without it each purge scans the table.
        indexes = (Index(fields=("user_id",)),)


class LedgerRow(Model):
    """One money movement: a deposit (no sender) or a transfer.

    User ids are plain columns, not foreign keys, so that the ledger outlives
    the users it names and every balance can be recomputed from it.
    """

    id = fields.BigIntField(primary_key=True)
    kind = fields.CharField(max_length=16)
    from_user_id = fields.BigIntField(null=True)
    to_user_id = fields.BigIntField()
    amount = fields.BigIntField()
    request_id = fields.CharField(max_length=64, unique=True)
    create_time = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "ledger"
        indexes = (
            Index(fields=("from_user_id", "id")),
            Index(fields=("to_user_id", "id")),
        )


class AuthThrottleRow(Model):
    """Password-check attempts per login name or account (see service.domain.throttle).

    Times are integer milliseconds since the epoch: the lockout arithmetic
    is then the same plain SQL on both backends. Rows that have been quiet
    for the whole window mean nothing any more and are deleted in passing.
    """

    key = fields.CharField(max_length=64, primary_key=True)
    failures = fields.IntField()
    delay_ms = fields.BigIntField()
    blocked_until_ms = fields.BigIntField()
    last_attempt_ms = fields.BigIntField(db_index=True)

    class Meta:
        table = "auth_throttle"


class ServiceSecret(Model):
    """Secrets the service makes itself on first start (e.g. the page-token key)."""

    name = fields.CharField(max_length=64, primary_key=True)
    value = fields.CharField(max_length=255)

    class Meta:
        table = "service_secrets"


class EventRow(Model):
    """One change-feed event, written in the transaction of the change (the outbox).

    ``sequence`` is the feed position consumers see, set by service.db.events
    so that it grows in commit order on each backend (not the same as ``id``
    on PostgreSQL). ``resource`` is the JSON snapshot of the User, Post or
    Transfer after the change, never a password or hash. ``other_user_id``
    is the receiver of a transfer, so that a consumer of one user's events
    sees the transfers it receives too.
    """

    id = fields.BigIntField(primary_key=True)
    sequence = fields.BigIntField(unique=True)
    type = fields.SmallIntField()
    user_id = fields.BigIntField()
    other_user_id = fields.BigIntField(null=True)
    # A SPIFFE ID may be up to 2,048 bytes long; a JWT sub has no bound at all.
    actor = fields.TextField(default="")
    resource = fields.TextField()
    create_time = fields.DatetimeField()

    class Meta:
        table = "events"
        indexes = (
            Index(fields=("user_id", "sequence")),
            Index(fields=("other_user_id", "sequence")),
            Index(fields=("create_time",)),
        )


class EventMarkRow(Model):
    """Named positions in the feed: how far it was pruned, and each relay's checkpoint."""

    name = fields.CharField(max_length=200, primary_key=True)
    sequence = fields.BigIntField()

    class Meta:
        table = "event_marks"
