"""The policy changes under a running server: SIGHUP and file changes; bad policies stay out."""

from __future__ import annotations

import json
import logging
import signal
from typing import Any

import grpc
import pytest
from users.v1 import user_service_pb2, user_service_pb2_grpc

from service.testing import running_service
from tests.authz_helpers import FRONTEND, SVC, Pki, make_pki, secure_channel, write_policy
from tests.helpers import failure
from tests.ops_helpers import eventually, free_port, run_cli, service_process

DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def frontend_may(*methods: str) -> dict[str, Any]:
    return {
        "name": "frontend-" + "-".join(methods).lower(),
        "allow_rules": [
            {
                "name": "frontend",
                "source": {"principals": [FRONTEND]},
                "request": {"paths": [f"{SVC}/{m}" for m in methods]},
            }
        ],
    }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def get_user_code(address: str, pki: Pki) -> grpc.StatusCode:
    channel = secure_channel(address, pki.credentials(pki.client("frontend")))
    async with channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        return (await failure(users.GetUser(user_service_pb2.GetUserRequest(id=42)))).code


def reloads(running: Any, result: str) -> float:
    registry = running.server.metrics.registry
    value = registry.get_sample_value("users_authz_policy_reloads_total", {"result": result})
    return value or 0.0


async def test_a_reload_applies_a_good_policy_and_keeps_the_last_good_one_over_a_bad_one(
    pki, tmp_path, caplog
):
    policy = write_policy(tmp_path / "policy.json", frontend_may("LookupUser"))
    settings = pki.tls_settings(authz_policy=str(policy))
    async with running_service(f"sqlite://{tmp_path / 'u.sqlite3'}", **settings) as running:
        assert await get_user_code(running.address, pki) == DENIED
        write_policy(policy, frontend_may("GetUser"))
        running.server.reload_authorization()
        assert await get_user_code(running.address, pki) == NOT_FOUND
        assert reloads(running, "ok") == 1

        caplog.set_level(logging.ERROR, logger="service.authz")
        for bad in ("{", json.dumps({"name": "x", "allow_rules": [], "typo": 1})):
            policy.write_text(bad)
            running.server.reload_authorization()
            assert await get_user_code(running.address, pki) == NOT_FOUND  # still the good one
        assert reloads(running, "error") == 2
        gauge = running.server.metrics.registry.get_sample_value(
            "users_authz_policy_last_reload_ok"
        )
        assert gauge == 0
        logged = [r.getMessage() for r in caplog.records if r.name == "service.authz"]
        assert len(logged) == 2
        assert all("keeping policy 'frontend-getuser'" in line for line in logged), logged
        assert 'unknown field "typo"' in logged[1]


async def test_a_changed_file_is_picked_up_without_a_signal(pki, tmp_path):
    policy = write_policy(tmp_path / "policy.json", frontend_may("LookupUser"))
    settings = pki.tls_settings(authz_policy=str(policy))
    async with running_service(f"sqlite://{tmp_path / 'u.sqlite3'}", **settings) as running:
        assert await get_user_code(running.address, pki) == DENIED
        # Replaced by rename, as editors and config managers do.
        staged = tmp_path / "staged.json"
        write_policy(staged, frontend_may("GetUser"))
        staged.replace(policy)

        async def allowed() -> bool:
            return await get_user_code(running.address, pki) == NOT_FOUND

        await eventually(allowed, within=10, interval=0.2, what="the new policy in force")
        assert reloads(running, "ok") == 1


async def test_sighup_reloads_the_policy_of_the_command_line_server(pki, tmp_path):
    policy = write_policy(tmp_path / "policy.json", frontend_may("LookupUser"))
    address = f"127.0.0.1:{free_port()}"
    frontend = pki.credentials(pki.client("frontend"))
    async with service_process(
        "--database-url", f"sqlite://{tmp_path / 'users.sqlite3'}",
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--tls-client-ca", str(pki.ca_file), "--authz-policy", str(policy),
        listen=address, cwd=tmp_path,
    ) as running:  # fmt: skip
        await running.wait_serving(credentials=frontend)
        server = f"localhost:{address.rsplit(':', 1)[1]}"
        assert await get_user_code(server, pki) == DENIED
        write_policy(policy, frontend_may("GetUser"))
        running.signal(signal.SIGHUP)

        async def allowed() -> bool:
            return await get_user_code(server, pki) == NOT_FOUND

        await eventually(allowed, within=10, interval=0.2, what="the reloaded policy")
        running.signal(signal.SIGTERM)
        assert await running.wait_exit() == 0, running.stderr
    # The file watcher may get there too; the signal reloads in any case.
    assert any("reloaded" in line and "(SIGHUP)" in line for line in running.lines), running.stderr


async def test_a_bad_policy_at_start_up_exits_1_with_one_line(pki, tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"name": "p", "allow_rules": [{"name": "r", "request": {
        "headers": [{"key": "x-user", "values": ["admin"]}]}}]}))  # fmt: skip
    status, _, err = await run_cli(
        "--listen", f"127.0.0.1:{free_port()}",
        "--database-url", f"sqlite://{tmp_path / 'users.sqlite3'}",
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--tls-client-ca", str(pki.ca_file), "--authz-policy", str(policy),
        cwd=tmp_path,
    )  # fmt: skip
    assert status == 1, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "cannot start" in line]
    assert len(lines) == 1, err
    assert "policy.json" in lines[0]
    assert "header rules are not supported" in lines[0]


async def test_a_policy_without_mtls_or_jwt_refuses_to_start_with_one_line(tmp_path):
    policy = write_policy(tmp_path / "policy.json")
    status, _, err = await run_cli(
        "--listen", f"127.0.0.1:{free_port()}",
        "--database-url", f"sqlite://{tmp_path / 'users.sqlite3'}",
        "--authz-policy", str(policy),
        cwd=tmp_path,
    )  # fmt: skip
    assert status == 2, err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert "--authz-policy" in line
    assert "--tls-client-ca" in line
    assert "--authz-jwks" in line


async def test_sighup_reaches_every_worker(pki, tmp_path):
    policy = write_policy(tmp_path / "policy.json", frontend_may("LookupUser"))
    address = f"127.0.0.1:{free_port()}"
    frontend = pki.credentials(pki.client("frontend"))
    async with service_process(
        "--database-url", f"sqlite://{tmp_path / 'users.sqlite3'}", "--workers", "2",
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--tls-client-ca", str(pki.ca_file), "--authz-policy", str(policy),
        listen=address, cwd=tmp_path,
    ) as running:  # fmt: skip
        await running.wait_serving(credentials=frontend)

        def serving_workers() -> int:
            return sum("serving users.v1.UserService" in line for line in running.lines)

        async def both_serving() -> bool:
            return serving_workers() == 2

        await eventually(both_serving, within=30, interval=0.2, what="two workers serving")
        running.signal(signal.SIGHUP)

        def reloaded() -> list[str]:
            return [line for line in running.lines if "reloaded" in line and "(SIGHUP)" in line]

        async def both_reloaded() -> bool:
            return len(reloaded()) == 2

        await eventually(both_reloaded, within=10, interval=0.2, what="both workers reloading")
        pids = {line.split("[", 1)[1].split("]", 1)[0] for line in reloaded()}
        assert len(pids) == 2, reloaded()
        running.signal(signal.SIGTERM)
        assert await running.wait_exit() == 0, running.stderr
