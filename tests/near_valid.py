"""Requests valid but for one field, for the fuzz tests: each must be refused.

A fully random request is refused for its first bad field; these keep every
other field valid, so that the one rule they break is the only reason left
to refuse them. The fuzz tests send them to every method; an OK reply to one
is then caught by ``tests/accepted.py``.
"""

from __future__ import annotations

from typing import Any

from users.v1 import resources_pb2
from users.v1 import user_service_pb2 as u

__all__ = ["BREAKING", "near_valid_requests"]

# Each value breaks one rule of tests/accepted.py by itself: in an otherwise
# valid request it must be refused.
BREAKING = {
    "username": ["ab", "a" * 33, "\uff41\uff42", "a b", "a@b", "_abc", "abc\x00", "ab\u202ec"],
    "email": ["a" * 250 + "@example.com", "no-at-sign", "a@b@example.com", "a\x00@example.com"],
    "display_name": ["x" * 129, "a\x00b", "a\u202eb", "\x1b[31mred", "line\nbreak"],
    "password": ["short", "x" * 257, "\uff41" * 7],
    "title": ["", " \u00a0 ", "t" * 201, "a\x00b", "\u200b"],
    "body": ["b" * 10_001, "a\x00b", "\u202e"],
}


def near_valid_requests(method: str, user_id: int) -> list[Any]:
    """Requests of ``method`` that are valid except for one field (``user_id`` is a real user)."""
    requests: list[Any] = []
    if method in {"CreateUser", "BatchCreateUsers"}:
        breaking = [
            (field_name, value)
            for field_name in ("username", "email", "display_name", "password")
            for value in BREAKING[field_name]
        ]
        for index, (name, value) in enumerate(breaking):
            create = u.CreateUserRequest(
                username=f"near{index}valid",
                email=f"near{index}@example.com",
                display_name="Near Valid",
                password="correct horse battery",
            )
            setattr(create, name, value)
            requests.append(
                create if method == "CreateUser" else u.BatchCreateUsersRequest(requests=[create])
            )
    elif method == "UpdateUser":
        for name in ("username", "email", "display_name"):
            for value in BREAKING[name]:
                request = u.UpdateUserRequest(user=resources_pb2.User(id=user_id))
                setattr(request.user, name, value)
                request.update_mask.paths.append(name)
                requests.append(request)
    elif method == "CreatePost":
        for name in ("title", "body"):
            for value in BREAKING[name]:
                post = u.CreatePostRequest(user_id=user_id, title="A title", body="A body")
                setattr(post, name, value)
                requests.append(post)
    elif method == "ChangePassword":
        requests += [
            u.ChangePasswordRequest(id=user_id, current_password="x" * 8, new_password=value)
            for value in BREAKING["password"]
        ]
    return requests
