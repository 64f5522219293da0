"""Unicode identity: every spelling or look-alike of a username is that one account.

Usernames are unique by their key (NFKC_Casefold, then look-alikes of ASCII
letters folded into them; see service.domain.rules). Each pair below is two
spellings of one name: whichever is created first, the other is
ALREADY_EXISTS (USERNAME_TAKEN) on CreateUser and UpdateUser, and LookupUser
and AuthenticateUser find the account by either.
"""

from __future__ import annotations

import unicodedata

import grpc
from google.protobuf.field_mask_pb2 import FieldMask
from users.v1 import resources_pb2, user_service_pb2

from tests.helpers import PASSWORD, assert_error, create_user, failure, fullwidth

ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS

# (registered, then tried): the second must be refused.
COLLISIONS = [
    ("bigbird", "ᴮᴵᴳᴮᴵᴿᴰ"),
    ("BigBird2", fullwidth("bigbird2")),
    (fullwidth("Wide"), "wide"),
    ("ǅemal", "džemal"),
    ("Ǆemal2", "ǅemal2"),
    ("dželo", "ǄELO"),
    ("Straße", "STRASSE"),
    ("strasse2", "STRA\u1e9e\u0045\u0032"),  # capital sharp s
    ("admin", "adm\u0131n"),  # Turkish dotless i
    ("root", "ROOT".replace("O", "\u039f")),  # Greek capital omicron
    ("operator", "\u043e\u0440\u0435r\u0430tor"),  # Cyrillic o, p, e, a
    ("paypal", "\u0440\u0430\u0443\u0440\u0430l"),  # Cyrillic p, a, y
    ("info", "\u0130nfo"),  # capital I with dot above
    ("\u0130stanbul", "istanbul"),
    ("adm\u0131n2", "ADMIN2"),  # the look-alike came first: the ASCII name is taken
    ("\u0430lice", "alice"),  # Cyrillic a came first
]


def new_request(username: str, i: int) -> user_service_pb2.CreateUserRequest:
    return user_service_pb2.CreateUserRequest(
        username=username, password=PASSWORD, email=f"second{i}@example.com"
    )


def rename(user_id: int, username: str) -> user_service_pb2.UpdateUserRequest:
    return user_service_pb2.UpdateUserRequest(
        user=resources_pb2.User(id=user_id, username=username),
        update_mask=FieldMask(paths=["username"]),
    )


async def test_every_spelling_of_a_taken_username_is_already_exists_on_create(stub, subtests):
    for i, (first, _) in enumerate(COLLISIONS):
        created = await create_user(stub, first, email=f"first{i}@example.com")
        # The display form is the NFKC form as typed, case kept.
        assert created.username == unicodedata.normalize("NFKC", first)
    for i, (first, second) in enumerate(COLLISIONS):
        with subtests.test(first=first, second=second):
            got = await failure(stub.CreateUser(new_request(second, i)))
            assert_error(got, ALREADY_EXISTS, "USERNAME_TAKEN")
            assert got.metadata == {"field": "username"}
    page = await stub.ListUsers(user_service_pb2.ListUsersRequest())
    assert page.total_size == len(COLLISIONS)


async def test_every_spelling_of_a_taken_username_is_already_exists_on_update(stub, subtests):
    other = await create_user(stub, "someoneelse")
    for i, (first, _) in enumerate(COLLISIONS):
        await create_user(stub, first, email=f"first{i}@example.com")
    for first, second in COLLISIONS:
        with subtests.test(first=first, second=second):
            got = await failure(stub.UpdateUser(rename(other.id, second)))
            assert_error(got, ALREADY_EXISTS, "USERNAME_TAKEN")
    unchanged = await stub.GetUser(user_service_pb2.GetUserRequest(id=other.id))
    assert unchanged.username == "someoneelse"


async def test_a_user_may_respell_its_own_name_in_a_colliding_form(stub):
    user = await create_user(stub, "admin")
    renamed = await stub.UpdateUser(rename(user.id, "ADM\u0130N"))
    assert renamed.username == "ADM\u0130N"
    found = await stub.LookupUser(user_service_pb2.LookupUserRequest(username="admin"))
    assert found.id == user.id


async def test_lookup_and_authenticate_find_the_user_by_any_colliding_form(stub, subtests):
    owners = {}
    for i, (first, _) in enumerate(COLLISIONS):
        owners[first] = await create_user(stub, first, email=f"first{i}@example.com")
    for first, second in COLLISIONS:
        with subtests.test(first=first, second=second):
            owner = owners[first]
            for spelling in (first, second):
                found = await stub.LookupUser(user_service_pb2.LookupUserRequest(username=spelling))
                assert found == owner
                login = await stub.AuthenticateUser(
                    user_service_pb2.AuthenticateUserRequest(username=spelling, password=PASSWORD)
                )
                assert login.user.id == owner.id


async def test_look_alike_names_that_are_not_ascii_look_alikes_stay_distinct(stub):
    # Ordinary names that only look alike in some fonts, and accents, are not folded.
    names = ["corn", "com", "bill", "bi11", "bob0", "bobo", "ö12", "o12", "Ωμέγα", "ωμεγα"]
    for i, name in enumerate(names):
        await create_user(stub, name, email=f"distinct{i}@example.com")
    for name in names:
        found = await stub.LookupUser(user_service_pb2.LookupUserRequest(username=name))
        assert found.username == name


async def test_emails_fold_case_but_not_look_alikes(stub):
    # A local part names a mailbox: "adm\u0131n@" may be another person's address.
    first = await create_user(stub, "mailone", email="admin@example.com")
    second = await create_user(stub, "mailtwo", email="adm\u0131n@example.com")
    assert first.id != second.id
    got = await failure(
        stub.CreateUser(
            user_service_pb2.CreateUserRequest(
                username="mailthree", password=PASSWORD, email="ADMIN@Example.com"
            )
        )
    )
    assert_error(got, ALREADY_EXISTS, "EMAIL_TAKEN")
    found = await stub.LookupUser(
        user_service_pb2.LookupUserRequest(email="ADM\u0131N@example.com")
    )
    assert found.id == second.id


async def test_list_users_prefix_matches_by_key(stub):
    admin = await create_user(stub, "adm\u0131nistrator")
    other = await create_user(stub, "\u0430dmiral")  # Cyrillic a
    await create_user(stub, "bob")
    page = await stub.ListUsers(user_service_pb2.ListUsersRequest(username_prefix="ADM"))
    assert sorted(u.id for u in page.users) == sorted([admin.id, other.id])
