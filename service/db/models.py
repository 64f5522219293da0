"""Tortoise models. Only this package sees them; queries return entities."""

from __future__ import annotations

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model

__all__ = ["AuthThrottleRow", "LedgerRow", "PostRow", "ServiceSecret", "UserRow"]


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

    posts: fields.ReverseRelation[PostRow]

    class Meta:
        table = "users"
        # Keyset pagination by creation time walks this index.
        indexes = (Index(fields=("create_time", "id")),)


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
