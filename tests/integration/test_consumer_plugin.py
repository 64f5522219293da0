"""A consumer's suite, as the README shows it: take the plugin's fixtures and call the stub."""

from users.v1 import user_service_pb2 as pb

from service.pytest_plugin import users_service, users_stub  # noqa: F401


async def test_a_consumer_signs_up_and_reads_the_user_back(users_stub):  # noqa: F811
    request = pb.CreateUserRequest(username="carol", password="long secret", email="c@example.com")
    user = await users_stub.CreateUser(request)
    assert (await users_stub.GetUser(pb.GetUserRequest(id=user.id))).username == "carol"
