"""What an OK reply may contain: the contract's rules, restated on the test side.

The fuzz tests (``tests/integration/test_hostile_input.py``) send hostile
requests; a refusal must carry a documented code, and an acceptance must be
one the rules allow. ``problems(method, request, reply)`` lists what is wrong
with an OK reply to ``request``: a stored username that is not a username,
an amount that was not positive, a reply that is not about what was asked.

The rules are written here again from the specification (``Rules`` in
SPEC.md), not imported from ``service.domain.rules``: a service whose own
checks were wrong must not vouch for itself.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from email_validator import EmailNotValidError, validate_email
from users.v1 import resources_pb2

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Accepted", "problems"]

USERNAME_LENGTHS = range(3, 33)
EMAIL_MAX = 254
PASSWORD_LENGTHS = range(8, 257)
DISPLAY_NAME_MAX = 128
TITLE_MAX = 200
BODY_MAX = 10_000
MAX_PAGE_SIZE = 1000
MAX_BATCH = 1000
MUTABLE_PATHS = {"username", "email", "display_name"}
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# What a terminal or a log line would interpret: never in a stored name or title.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
STATE_AFTER = {
    "DisableUser": resources_pb2.DISABLED,
    "EnableUser": resources_pb2.ACTIVE,
    "LockUser": resources_pb2.LOCKED,
    "UnlockUser": resources_pb2.ACTIVE,
    "UndeleteUser": resources_pb2.ACTIVE,
}


def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def username_problem(name: str) -> str | None:
    if nfkc(name) != name:
        return f"username {name!r} is not in NFKC"
    if len(name) not in USERNAME_LENGTHS:
        return f"username {name!r} has {len(name)} characters"
    if not name[0].isalnum() or any(not (c.isalnum() or c in "._-") for c in name):
        return f"username {name!r} has a character outside letters, digits and ._-"
    return None


def email_problem(email: str) -> str | None:
    if len(email) > EMAIL_MAX:
        return f"email of {len(email)} characters"
    try:
        normalized = validate_email(email, check_deliverability=False).normalized
    except EmailNotValidError as error:
        return f"email {email!r} is not an address: {error}"
    if normalized != email:
        return f"email {email!r} is stored other than as normalised ({normalized!r})"
    return None


def display_name_problem(name: str) -> str | None:
    if len(name) > DISPLAY_NAME_MAX or CONTROL.search(name) or name != name.strip():
        return f"display name {name!r} breaks the rules"
    return None


def user_problems(user: resources_pb2.User) -> list[str]:
    found = [
        username_problem(user.username),
        email_problem(user.email),
        display_name_problem(user.display_name),
        None if user.id > 0 else f"user id {user.id}",
        None if user.balance >= 0 else f"balance {user.balance}",
    ]
    return [problem for problem in found if problem]


def password_problem(password: str) -> str | None:
    if len(nfkc(password)) not in PASSWORD_LENGTHS:
        return f"a password of {len(nfkc(password))} characters was accepted"
    return None


def request_id_problem(request_id: str) -> str | None:
    if request_id and not REQUEST_ID.fullmatch(request_id):
        return f"request_id {request_id[:80]!r} was accepted"
    return None


def page_size_problem(request: Any, returned: int) -> str | None:
    if request.page_size < 0:
        return f"page_size {request.page_size} was accepted"
    limit = min(request.page_size or 50, MAX_PAGE_SIZE)
    if returned > limit:
        return f"{returned} items for page_size {request.page_size}"
    return None


@dataclass
class Accepted:
    """Checks OK replies, remembering what earlier accepted calls changed (passwords)."""

    passwords: dict[int, str] = field(default_factory=dict)
    default_password: str = ""

    def problems(self, method: str, request: Any, reply: Any) -> list[str]:
        check: Callable[[Any, Any], list[str | None]] = getattr(self, f"_{method}")
        return [problem for problem in check(request, reply) if problem]

    def _create(self, request: Any, user: resources_pb2.User) -> list[str | None]:
        found: list[str | None] = [*user_problems(user), request_id_problem(request.request_id)]
        if not request.password_hash:
            found.append(password_problem(request.password))
        elif request.password:
            found.append("both password and password_hash were accepted")
        if user.username != nfkc(request.username):
            found.append(f"username {request.username!r} stored as {user.username!r}")
        if user.display_name != nfc(request.display_name).strip():
            found.append(f"display name {request.display_name!r} stored as {user.display_name!r}")
        if email_problem(request.email) is None and user.email != request.email:
            found.append(f"email {request.email!r} stored as {user.email!r}")
        return found

    def _CreateUser(self, request: Any, user: Any) -> list[str | None]:
        return self._create(request, user)

    def _BatchCreateUsers(self, request: Any, reply: Any) -> list[str | None]:
        if len(reply.users) != len(request.requests) or len(request.requests) > MAX_BATCH:
            return [f"{len(request.requests)} requests, {len(reply.users)} users"]
        found: list[str | None] = []
        for one, user in zip(request.requests, reply.users, strict=True):
            found += self._create(one, user)
        return found

    def _GetUser(self, request: Any, user: Any) -> list[str | None]:
        return [
            None if user.id == request.id else f"asked for {request.id}, got {user.id}",
            *user_problems(user),
        ]

    def _LookupUser(self, request: Any, user: Any) -> list[str | None]:
        asked = request.username or request.email
        return [None if asked else "a lookup of nothing was answered", *user_problems(user)]

    def _BatchGetUsers(self, request: Any, reply: Any) -> list[str | None]:
        found: list[str | None] = [
            None if 0 < len(request.ids) <= MAX_BATCH else f"{len(request.ids)} ids accepted",
            None if {u.id for u in reply.users} == set(request.ids) else "not the ids asked for",
        ]
        for user in reply.users:
            found += user_problems(user)
        return found

    def _ListUsers(self, request: Any, reply: Any) -> list[str | None]:
        found: list[str | None] = [page_size_problem(request, len(reply.users))]
        for user in reply.users:
            found += user_problems(user)
        return found

    def _UpdateUser(self, request: Any, user: Any) -> list[str | None]:
        paths = list(request.update_mask.paths)
        found: list[str | None] = [
            None if user.id == request.user.id else f"updated {request.user.id}, got {user.id}",
            *user_problems(user),
        ]
        if not set(paths) <= MUTABLE_PATHS | {"*"}:
            found.append(f"update mask {paths!r} was accepted")
        named = MUTABLE_PATHS if "*" in paths else set(paths)
        sent = request.user
        if "username" in named and user.username != nfkc(sent.username):
            found.append(f"username {sent.username!r} stored as {user.username!r}")
        if "display_name" in named and user.display_name != nfc(sent.display_name).strip():
            found.append(f"display name {sent.display_name!r} stored as {user.display_name!r}")
        return found

    def _state(self, method: str, request: Any, user: Any) -> list[str | None]:
        return [
            None if user.id == request.id else f"{method} of {request.id} returned {user.id}",
            None if user.state == STATE_AFTER[method] else f"{method} left state {user.state}",
            *user_problems(user),
        ]

    def _DisableUser(self, request: Any, user: Any) -> list[str | None]:
        return self._state("DisableUser", request, user)

    def _EnableUser(self, request: Any, user: Any) -> list[str | None]:
        return self._state("EnableUser", request, user)

    def _LockUser(self, request: Any, user: Any) -> list[str | None]:
        return self._state("LockUser", request, user)

    def _UnlockUser(self, request: Any, user: Any) -> list[str | None]:
        return self._state("UnlockUser", request, user)

    def _UndeleteUser(self, request: Any, user: Any) -> list[str | None]:
        return self._state("UndeleteUser", request, user)

    def _DeleteUser(self, request: Any, reply: Any) -> list[str | None]:
        return [None if request.id > 0 else f"DeleteUser of id {request.id} was accepted"]

    def _AuthenticateUser(self, request: Any, reply: Any) -> list[str | None]:
        expected = self.passwords.get(reply.user.id, self.default_password)
        return [
            None if nfkc(request.password) == expected else "a wrong password was accepted",
            *user_problems(reply.user),
        ]

    def _ChangePassword(self, request: Any, reply: Any) -> list[str | None]:
        expected = self.passwords.get(request.id, self.default_password)
        found = [
            None if nfkc(request.current_password) == expected else "a wrong password was accepted",
            password_problem(request.new_password),
        ]
        self.passwords[request.id] = nfkc(request.new_password)
        return found

    def _CreatePost(self, request: Any, post: Any) -> list[str | None]:
        title, body = nfc(request.title).strip(), nfc(request.body)
        bare_body = body.replace("\n", "").replace("\r", "").replace("\t", "")
        visible = any(unicodedata.category(c) not in {"Cf", "Zs", "Zl", "Zp"} for c in title)
        return [
            None if request.user_id > 0 else f"a post for user {request.user_id}",
            None
            if 1 <= len(title) <= TITLE_MAX and visible and not CONTROL.search(title)
            else f"title {request.title[:80]!r} was accepted",
            None
            if len(body) <= BODY_MAX and not CONTROL.search(bare_body)
            else f"body {request.body[:80]!r} was accepted",
            None if (post.title, post.body) == (title, body) else "the post is not what was sent",
        ]

    def _ListPosts(self, request: Any, reply: Any) -> list[str | None]:
        return [page_size_problem(request, len(reply.posts))]

    def _ListTransfers(self, request: Any, reply: Any) -> list[str | None]:
        return [page_size_problem(request, len(reply.transfers))]

    def _Deposit(self, request: Any, user: Any) -> list[str | None]:
        return [
            None if request.amount > 0 else f"a deposit of {request.amount} was accepted",
            None if user.id == request.user_id else f"deposit to {request.user_id} hit {user.id}",
            None if user.balance >= request.amount else f"balance {user.balance} after a deposit",
            request_id_problem(request.request_id),
        ]

    def _TransferFunds(self, request: Any, transfer: Any) -> list[str | None]:
        sent = (request.from_user_id, request.to_user_id, request.amount)
        got = (transfer.from_user_id, transfer.to_user_id, transfer.amount)
        return [
            None if request.amount > 0 else f"a transfer of {request.amount} was accepted",
            None if request.from_user_id != request.to_user_id else "a transfer to oneself",
            None if got == sent else f"transfer {sent} recorded as {got}",
            request_id_problem(request.request_id),
        ]


def problems(method: str, request: Any, reply: Any, password: str) -> list[str]:
    """What is wrong with this OK reply, for a caller whose users all have ``password``."""
    return Accepted(default_password=password).problems(method, request, reply)
