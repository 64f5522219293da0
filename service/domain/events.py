"""Change-feed events in the domain's vocabulary, and the snapshots they carry.

An event is written by the database layer in the transaction of its change
(service.db.events); what it carries is a snapshot of the resource after the
change, encoded here as JSON text so that the database stores no protobuf
and the domain knows no column. The snapshot of a User has no field for a
password or a hash: nothing of a credential can reach the feed.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.domain.entities import Post, Transfer, User
from service.domain.lifecycle import State

__all__ = [
    "MAX_PAGE_SIZE",
    "STATE_EVENTS",
    "Event",
    "EventType",
    "NewEvent",
    "Resource",
    "decode_resource",
    "encode_resource",
]

MAX_PAGE_SIZE = 1000

Resource = User | Post | Transfer


class EventType(enum.IntEnum):
    """users.v1.EventType; the numbers are the proto's."""

    USER_CREATED = 1
    USER_UPDATED = 2
    USER_DISABLED = 3
    USER_ENABLED = 4
    USER_LOCKED = 5
    USER_UNLOCKED = 6
    USER_DELETED = 7
    USER_UNDELETED = 8
    USER_PURGED = 9
    PASSWORD_CHANGED = 10
    POST_CREATED = 11
    DEPOSIT_MADE = 12
    FUNDS_TRANSFERRED = 13
    BOOKMARK = 14


# The event of each state method (service.domain.lifecycle.STATE_CHANGES).
STATE_EVENTS = {
    "DisableUser": EventType.USER_DISABLED,
    "EnableUser": EventType.USER_ENABLED,
    "LockUser": EventType.USER_LOCKED,
    "UnlockUser": EventType.USER_UNLOCKED,
}


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append in the current transaction; sequence and actor are added there."""

    type: EventType
    user_id: int
    # None only for USER_PURGED: the user is gone, and so is what it was.
    resource: Resource | None
    # The receiver of a transfer: a consumer filtering on it sees the transfer too.
    other_user_id: int | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """A committed event as the feed hands it out."""

    sequence: int
    type: EventType
    create_time: datetime
    user_id: int
    actor: str
    resource: Resource | None
    # Bytes of the stored snapshot: what holding the event in memory costs, roughly.
    size: int = 0

    def matches(self, types: frozenset[EventType], user_id: int) -> bool:
        """Whether a consumer filtering on ``types`` (empty: all) and ``user_id`` (0: all)
        wants it; a transfer is about both of its users."""
        if types and self.type not in types:
            return False
        if not user_id or self.user_id == user_id:
            return True
        resource = self.resource
        return isinstance(resource, Transfer) and resource.to_user_id == user_id


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def encode_resource(resource: Resource | None) -> str:
    """The snapshot as JSON text; a user's posts are not part of it."""
    data: dict[str, Any]
    if resource is None:
        return "null"
    if isinstance(resource, User):
        data = {
            "kind": "user",
            "id": resource.id,
            "username": resource.username,
            "email": resource.email,
            "display_name": resource.display_name,
            "balance": resource.balance,
            "create_time": _time(resource.create_time),
            "update_time": _time(resource.update_time),
            "state": int(resource.state),
            "version": resource.version,
            "delete_time": _time(resource.delete_time),
            "purge_time": _time(resource.purge_time),
        }
    elif isinstance(resource, Post):
        data = {
            "kind": "post",
            "id": resource.id,
            "user_id": resource.user_id,
            "title": resource.title,
            "body": resource.body,
            "create_time": _time(resource.create_time),
        }
    else:
        data = {
            "kind": "transfer",
            "id": resource.id,
            "from_user_id": resource.from_user_id,
            "to_user_id": resource.to_user_id,
            "amount": resource.amount,
            "request_id": resource.request_id,
            "create_time": _time(resource.create_time),
        }
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def decode_resource(text: str) -> Resource | None:
    data = json.loads(text)
    if data is None:
        return None
    kind = data.pop("kind")
    if kind == "user":
        return User(
            id=data["id"],
            username=data["username"],
            email=data["email"],
            display_name=data["display_name"],
            balance=data["balance"],
            create_time=_parse_time(data["create_time"]),  # type: ignore[arg-type]
            update_time=_parse_time(data["update_time"]),  # type: ignore[arg-type]
            state=State(data["state"]),
            version=data["version"],
            delete_time=_parse_time(data["delete_time"]),
            purge_time=_parse_time(data["purge_time"]),
        )
    create_time = datetime.fromisoformat(data.pop("create_time"))
    if kind == "post":
        return Post(create_time=create_time, **data)
    return Transfer(create_time=create_time, **data)
