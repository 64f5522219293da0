"""Page tokens and page sizes of service.domain.pagination."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from service.domain.errors import InvalidArgument
from service.domain.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    PageTokens,
    check_page_size,
)

KEY = b"k" * 32
QUERY: dict[str, object] = {
    "prefix": "al",
    "after": None,
    "before": None,
    "sort": "username",
    "desc": False,
}
POSITION: list[str | int] = ["alice", 42]


def raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def encoded(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rejected(tokens: PageTokens, token: str, query: dict[str, object] = QUERY) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as error:
        tokens.decode(token, query)
    assert [v.field for v in error.value.violations] == ["page_token"]
    return error.value


# --- round trips -------------------------------------------------------------------


@pytest.mark.parametrize(
    "position",
    [[1], ["alice", 42], ["2024-03-01T09:30:00+00:00", 7], ["ünïcødé ß", 2**62], [-1, ""]],
    ids=["id", "username", "create-time", "unicode", "odd-values"],
)
def test_token_decodes_to_the_position_it_encodes(position):
    tokens = PageTokens(KEY)
    assert tokens.decode(tokens.encode(QUERY, position), QUERY) == position


def test_empty_token_means_the_first_page():
    assert PageTokens(KEY).decode("", QUERY) is None


def test_token_is_url_safe_and_unpadded():
    token = PageTokens(KEY).encode(QUERY, ["a/b+c=d?", 1])
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_query_key_order_does_not_matter():
    tokens = PageTokens(KEY)
    token = tokens.encode({"a": 1, "b": 2}, POSITION)
    assert tokens.decode(token, {"b": 2, "a": 1}) == POSITION


def test_query_with_datetimes_round_trips():
    tokens = PageTokens(KEY)
    query = {"after": datetime(2024, 1, 1, tzinfo=UTC), "before": None}
    token = tokens.encode(query, POSITION)
    assert tokens.decode(token, dict(query)) == POSITION


def test_token_reveals_only_the_position_not_the_query():
    token = PageTokens(KEY).encode({"prefix": "secret-prefix"}, POSITION)
    assert b"secret-prefix" not in raw(token)


def test_tokens_of_one_key_decode_in_another_instance_with_that_key():
    token = PageTokens(KEY).encode(QUERY, POSITION)
    assert PageTokens(bytes(KEY)).decode(token, QUERY) == POSITION


# --- tampering ---------------------------------------------------------------------


def test_tampered_payload_with_its_old_mac_is_rejected():
    tokens = PageTokens(KEY)
    data = raw(tokens.encode(QUERY, POSITION))
    payload, mac = data[:-16], data[-16:]
    forged = payload.replace(b"42", b"43")
    assert forged != payload
    rejected(tokens, encoded(forged + mac))


def test_payload_rewritten_as_valid_json_is_rejected():
    tokens = PageTokens(KEY)
    data = raw(tokens.encode(QUERY, POSITION))
    document = json.loads(data[:-16])
    document["p"] = ["zzz", 1]
    forged = json.dumps(document, separators=(",", ":")).encode()
    rejected(tokens, encoded(forged + data[-16:]))


@pytest.mark.parametrize("index", [-1, -8, -16])
def test_tampered_mac_is_rejected(index):
    tokens = PageTokens(KEY)
    data = bytearray(raw(tokens.encode(QUERY, POSITION)))
    data[index] ^= 0x01
    rejected(tokens, encoded(bytes(data)))


@pytest.mark.parametrize("keep", [0, 1, 10, 16, 17, -1, -15])
def test_truncated_token_is_rejected(keep):
    tokens = PageTokens(KEY)
    data = raw(tokens.encode(QUERY, POSITION))
    rejected(tokens, encoded(data[:keep]) or "A")


@pytest.mark.parametrize("cut", [1, 2, 3, 5])
def test_token_with_characters_cut_off_is_rejected(cut):
    tokens = PageTokens(KEY)
    token = tokens.encode(QUERY, POSITION)
    rejected(tokens, token[:-cut])


def test_token_with_bytes_appended_is_rejected():
    tokens = PageTokens(KEY)
    data = raw(tokens.encode(QUERY, POSITION))
    rejected(tokens, encoded(data + b"\x00"))


def test_token_signed_with_another_key_is_rejected():
    token = PageTokens(b"a" * 32).encode(QUERY, POSITION)
    rejected(PageTokens(b"b" * 32), token)


@pytest.mark.parametrize(
    "changed",
    [{"prefix": "bo"}, {"sort": "id"}, {"desc": True}, {"after": "2024-01-01"}, {"extra": 1}],
    ids=["prefix", "sort", "direction", "after", "extra-key"],
)
def test_token_used_with_another_query_is_rejected(changed):
    tokens = PageTokens(KEY)
    token = tokens.encode(QUERY, POSITION)
    error = rejected(tokens, token, {**QUERY, **changed})
    assert "query" in error.message.lower() or "filter" in error.message.lower()


@pytest.mark.parametrize(
    "token", ["garbage!", "é", "A", "====", " ", "%%%%", "x" * 10_000, "\x00"],
    ids=["punctuation", "non-ascii", "one-char", "padding", "space", "percent", "huge", "nul"],
)  # fmt: skip
def test_garbage_is_rejected(token):
    rejected(PageTokens(KEY), token)


def test_rejection_uses_the_given_field_name():
    with pytest.raises(InvalidArgument) as error:
        PageTokens(KEY).decode("garbage", QUERY, field="next_token")
    assert [v.field for v in error.value.violations] == ["next_token"]


def test_key_shorter_than_16_bytes_is_refused():
    with pytest.raises(ValueError, match="16 bytes"):
        PageTokens(b"k" * 15)
    PageTokens(b"k" * 16)


# --- page sizes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "used"),
    [(0, DEFAULT_PAGE_SIZE), (1, 1), (50, 50), (999, 999), (1000, 1000), (1001, 1000),
     (2**31 - 1, MAX_PAGE_SIZE)],
)  # fmt: skip
def test_page_size_zero_means_default_and_large_is_lowered(requested, used):
    assert check_page_size(requested) == used


def test_page_size_constants_follow_the_contract():
    assert (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE) == (50, 1000)


@pytest.mark.parametrize("requested", [-1, -(2**31)])
def test_negative_page_size_is_invalid_argument(requested):
    with pytest.raises(InvalidArgument) as error:
        check_page_size(requested)
    assert [v.field for v in error.value.violations] == ["page_size"]


def test_page_size_violation_uses_the_given_field_name():
    with pytest.raises(InvalidArgument) as error:
        check_page_size(-5, "posts_page_size")
    assert [v.field for v in error.value.violations] == ["posts_page_size"]
