"""``python -m service`` as operators run it: help, bad values, precedence, workers, ports."""

from __future__ import annotations

import dataclasses
import re
import signal
import time

import grpc
import grpc.aio
import pytest
from users.v1 import user_service_pb2, user_service_pb2_grpc

from service.config import Settings
from service.testing import running_service
from tests.ops_helpers import (
    free_port,
    run_cli,
    service_environment,
    service_process,
    stub_of,
)


def option_blocks(help_text: str) -> dict[str, str]:
    """Each ``--flag`` of a help text with the text that documents it, whitespace collapsed."""
    blocks: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        match = re.match(r"\s{2}(--[a-z-]+)", line)
        if match:
            current = match.group(1)
            blocks[current] = line
        elif current and line.startswith(" " * 4):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return {flag: " ".join(text.split()) for flag, text in blocks.items()}


async def test_help_documents_every_setting_with_its_flag_and_environment_variable(tmp_path):
    status, out, err = await run_cli("--help", cwd=tmp_path)
    assert status == 0, err
    blocks = option_blocks(out)
    for field in dataclasses.fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        variable = "USERS_" + field.name.upper()
        assert flag in blocks, f"{flag} is not documented:\n{out}"
        assert f"[{variable}]" in blocks[flag], f"{flag} does not name {variable}"
    assert "migrate" in out
    assert "serve" in out


@pytest.mark.parametrize(
    ("args", "environ", "flag"),
    [
        ([], {"USERS_DB_POOL_SIZE": "x"}, "--db-pool-size"),
        (["--workers", "0"], {}, "--workers"),
        (["--tls-cert", "{cert}"], {}, "--tls-key"),
        (["--listen", "nonsense"], {}, "--listen"),
        ([], {"USERS_GRACE_PERIOD": "-1"}, "--grace-period"),
        (["migrate", "--database-url", "mysql://db/users"], {}, "--database-url"),
    ],
    ids=[
        "env-not-an-integer",
        "no-workers",
        "cert-without-key",
        "bad-listen",
        "env-negative",
        "unknown-database",
    ],
)
async def test_a_bad_value_exits_2_with_one_line_naming_the_flag_and_the_variable(
    args, environ, flag, tmp_path
):
    cert = tmp_path / "cert.pem"
    cert.write_text("whatever")
    args = [arg.format(cert=cert) for arg in args]
    status, out, err = await run_cli(*args, env=service_environment(**environ), cwd=tmp_path)
    assert status == 2, err
    assert out == ""
    variable = "USERS_" + flag[2:].replace("-", "_").upper()
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, err
    assert flag in errors[0], err
    assert variable in errors[0], err
    assert err.rstrip("\n").splitlines()[-1] == errors[0], "the error is the last line"
    assert "Traceback" not in err
    # Nothing was started or created.
    assert not (tmp_path / "data").exists()


async def test_a_flag_beats_its_environment_variable_when_the_service_runs(tmp_path):
    from_env, from_flag = tmp_path / "from-env.sqlite3", tmp_path / "from-flag.sqlite3"
    env = service_environment(
        USERS_DATABASE_URL=f"sqlite://{from_env}",
        # Invalid, but overridden by the flag: never even converted.
        USERS_DB_POOL_SIZE="x",
    )
    status, _, err = await run_cli(
        "migrate", "--database-url", f"sqlite://{from_flag}", "--db-pool-size", "3",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert status == 0, err
    assert from_flag.is_file()
    assert not from_env.exists()


async def test_an_environment_variable_is_used_when_its_flag_is_absent(tmp_path):
    from_env = tmp_path / "from-env.sqlite3"
    env = service_environment(USERS_DATABASE_URL=f"sqlite://{from_env}")
    status, _, err = await run_cli("migrate", env=env, cwd=tmp_path)
    assert status == 0, err
    assert from_env.is_file()
    assert not (tmp_path / "data").exists()


async def test_a_flag_with_a_bad_value_is_reported_even_when_its_variable_is_good(tmp_path):
    env = service_environment(USERS_WORKERS="2")
    status, _, err = await run_cli("--workers", "0", env=env, cwd=tmp_path)
    assert status == 2
    assert "--workers (USERS_WORKERS): must be at least 1" in err


async def test_migrate_creates_the_schema_and_exits_0(tmp_path):
    database = tmp_path / "migrated.sqlite3"
    status, _, err = await run_cli(
        "migrate", "--database-url", f"sqlite://{database}", cwd=tmp_path
    )
    assert status == 0, err
    assert database.is_file()
    # Once more: nothing to do, still fine.
    status, _, err = await run_cli(
        "migrate", "--database-url", f"sqlite://{database}", cwd=tmp_path
    )
    assert status == 0, err


async def test_an_unreachable_database_with_no_wait_exits_1_with_one_line_and_no_password(
    tmp_path,
):
    port = free_port()  # nothing listens there
    url = f"postgres://app:s3cret-pw@127.0.0.1:{port}/users"
    listen = f"127.0.0.1:{free_port()}"
    status, _, err = await run_cli(
        "--listen", listen, "--database-url", url, "--database-wait", "0", cwd=tmp_path
    )
    assert status == 1, err
    assert "s3cret-pw" not in err
    assert "Traceback" not in err
    assert any("cannot" in line and f"127.0.0.1:{port}" in line for line in err.splitlines()), err
    assert "retrying" not in err, "--database-wait 0 fails at once"


async def test_an_unreachable_database_is_retried_until_the_wait_runs_out_then_exits_1(tmp_path):
    port = free_port()  # nothing listens there
    url = f"postgres://app:s3cret-pw@127.0.0.1:{port}/users"
    listen = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    status, _, err = await run_cli(
        "--listen", listen, "--database-url", url, "--database-wait", "2", cwd=tmp_path
    )
    assert status == 1, err
    assert time.monotonic() - started >= 2, "gave up before --database-wait ran out"
    assert "s3cret-pw" not in err
    assert "Traceback" not in err
    retries = [line for line in err.splitlines() if "retrying in" in line]
    assert len(retries) >= 2, err
    assert all(f"app:***@127.0.0.1:{port}/users" in line for line in retries), retries
    (gave_up,) = [line for line in err.splitlines() if "cannot start" in line]
    assert f"127.0.0.1:{port}" in gave_up
    assert "within 2s" in gave_up


# -- workers ----------------------------------------------------------------


async def test_two_workers_share_one_port_and_both_answer_calls(database_url, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    async with service_process(
        "--workers", "2", "--database-url", database_url, "--hash-threads", "1",
        listen=address, cwd=tmp_path,
    ) as running:  # fmt: skip
        await running.wait_serving()
        pids: set[int] = set()
        for _ in range(200):
            # A fresh channel is a fresh connection, which the kernel may hand
            # to either worker.
            async with grpc.aio.insecure_channel(address) as channel:
                stub = user_service_pb2_grpc.UserServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await stub.GetUser(user_service_pb2.GetUserRequest(id=999), timeout=10)
                assert error.value.code() == grpc.StatusCode.NOT_FOUND
            pids = {e["pid"] for e in running.access_log() if e["method"].endswith("/GetUser")}
            if len(pids) >= 2:
                break
        assert len(pids) == 2, f"only {pids} answered:\n{running.stderr}"
        assert running.process.pid not in pids, "the parent only supervises"

        running.signal(signal.SIGTERM)
        assert await running.wait_exit() == 0, running.stderr


# Workers share a port with each other (SO_REUSEPORT), never with a server on it.
@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_second_server_on_a_taken_port_exits_1_saying_it_cannot_listen(tmp_path, workers):
    async with running_service(f"sqlite://{tmp_path / 'first.sqlite3'}") as first:
        status, _, err = await run_cli(
            "--listen", first.address, "--database-url", f"sqlite://{tmp_path / 'second.sqlite3'}",
            "--workers", workers, cwd=tmp_path,
        )  # fmt: skip
        assert status == 1, err
        lines = [line for line in err.splitlines() if "cannot listen" in line]
        assert len(lines) == 1, err
        assert first.address in lines[0]
        assert "Traceback" not in err
        # The first server keeps all its traffic and still answers.
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub_of(first).GetUser(user_service_pb2.GetUserRequest(id=1))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
