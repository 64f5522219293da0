"""Hostile input for every RPC: only documented codes, exact round trips, a server that stays up.

Requests are generated with hypothesis: random Unicode (control characters and
NUL included), huge strings, SQL metacharacters, negative and extreme
integers, forged page tokens and unknown update-mask paths. Every answer must
be OK or a code the contract documents for that method; never UNKNOWN,
INTERNAL or UNAVAILABLE. Values with quotes and SQL syntax that pass
validation (display names, post titles and bodies, usernames, e-mail
addresses) come back exactly as sent, after the documented normalisation, and
find their user. A message over the 4 MiB limit is RESOURCE_EXHAUSTED for
every method.

One server runs per test. Hypothesis drives the examples from a worker thread
and each example's calls run on the test's event loop, so that the server and
its database connections are started once per test, not once per example.

Profiles: the default ("ci") runs a few hundred examples per backend with a
fixed seed; ``HYPOTHESIS_PROFILE=fuzz`` (``make fuzz``) runs about 10,000 from
the seed in ``USERS_FUZZ_SEED`` (a random one when unset). A failure names its
seed. An OK reply is checked against the rules too (``tests/accepted.py``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import reprlib
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
import hypothesis
import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from users.v1 import resources_pb2, user_service_pb2

from service.testing import RunningService, running_service
from tests.accepted import Accepted
from tests.helpers import PASSWORD, create_user, failure, unique_name
from tests.near_valid import near_valid_requests

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Sequence

    from google.protobuf.message import Message

Code = grpc.StatusCode
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

# Generated examples per test: 25 tests, so about 625 per backend in CI and 10,000 per backend
# when fuzzing; the RPC tests also run their fixed hostile requests (explicit_requests).
_EXAMPLES = {"ci": 25, "fuzz": 400}
_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if _PROFILE not in _EXAMPLES:
    raise ValueError(f"HYPOTHESIS_PROFILE must be one of {sorted(_EXAMPLES)}, not {_PROFILE!r}")
# CI draws the same examples every run; `make fuzz` draws new ones from a seed it prints
# (USERS_FUZZ_SEED). A failure names its seed, so that `make fuzz FUZZ_SEED=N` replays it.
SEED_ENV = "USERS_FUZZ_SEED"
CI_SEED = 20261202
FUZZ_SEED = int(
    os.environ.get(SEED_ENV) or (CI_SEED if _PROFILE == "ci" else random.getrandbits(32))
)
SETTINGS = settings(
    max_examples=_EXAMPLES[_PROFILE],
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)

# Never acceptable, whatever the input.
FORBIDDEN = {Code.UNKNOWN, Code.INTERNAL, Code.UNAVAILABLE}
# Any method may refuse a message over the size limit.
ALWAYS = {Code.OK, Code.RESOURCE_EXHAUSTED}

# --- strategies ------------------------------------------------------------------------

SQL = [
    "'; DROP TABLE users; --",
    "' OR '1'='1",
    '" OR 1=1 --',
    "1; DELETE FROM posts",
    "%",
    "_",
    "%_%",
    "\\",
    "\\%",
    "\\\\'",
    "' UNION SELECT password_hash FROM users --",
    "$1",
    "?",
    ":name",
    "/* */",
    "`",
    "E'\\x00'",
    "%s",
    "{0}",
    "\u02bc",  # modifier apostrophe, folds oddly in some collations
    "\uff07",  # full-width apostrophe, NFKC to "'"
]
# Characters that SQL drivers, terminals or Unicode handling treat specially.
NASTY = ["\x00", "a\x00b", "\x00%", "\r\n", "\u202e", "\ufeff", "\U0010ffff", "\x1b[31m"]
# Full Unicode without surrogates (protobuf strings are UTF-8), control characters included.
any_char = st.characters(exclude_categories=["Cs"])
controls = st.sampled_from(
    [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]]
    + ["\u2028", "\u2029", "\u202e", "\u2066", "\u200b", "\ufeff", "\ufffd"]
)
hostile_text = st.one_of(
    st.just(""),
    st.text(any_char, max_size=40),
    st.text(st.one_of(any_char, controls), max_size=40),
    st.sampled_from(SQL + NASTY),
    st.lists(
        st.one_of(st.sampled_from(SQL + NASTY), st.text(any_char, max_size=5)), max_size=6
    ).map("".join),
    # Huge: up to about 100 KB of one repeated chunk.
    st.builds(
        lambda chunk, times: (chunk * times)[:100_000],
        st.text(st.one_of(any_char, controls), min_size=1, max_size=4),
        st.integers(1, 100_000),
    ),
)
hostile_int64 = st.one_of(
    st.sampled_from([0, -1, 1, 2, INT64_MIN, INT64_MIN + 1, INT64_MAX, INT64_MAX - 1, 2**31]),
    st.integers(INT64_MIN, INT64_MAX),
)
hostile_int32 = st.one_of(
    st.sampled_from([0, -1, 1, 1000, 1001, INT32_MIN, INT32_MAX]),
    st.integers(INT32_MIN, INT32_MAX),
)
mask_paths = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "username",
                "email",
                "display_name",
                "*",
                "id",
                "balance",
                "create_time",
                "update_time",
                "posts",
                "password",
                "password_hash",
                "user.username",
                "Username",
                "",
            ]
        ),
        hostile_text,
    ),
    max_size=5,
)


@dataclass(frozen=True)
class World:
    """What the strategies may refer to: real ids and real tokens of this server."""

    user_ids: list[int]
    usernames: list[str]
    tokens: list[str]

    def ids(self) -> st.SearchStrategy[int]:
        return st.one_of(st.sampled_from(self.user_ids), hostile_int64)

    def names(self) -> st.SearchStrategy[str]:
        """Hostile text, or a real username, email or one of theirs edited."""
        real = st.sampled_from(
            self.usernames + [f"{n}@example.com" for n in self.usernames] + [PASSWORD]
        )
        return st.one_of(
            hostile_text,
            real,
            st.tuples(real, hostile_text).map("".join),
            st.tuples(real, st.sampled_from(SQL + NASTY)).map("".join),
        )

    def page_tokens(self) -> st.SearchStrategy[str]:
        real = st.sampled_from(self.tokens)
        return st.one_of(
            st.just(""),
            real,
            hostile_text,
            st.binary(max_size=300).map(lambda b: base64.urlsafe_b64encode(b).decode()),
            st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()),
            # A real token edited: one character changed, truncated or extended.
            st.tuples(real, st.integers(0, 200), st.sampled_from("AQw_-=+/")).map(_edit),
            st.tuples(real, st.integers(0, 200)).map(lambda t: t[0][: t[1]]),
            st.tuples(real, hostile_text).map("".join),
        )


def _edit(parts: tuple[str, int, str]) -> str:
    token, at, char = parts
    if not token:
        return char
    at %= len(token)
    return token[:at] + char + token[at + 1 :]


def timestamps() -> st.SearchStrategy[timestamp_pb2.Timestamp | None]:
    return st.one_of(
        st.none(),
        st.builds(
            timestamp_pb2.Timestamp,
            seconds=st.one_of(
                st.sampled_from([0, -1, -62135596800, 253402300799, 253402300800]),
                st.integers(-(2**40), 2**40),
                hostile_int64,
            ),
            nanos=st.one_of(
                st.sampled_from([0, 999_999_999, -1]), st.integers(-(2**31), 2**31 - 1)
            ),
        ),
    )


def list_users_requests(world: World) -> st.SearchStrategy[Message]:
    @st.composite
    def build(draw: st.DrawFn) -> Message:
        request = user_service_pb2.ListUsersRequest(
            page_size=draw(hostile_int32),
            page_token=draw(world.page_tokens()),
            username_prefix=draw(world.names()),
            order_by=draw(
                st.one_of(
                    st.sampled_from(["", "id", "username desc", "create_time asc", "id desc x"]),
                    hostile_text,
                )
            ),
        )
        for field in ("created_after", "created_before"):
            stamp = draw(timestamps())
            if stamp is not None:
                getattr(request, field).CopyFrom(stamp)
        return request

    return build()


# Imported hashes: valid ones of two schemes, and ones refused for cost or format.
HASHES = [
    "$2b$04$" + "." * 53,
    "$pbkdf2-sha256$1000$c29tZXNhbHQ$" + "A" * 43,
    "$2b$31$" + "." * 53,
    "$6$rounds=5000$saltsalt$",
    "5f4dcc3b5aa765d61d8327deb882cf99",
]


def create_user_requests(world: World) -> st.SearchStrategy[Message]:
    return st.builds(
        U.CreateUserRequest,
        username=world.names(),
        # Mostly valid passwords, so that the other fields are what is judged.
        password=st.one_of(st.just(PASSWORD), st.just(""), hostile_text),
        email=world.names(),
        display_name=hostile_text,
        password_hash=st.one_of(st.just(""), st.sampled_from(HASHES), hostile_text),
        request_id=st.one_of(st.just(""), st.uuids().map(str), hostile_text),
        validate_only=st.booleans(),
    )


def update_user_requests(world: World) -> st.SearchStrategy[Message]:
    @st.composite
    def build(draw: st.DrawFn) -> Message:
        user = resources_pb2.User(
            id=draw(world.ids()),
            username=draw(world.names()),
            email=draw(world.names()),
            display_name=draw(hostile_text),
            balance=draw(hostile_int64),
            etag=draw(st.just("") | hostile_text),
        )
        request = user_service_pb2.UpdateUserRequest(user=user, validate_only=draw(st.booleans()))
        paths = draw(st.none() | mask_paths)
        if paths is not None:
            request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=paths))
        return request

    return build()


def lookup_user_requests(world: World) -> st.SearchStrategy[Message]:
    return st.one_of(
        st.just(user_service_pb2.LookupUserRequest()),
        st.builds(user_service_pb2.LookupUserRequest, username=world.names()),
        st.builds(user_service_pb2.LookupUserRequest, email=world.names()),
    )


@dataclass(frozen=True)
class Rpc:
    name: str
    requests: Callable[[World], st.SearchStrategy[Message]]
    codes: frozenset[Code]


def _rpc(name: str, requests: Callable[[World], st.SearchStrategy[Message]], *codes: Code) -> Rpc:
    return Rpc(name, requests, frozenset(codes))


def _state_requests(request: type[Message]) -> Callable[[World], st.SearchStrategy[Message]]:
    """Requests of the methods that take an id and an etag."""
    return lambda w: st.builds(request, id=w.ids(), etag=hostile_text)


U = user_service_pb2
IA, NF, AE, FP = (
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.ALREADY_EXISTS,
    Code.FAILED_PRECONDITION,
)
RPCS = [
    _rpc(
        "CreateUser",
        create_user_requests,
        IA,
        AE,
    ),
    _rpc(
        "BatchCreateUsers",
        lambda w: st.builds(
            U.BatchCreateUsersRequest, requests=st.lists(create_user_requests(w), max_size=4)
        ),
        IA,
        AE,
    ),
    _rpc(
        "GetUser",
        lambda w: st.builds(
            U.GetUserRequest, id=w.ids(), view=st.sampled_from([0, 1, 2, 3, 99, -5])
        ),
        NF,
        IA,
    ),
    _rpc("LookupUser", lookup_user_requests, NF, IA),
    _rpc(
        "BatchGetUsers",
        lambda w: st.builds(
            U.BatchGetUsersRequest,
            ids=st.one_of(
                st.lists(w.ids(), max_size=20),
                st.integers(999, 1002).map(lambda n: [w.user_ids[0]] * n),
            ),
        ),
        NF,
        IA,
    ),
    _rpc("ListUsers", list_users_requests, IA),
    _rpc("UpdateUser", update_user_requests, NF, AE, IA, Code.ABORTED),
    # INVALID_ARGUMENT for an id <= 0, as GetUser documents.
    _rpc(
        "DeleteUser",
        lambda w: st.builds(U.DeleteUserRequest, id=w.ids(), etag=hostile_text),
        NF,
        FP,
        IA,
        Code.ABORTED,
    ),
    *(
        _rpc(
            name,
            _state_requests(request),
            NF,
            FP,
            IA,
            Code.ABORTED,
        )
        for name, request in (
            ("UndeleteUser", U.UndeleteUserRequest),
            ("DisableUser", U.DisableUserRequest),
            ("EnableUser", U.EnableUserRequest),
            ("LockUser", U.LockUserRequest),
            ("UnlockUser", U.UnlockUserRequest),
        )
    ),
    _rpc(
        "AuthenticateUser",
        lambda w: st.builds(
            U.AuthenticateUserRequest,
            username=w.names(),
            password=st.one_of(st.just(PASSWORD), hostile_text),
        ),
        Code.UNAUTHENTICATED,
    ),
    _rpc(
        "ChangePassword",
        lambda w: st.builds(
            U.ChangePasswordRequest,
            id=w.ids(),
            current_password=st.one_of(st.just(PASSWORD), hostile_text),
            new_password=st.one_of(st.just(PASSWORD), hostile_text),
        ),
        NF,
        Code.UNAUTHENTICATED,
        IA,
    ),
    _rpc(
        "CreatePost",
        lambda w: st.builds(
            U.CreatePostRequest, user_id=w.ids(), title=hostile_text, body=hostile_text
        ),
        NF,
        FP,
        IA,
    ),
    _rpc(
        "ListPosts",
        lambda w: st.builds(
            U.ListPostsRequest, user_id=w.ids(), page_size=hostile_int32, page_token=w.page_tokens()
        ),
        NF,
        IA,
    ),
    _rpc(
        "Deposit",
        lambda w: st.builds(
            U.DepositRequest, user_id=w.ids(), amount=hostile_int64, request_id=hostile_text
        ),
        NF,
        IA,
    ),
    _rpc(
        "TransferFunds",
        lambda w: st.builds(
            U.TransferFundsRequest,
            from_user_id=w.ids(),
            to_user_id=w.ids(),
            amount=hostile_int64,
            request_id=hostile_text,
        ),
        NF,
        IA,
        FP,
        Code.ABORTED,
    ),
    _rpc(
        "ListTransfers",
        lambda w: st.builds(
            U.ListTransfersRequest,
            user_id=w.ids(),
            page_size=hostile_int32,
            page_token=w.page_tokens(),
        ),
        NF,
        IA,
    ),
]


# --- running examples against one server ---------------------------------------------


async def run_examples(
    strategy: st.SearchStrategy[Any],
    check: Callable[[Any], Coroutine[Any, Any, None]],
    explicit: Sequence[Any] = (),
) -> None:
    """Run ``check`` on ``explicit`` and on hypothesis examples of ``strategy``, on this loop.

    Hypothesis blocks its thread for each example; the example's calls run
    here, so that one server serves every example.
    """
    loop = asyncio.get_running_loop()

    def run(value: Any) -> None:
        asyncio.run_coroutine_threadsafe(check(value), loop).result(timeout=120)

    for value in explicit:
        run = example(value)(run)
    try:
        await asyncio.to_thread(hypothesis.seed(FUZZ_SEED)(SETTINGS(given(strategy)(run))))
    except BaseException as error:
        error.add_note(
            f"fuzz seed {FUZZ_SEED} ({_PROFILE} profile): replay with {SEED_ENV}={FUZZ_SEED}"
            f" HYPOTHESIS_PROFILE={_PROFILE}, or make fuzz FUZZ_SEED={FUZZ_SEED}"
        )
        raise


def explicit_requests(request_type: type[Message]) -> list[Message]:
    """Requests with one field hostile and the rest unset, then with every field hostile.

    One field at a time, so that a bad value in one field cannot hide behind
    the validation of another.
    """

    def value(field: Any, text: str, number: int) -> Any:
        if field.type == FieldDescriptor.TYPE_STRING:
            return text
        if field.type == FieldDescriptor.TYPE_INT32:
            return max(INT32_MIN, min(number, INT32_MAX))
        if field.type == FieldDescriptor.TYPE_INT64:
            return [number] if field.name == "ids" else number
        return None

    fields = [f for f in request_type.DESCRIPTOR.fields if value(f, "", 0) is not None]
    requests = [
        request_type(**{field.name: value(field, text, number)})
        for field in fields
        for text, number in EXPLICIT
    ]
    requests += [
        request_type(**{f.name: value(f, text, number) for f in fields})
        for text, number in EXPLICIT
    ]
    return requests


# Every RPC also gets these, whatever the profile and seed.
EXPLICIT = [
    ("\x00", 1),
    ("a\x00b", INT64_MAX),
    ("'; DROP TABLE users; --", INT64_MIN),
    ('" OR 1=1 --', -1),
    ("%_\\", 0),
    ("\u202e" * 1000, 2),
    ("x" * 100_000, INT32_MAX),
]


def short(request: Message) -> str:
    """The request for a failure message, each huge field cut to its start."""
    return (
        reprlib.repr(request.__class__.__name__)
        + " "
        + reprlib.repr({f.name: v for f, v in request.ListFields()})
    )


async def outcome_of(call: Awaitable[Any]) -> tuple[Code, Any]:
    """The call's code, and its reply if it was OK."""
    try:
        reply = await call
    except grpc.aio.AioRpcError as error:
        return error.code(), None
    return Code.OK, reply


async def code_of(call: Awaitable[Any]) -> Code:
    return (await outcome_of(call))[0]


async def seed(service: RunningService) -> World:
    stub = service.stub
    users = [await create_user(stub, unique_name("seed")) for _ in range(3)]
    rich, poor = users[0], users[1]
    await stub.Deposit(U.DepositRequest(user_id=rich.id, amount=1_000_000))
    await stub.TransferFunds(
        U.TransferFundsRequest(from_user_id=rich.id, to_user_id=poor.id, amount=10)
    )
    await stub.CreatePost(U.CreatePostRequest(user_id=rich.id, title="first", body="1"))
    await stub.CreatePost(U.CreatePostRequest(user_id=rich.id, title="second", body="2"))
    tokens = [
        (await stub.ListUsers(U.ListUsersRequest(page_size=1))).next_page_token,
        (
            await stub.ListUsers(U.ListUsersRequest(page_size=1, order_by="username desc"))
        ).next_page_token,
        (await stub.ListPosts(U.ListPostsRequest(user_id=rich.id, page_size=1))).next_page_token,
    ]
    assert all(tokens)
    return World([u.id for u in users], [u.username for u in users], tokens)


async def assert_refused(call: Awaitable[Any], field: str, sent: str) -> None:
    """Out of range: the call must be INVALID_ARGUMENT naming ``field`` alone."""
    got = await failure(call)
    assert (got.code, list(got.violations)) == (Code.INVALID_ARGUMENT, [field]), reprlib.repr(sent)


async def assert_still_serving(service: RunningService) -> None:
    user = await create_user(service.stub, unique_name("after"))
    got = await service.stub.GetUser(U.GetUserRequest(id=user.id))
    assert got.username == user.username


@pytest.mark.parametrize("rpc", RPCS, ids=[r.name for r in RPCS])
async def test_hostile_requests_get_documented_codes(rpc: Rpc, database_url: str) -> None:
    async with running_service(database_url) as service:
        world = await seed(service)
        method = getattr(service.stub, rpc.name)
        allowed = ALWAYS | rpc.codes
        accepted = Accepted(default_password=PASSWORD)

        async def check(request: Message) -> None:
            code, reply = await outcome_of(method(request, timeout=60))
            assert code not in FORBIDDEN, (rpc.name, code, short(request))
            assert code in allowed, (rpc.name, code, short(request))
            if code == Code.OK:
                # Accepted: what was accepted must be allowed, and stored as the rules say.
                assert accepted.problems(rpc.name, request, reply) == [], short(request)

        request_type = getattr(U, f"{rpc.name}Request")
        # Fully hostile requests, and ones valid but for one field (those must be refused).
        explicit = explicit_requests(request_type) + near_valid_requests(
            rpc.name, world.user_ids[2]
        )
        await run_examples(rpc.requests(world), check, explicit)
        await assert_still_serving(service)


# --- round trips of text that passes validation --------------------------------------

# Printable text, quotes and SQL, composed and decomposed accents, outer whitespace.
_SAFE_CHARS = st.one_of(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.sampled_from(
        ["e\u0301", "\u00e9", "A\u030a", "\u212b", "ß", "İ", "ﬁ", "日本", "😀", "\u00a0"]
    ),
)
safe_text = st.lists(
    st.one_of(_SAFE_CHARS, st.sampled_from(SQL[:17])), min_size=1, max_size=12
).map("".join)
padded = st.tuples(st.sampled_from(["", " ", "\t", " \n "]), safe_text, st.sampled_from(["", " "]))


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


async def test_display_names_round_trip(database_url: str) -> None:
    async with running_service(database_url) as service:
        stub = service.stub
        user = await create_user(stub, unique_name("shown"))

        async def check(parts: tuple[str, str, str]) -> None:
            sent = "".join(parts)
            expected = nfc(sent).strip()
            rename = U.UpdateUserRequest(
                user=resources_pb2.User(id=user.id, display_name=sent),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
            if len(expected) > 128:
                await assert_refused(stub.UpdateUser(rename), "user.display_name", sent)
                return
            updated = await stub.UpdateUser(rename)
            assert updated.display_name == expected
            got = await stub.GetUser(U.GetUserRequest(id=user.id))
            assert got.display_name == expected
            (listed,) = (await stub.BatchGetUsers(U.BatchGetUsersRequest(ids=[user.id]))).users
            assert listed.display_name == expected

        # One character too many, whatever the profile draws.
        await run_examples(padded, check, [("", "x" * 129, ""), (" ", "é" * 128, " ")])
        await assert_still_serving(service)


async def test_post_titles_and_bodies_round_trip(database_url: str) -> None:
    async with running_service(database_url) as service:
        stub = service.stub
        user = await create_user(stub, unique_name("author"))

        async def check(value: tuple[tuple[str, str, str], str]) -> None:
            title_parts, body = value
            sent_title = "".join(title_parts)
            expected_title, expected_body = nfc(sent_title).strip(), nfc(body)
            if len(expected_title) > 200:
                sent = U.CreatePostRequest(user_id=user.id, title=sent_title, body=body)
                await assert_refused(stub.CreatePost(sent), "title", sent_title)
                return
            if not expected_title:  # only white space, such as a no-break space
                sent = U.CreatePostRequest(user_id=user.id, title=sent_title, body=body)
                assert await code_of(stub.CreatePost(sent)) == Code.INVALID_ARGUMENT
                return
            post = await stub.CreatePost(
                U.CreatePostRequest(user_id=user.id, title=sent_title, body=body)
            )
            assert (post.title, post.body) == (expected_title, expected_body)
            (newest,) = (
                await stub.ListPosts(U.ListPostsRequest(user_id=user.id, page_size=1))
            ).posts
            assert (newest.id, newest.title, newest.body) == (
                post.id,
                expected_title,
                expected_body,
            )

        bodies = st.one_of(
            padded.map("".join),
            st.lists(st.one_of(safe_text, st.sampled_from(["\n", "\r\n", "\t"])), max_size=8).map(
                "".join
            ),
        )
        too_long = [(("", "t" * 201, ""), "body"), ((" ", "e\u0301" * 200, ""), "")]
        await run_examples(st.tuples(padded, bodies), check, too_long)
        full = await stub.GetUser(U.GetUserRequest(id=user.id, view=resources_pb2.USER_VIEW_FULL))
        assert full.posts
        await assert_still_serving(service)


async def test_like_wildcards_in_username_prefix_match_literally(database_url: str) -> None:
    """'%' and '\\' cannot occur in a username: a prefix holding one matches nobody."""
    async with running_service(database_url) as service:
        stub = service.stub
        await seed(service)

        async def check(prefix: str) -> None:
            page = await stub.ListUsers(U.ListUsersRequest(username_prefix=prefix))
            assert (page.total_size, list(page.users)) == (0, []), prefix

        wildcard = st.tuples(
            st.text(st.sampled_from("se_%\\."), max_size=3),
            st.sampled_from(["%", "\\", "\\%", "%%", "\\_"]),
            st.text(st.sampled_from("_%\\d"), max_size=3),
        ).map("".join)
        await run_examples(wildcard, check)
        await assert_still_serving(service)


# --- round trips of usernames and e-mail addresses --------------------------------------

# Letters of several scripts, full-width forms (NFKC makes them ASCII), digits, and
# the punctuation a username allows: "--" starts an SQL comment, "_" is a LIKE wildcard.
_NAME_START = st.one_of(
    st.sampled_from("abcxyzABCXYZ0189"),
    st.sampled_from(
        ["é", "Ω", "ж", "日", "ß", "Ǆ", "İ", "\u0131", "\u0430", "\uff41", "\uff21", "\uff11"]
    ),
)
_NAME_REST = st.one_of(
    _NAME_START,
    st.sampled_from([".", "_", "-", "--", "__", "..", "OR", "1-1", "select"]),
)
usernames = st.tuples(_NAME_START, st.lists(_NAME_REST, min_size=2, max_size=20)).map(
    lambda t: t[0] + "".join(t[1])
)


def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


async def test_usernames_round_trip(database_url: str) -> None:
    """A username that passes validation comes back as its NFKC form, and finds its user."""
    async with running_service(database_url) as service:
        stub = service.stub
        user = await create_user(stub, unique_name("renamed"))

        async def check(sent: str) -> None:
            expected = nfkc(sent)
            rename = U.UpdateUserRequest(
                user=resources_pb2.User(id=user.id, username=sent),
                update_mask=field_mask_pb2.FieldMask(paths=["username"]),
            )
            if not 3 <= len(expected) <= 32:
                await assert_refused(stub.UpdateUser(rename), "user.username", sent)
                return
            updated = await stub.UpdateUser(rename)
            assert updated.username == expected
            assert (await stub.GetUser(U.GetUserRequest(id=user.id))).username == expected
            found = await stub.LookupUser(U.LookupUserRequest(username=sent))
            assert (found.id, found.username) == (user.id, expected)
            # The display form is a way of typing the name too.
            again = await stub.LookupUser(U.LookupUserRequest(username=expected))
            assert again.id == user.id
            login = await stub.AuthenticateUser(
                U.AuthenticateUserRequest(username=sent, password=PASSWORD)
            )
            assert login.user.id == user.id

        await run_examples(
            usernames,
            check,
            ["a--", "x_y", "OR1-1", "select.from", "日本語", "ab", "a" * 33, "\uff41\uff42"],
        )
        await assert_still_serving(service)


# Local parts of dot-atoms of RFC 5322 atext: quotes, '=', '$', '?', '%', '{', ...
_ATEXT = st.one_of(
    st.characters(min_codepoint=ord("a"), max_codepoint=ord("z")),
    st.characters(min_codepoint=ord("A"), max_codepoint=ord("Z")),
    st.characters(min_codepoint=ord("0"), max_codepoint=ord("9")),
    st.sampled_from("!#$%&'*+-/=?^_`{|}~"),
    st.sampled_from(["é", "ж", "日"]),
)
_ATOM = st.text(_ATEXT, min_size=1, max_size=8)
_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
local_parts = st.lists(_ATOM, min_size=1, max_size=6).map(".".join).filter(lambda s: len(s) <= 64)
domains = st.lists(_LABEL, max_size=3).map(lambda labels: ".".join([*labels, "example", "com"]))


async def test_emails_round_trip(database_url: str) -> None:
    """An address that passes validation is stored as sent (domain lower-cased) and finds its user.

    Quotes and SQL syntax allowed in a local part ("'or'1'='1@...") come back
    byte for byte.
    """
    async with running_service(database_url) as service:
        stub = service.stub
        user = await create_user(stub, unique_name("mailbox"))

        async def check(parts: tuple[str, str, bool]) -> None:
            local, domain, shout = parts
            sent = f"{local}@{domain.upper() if shout else domain}"
            expected = f"{nfc(local)}@{domain}"
            change = U.UpdateUserRequest(
                user=resources_pb2.User(id=user.id, email=sent),
                update_mask=field_mask_pb2.FieldMask(paths=["email"]),
            )
            if len(sent) > 254:
                await assert_refused(stub.UpdateUser(change), "user.email", sent)
                return
            updated = await stub.UpdateUser(change)
            assert updated.email == expected
            assert updated.email.encode() == expected.encode()
            (listed,) = (await stub.BatchGetUsers(U.BatchGetUsersRequest(ids=[user.id]))).users
            assert listed.email == expected
            found = await stub.LookupUser(U.LookupUserRequest(email=sent))
            assert (found.id, found.email) == (user.id, expected)
            login = await stub.AuthenticateUser(
                U.AuthenticateUserRequest(username=sent, password=PASSWORD)
            )
            assert login.user.id == user.id

        await run_examples(
            st.tuples(local_parts, domains, st.booleans()),
            check,
            [
                ("'or'1'='1", "example.com", False),
                ("o'brien", "example.com", True),
                ("$1?", "example.com", False),
                ("a%_b", "example.com", False),
                ("x'--", "db.example.com", False),
                ("{0}|`", "example.com", False),
                # 255 characters and more: refused.
                ("a" * 64, ".".join(["b" * 60] * 3) + ".example.com", False),
            ],
        )
        await assert_still_serving(service)


# --- messages over the size limit -----------------------------------------------------

LIMIT = 4 * 1024 * 1024


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def with_unknown_field(request: bytes, size: int) -> bytes:
    """``request`` plus an unknown length-delimited field (number 9999) of ``size`` bytes.

    Every request type can carry one, so every method can be sent a message of any size.
    """
    return request + _varint((9999 << 3) | 2) + _varint(size) + b"x" * size


@pytest.mark.parametrize("rpc", RPCS, ids=[r.name for r in RPCS])
async def test_a_message_over_4_mib_is_resource_exhausted_for_every_rpc(
    rpc: Rpc, database_url: str
) -> None:
    async with running_service(database_url) as service:
        world = await seed(service)
        # Raw bytes: the stub cannot build a message this type does not describe.
        method = service.channel.unary_unary(
            f"/users.v1.UserService/{rpc.name}",
            request_serializer=None,
            response_deserializer=None,
        )
        request = getattr(U, f"{rpc.name}Request")()
        if "user_id" in request.DESCRIPTOR.fields_by_name:
            request.user_id = world.user_ids[0]
        base = request.SerializeToString()

        for size in (LIMIT + 1, 5 * 1000 * 1000, 16 * 1024 * 1024):
            code = await code_of(method(with_unknown_field(base, size), timeout=60))
            assert code == Code.RESOURCE_EXHAUSTED, (rpc.name, size, code)

        # Just under the limit the message is read; its unknown field is ignored.
        under = with_unknown_field(base, LIMIT - 1024)
        code = await code_of(method(under, timeout=60))
        assert code not in FORBIDDEN | {Code.RESOURCE_EXHAUSTED}, (rpc.name, code)
        assert code in ALWAYS | rpc.codes, (rpc.name, code)
        await assert_still_serving(service)
