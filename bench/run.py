"""Run every scenario against the real service on SQLite and PostgreSQL, with baselines.

Per backend: create the schema (start and stop the service once), seed,
start the service, run the scenarios, stop it; then the same backend with
``--workers`` when the service has that flag. The machine is small and shared,
so each baseline is measured within the backend's block, just before the
first scenario compared with it: the hash loop (argon2id, same parameters and
threads), and a bare grpc.aio server (started once, idle in between) under
h2load and under the Python load generator.

Exit status: 0 when every scenario ran (whatever the numbers), 1 when
something is broken (a server did not start or died, a scenario got no
successful call), 2 when h2load is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from users.v1 import user_service_pb2 as pb

from bench.config import ROOT, BenchConfig
from bench.h2load import grpc_frame, h2load_path, probe, run_h2load
from bench.hashing import hashing_rate
from bench.pyclient import LoadRun, LoadSpec
from bench.report import Result, Target, render_table, write_chart, write_json
from bench.seed import (
    PASSWORD,
    SeedInfo,
    password_hash,
    recreate_postgres_database,
    seed_postgres,
    seed_sqlite,
)
from bench.server import ServerError, ServerProcess, free_port
from bench.tracing import run_tracing

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from google.protobuf.message import Message

__all__ = ["main"]

SERVICE = "/users.v1.UserService/"
BARE_H2 = "bare_h2load"
BARE_PY = "bare_python"
HASHING = "hashing"
# Which baseline each scenario is compared with (measured before its first user).
NEEDS = {
    "get_user": BARE_H2,
    "lookup_user": BARE_H2,
    "batch_get_users": BARE_H2,
    "list_users": BARE_H2,
    "create_user": HASHING,
    "authenticate_user": HASHING,
    "transfer_funds": BARE_PY,
    "mix": BARE_PY,
    "get_user_workers": BARE_H2,
    "create_user_workers": HASHING,
}
MIB = 1024.0


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    url: str
    seed: SeedInfo


class Bench:
    def __init__(self, config: BenchConfig, work: Path) -> None:
        self.config = config
        self.work = work
        self.results: list[Result] = []
        # Baselines per block (a backend, or a backend with --workers): measured
        # within the block, close in time to what they are compared with.
        self.baselines: dict[tuple[str, str], Result] = {}
        self.block = ""
        self.bare: ServerProcess | None = None
        self.broken: list[str] = []
        self.notes: list[str] = []
        self.meta: dict[str, Any] = {}
        self._began = time.monotonic()
        self._hash: str | None = None
        self._single_worker: dict[tuple[str, str], Result] = {}

    # --- plumbing -------------------------------------------------------------------

    def say(self, message: str) -> None:
        elapsed = time.monotonic() - self._began
        print(f"[bench {elapsed:5.0f}s] {message}", file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        self.notes.append(message)
        self.say(f"note: {message}")

    def service_argv(self, target: str, url: str, *extra: str) -> list[str]:
        return [
            self.config.python,
            "-m",
            "service",
            "--listen",
            target,
            "--database-url",
            url,
            "--hash-threads",
            str(self.config.hash_threads),
            *extra,
            *self.config.server_args,
        ]

    def server(self, name: str, url: str, *extra: str) -> ServerProcess:
        port = free_port()
        target = f"127.0.0.1:{port}"
        return ServerProcess(
            name, self.service_argv(target, url, *extra), self.work / f"{name}.log", port
        )

    def payload(self, name: str, message: Message) -> Path:
        path = self.work / f"{name}.bin"
        path.write_bytes(grpc_frame(message.SerializeToString()))
        return path

    def scenario(
        self,
        key: str,
        name: str,
        backend: str,
        measure: Callable[[Result], None],
        *,
        baseline: bool = False,
        force: bool = False,
    ) -> Result | None:
        """Run one measurement with start/end progress lines; record its result."""
        if not (baseline or force or self.config.wants(key)):
            return None
        if not baseline:
            self.need(key, backend)
        result = Result(key=key, scenario=name, backend=backend, is_baseline=baseline)
        self.say(f"start {name} [{backend}]")
        try:
            measure(result)
        except ServerError:
            raise
        except Exception as error:
            result.notes.append(f"{type(error).__name__}: {error}")
            self.broken.append(f"{name} [{backend}]: {type(error).__name__}: {error}")
        result.judge()
        if result.calls and result.errors >= result.calls:
            self.broken.append(f"{name} [{backend}]: every call failed ({result.errors})")
        elif not result.calls and not result.skipped and not result.notes:
            self.broken.append(f"{name} [{backend}]: no call completed")
        self.results.append(result)
        self.say(
            f"end   {name} [{backend}]: {_fmt(result.calls_per_s)} calls/s, "
            f"p50 {_fmt(result.p50_ms, 2)} ms, p99 {_fmt(result.p99_ms, 2)} ms, "
            f"{result.errors} errors"
            + (f", {result.ratio_text}" if result.ratio_text else "")
            + ("".join(f"; {n}" for n in result.notes))
        )
        return result

    def skip(self, key: str, name: str, backend: str, why: str) -> None:
        if self.config.wants(key):
            self.results.append(Result(key=key, scenario=name, backend=backend, skipped=why))
            self.say(f"skip  {name} [{backend}]: {why}")

    def compare(
        self,
        result: Result,
        baseline_key: str,
        label: str,
        target: Target | None = None,
    ) -> None:
        """Throughput as a share of a baseline measured in this run."""
        baseline = self.baselines.get((self.block, baseline_key))
        result.baseline = baseline_key
        result.target = target
        if baseline is None or not baseline.calls_per_s or result.calls_per_s is None:
            return
        result.ratio = result.calls_per_s / baseline.calls_per_s
        result.ratio_kind = "throughput"
        result.ratio_text = f"{result.ratio:.0%} of {label}"

    # --- drivers --------------------------------------------------------------------

    def h2(
        self,
        result: Result,
        server: ServerProcess,
        method: str,
        message: Message,
        *,
        clients: int | None = None,
        streams: int | None = None,
        rps: int | None = None,
        duration: float | None = None,
    ) -> None:
        """Drive ``method`` with h2load; gRPC statuses checked by probes before and after."""
        config = self.config
        path = self.payload(f"{result.key}-{result.backend}".replace(" ", "_"), message)
        raw = message.SerializeToString()
        before = probe(server.target, SERVICE + method, raw)
        with self.metered(result, server):
            run = run_h2load(
                target=server.target,
                method=SERVICE + method,
                payload=path,
                log_file=self.work / "h2load.log",
                clients=clients or config.h2_clients,
                streams=streams or config.h2_streams,
                threads=config.h2_threads,
                duration=duration or config.duration,
                warmup=config.warmup,
                rps=rps,
            )
        server.check_alive()
        after = probe(server.target, SERVICE + method, raw)
        result.calls, result.calls_per_s = run.calls, run.calls_per_s
        result.p50_ms, result.p99_ms = run.p50_ms, run.p99_ms
        result.errors = run.errors
        result.notes.extend(run.notes)
        result.extra["driver"] = (
            f"h2load -c{clients or config.h2_clients} -m{streams or config.h2_streams}"
            + (f" --rps={rps}" if rps else "")
        )
        for when, (code, details) in (("before", before), ("after", after)):
            if code != "OK":
                # Every request is the same message: the probe's status is theirs.
                result.errors = max(result.calls, 1)
                result.notes.append(f"gRPC probe {when} the run: {code} {details}")
                break

    @contextlib.contextmanager
    def metered(self, result: Result, server: ServerProcess) -> Iterator[None]:
        """Record the server's CPU use (user + system, all its processes) while measuring."""
        cpu, wall = server.cpu_seconds(), time.monotonic()
        yield
        used, span = server.cpu_seconds() - cpu, time.monotonic() - wall
        if span > 0:
            result.server_cpu = used / span

    def py(self, result: Result, spec: LoadSpec, server: ServerProcess) -> None:
        run = LoadRun(spec)
        run.start()  # returns once every load process runs: spawning is not metered
        with self.metered(result, server):
            load = run.join()
        self.fill(result, load)
        result.extra["driver"] = f"grpc.aio x{spec.procs} procs, {spec.concurrency} in flight" + (
            " (burst)" if spec.burst else ""
        )

    @staticmethod
    def fill(result: Result, load: Any) -> None:
        result.calls, result.calls_per_s = load.calls, load.calls_per_s
        result.p50_ms, result.p99_ms = load.p50_ms, load.p99_ms
        result.errors = load.errors
        result.extra["codes"] = load.codes
        if load.errors:
            result.notes.append(f"statuses {load.codes}; e.g. {load.sample_error}")
        for failure in load.failed_workers:
            result.notes.append(failure)

    def spec(self, target: str, kind: str, concurrency: int, **more: Any) -> LoadSpec:
        config = self.config
        values: dict[str, Any] = {
            "target": target,
            "kind": kind,
            "concurrency": concurrency,
            "duration": config.duration,
            "warmup": config.warmup,
            "procs": config.client_procs,
            "password": PASSWORD,
            "tag": os.urandom(3).hex(),
        }
        values.update(more)
        return LoadSpec(**values)

    # --- baselines ------------------------------------------------------------------

    def start_bare(self) -> None:
        port = free_port()
        self.bare = ServerProcess(
            "bare-server",
            [self.config.python, "-m", "bench.bare_server", "--listen", f"127.0.0.1:{port}"],
            self.work / "bare-server.log",
            port,
        )
        self.bare.start(health=False)

    def need(self, scenario_key: str, backend: str) -> None:
        """Measure the baseline ``scenario_key`` is compared with, unless done for this block."""
        key = NEEDS.get(scenario_key)
        if key is None or (self.block, key) in self.baselines:
            return
        config = self.config
        bare = self.bare
        if key != HASHING and bare is None:
            return

        def hashing(result: Result) -> None:
            rate = hashing_rate(config.hash_threads, config.hash_seconds, PASSWORD)
            result.calls, result.calls_per_s = rate.hashes, rate.per_s
            result.p50_ms, result.p99_ms = rate.p50_ms, rate.p99_ms
            result.extra["scheme"] = rate.scheme
            self.meta["hash_scheme"] = rate.scheme

        def bare_h2(result: Result) -> None:
            assert bare is not None
            self.h2(result, bare, "GetUser", pb.GetUserRequest(id=42))

        def bare_py(result: Result) -> None:
            assert bare is not None
            self.py(result, self.spec(bare.target, "get", config.concurrency), bare)

        measures: dict[str, tuple[str, Callable[[Result], None]]] = {
            HASHING: (f"baseline: argon2id loop, {config.hash_threads} threads", hashing),
            BARE_H2: ("baseline: bare grpc.aio GetUser, h2load", bare_h2),
            BARE_PY: (f"baseline: bare GetUser, py client x{config.concurrency}", bare_py),
        }
        name, measure = measures[key]
        result = self.scenario(key, name, backend, measure, baseline=True)
        if result is not None:
            self.baselines[(self.block, key)] = result

    # --- one backend ----------------------------------------------------------------

    def prepare(self, name: str) -> Backend | None:
        """A fresh database with its schema made by the service, then seeded."""
        config = self.config
        if self._hash is None:
            self._hash = password_hash()
        if name == "sqlite":
            path = self.work / "users.sqlite3"
            url = f"sqlite://{path}"
        elif name == "postgres":
            url = config.postgres_url
            try:
                asyncio.run(recreate_postgres_database(url))
            except Exception as error:
                self.note(
                    f"PostgreSQL skipped: cannot (re)create the database of {url}: "
                    f"{type(error).__name__}: {error}"
                )
                return None
        else:
            raise SystemExit(f"bench: unknown backend {name!r} in BENCH_BACKENDS")
        self.say(f"start seeding {config.users:,} users [{name}]")
        began = time.monotonic()
        schema = self.server(f"service-{name}-schema", url)
        schema.start(health=True)
        schema.stop()
        if name == "sqlite":
            seed = seed_sqlite(str(path), config.users, config.funded, self._hash)
        else:
            seed = asyncio.run(seed_postgres(url, config.users, config.funded, self._hash))
        self.say(
            f"end   seeding [{name}]: ids {seed.first_id}..{seed.last_id}, "
            f"{len(seed.funded_ids)} funded, {time.monotonic() - began:.1f}s"
        )
        return Backend(name, url, seed)

    def run_backend(self, backend: Backend) -> None:
        self.block = backend.name
        server = self.server(f"service-{backend.name}", backend.url)
        server.start(health=True)
        try:
            self.single_worker_scenarios(server, backend)
        finally:
            server.stop()

    def single_worker_scenarios(self, server: ServerProcess, backend: Backend) -> None:
        config, seed, name = self.config, backend.seed, backend.name
        target = server.target
        rps_total = config.latency_clients * config.latency_rps

        def get_user(r: Result) -> None:
            self.h2(r, server, "GetUser", pb.GetUserRequest(id=seed.middle_id))
            self.compare(r, BARE_H2, "bare", Target(">= 60% of bare", "ratio", ">=", 0.6))

        def lookup(r: Result) -> None:
            username = seed.username(seed.middle_id).upper()
            self.h2(r, server, "LookupUser", pb.LookupUserRequest(username=username))
            self.compare(r, BARE_H2, "bare")

        def batch(r: Result) -> None:
            step = max((seed.last_id - seed.first_id) // 100, 1)
            ids = [seed.first_id + i * step for i in range(100)]
            self.h2(r, server, "BatchGetUsers", pb.BatchGetUsersRequest(ids=ids))
            self.compare(r, BARE_H2, "bare")

        def list_users(r: Result) -> None:
            self.h2(r, server, "ListUsers", pb.ListUsersRequest(page_size=50))
            self.compare(r, BARE_H2, "bare")

        def create(r: Result) -> None:
            self.py(r, self.spec(target, "create", config.concurrency), server)
            self.compare(r, HASHING, "hash loop", Target(">= 90% of hash loop", "ratio", ">=", 0.9))

        def authenticate(r: Result) -> None:
            request = pb.AuthenticateUserRequest(
                username=seed.username(seed.first_id + 41), password=PASSWORD
            )
            self.h2(r, server, "AuthenticateUser", request)
            self.compare(r, HASHING, "hash loop")

        def transfer(r: Result) -> None:
            self.py(
                r,
                self.spec(target, "transfer", config.transfer_clients, funded_ids=seed.funded_ids),
                server,
            )
            goal = Target(">= 500/s", "calls_per_s", ">=", 500) if name == "postgres" else None
            self.compare(r, BARE_PY, "bare (py)", goal)

        def mix(r: Result) -> None:
            spec = self.spec(
                target,
                "mix",
                config.concurrency,
                first_id=seed.first_id,
                last_id=seed.last_id,
                funded_ids=seed.funded_ids,
                write_share=0.1,
            )
            self.py(r, spec, server)
            self.compare(r, BARE_PY, "bare (py)")

        idle: list[Result] = []

        def fixed_rate_get(r: Result) -> None:
            self.h2(
                r,
                server,
                "GetUser",
                pb.GetUserRequest(id=seed.middle_id),
                clients=config.latency_clients,
                streams=config.latency_streams,
                rps=config.latency_rps,
            )

        def get_idle(r: Result) -> None:
            fixed_rate_get(r)
            r.ratio_text = "reference for the storm"
            idle.append(r)

        def get_storm(r: Result) -> None:
            storm = LoadRun(
                self.spec(
                    target,
                    "create",
                    config.storm_concurrency,
                    warmup=config.warmup + 1.0,
                    duration=config.duration,
                )
            )
            storm.start()
            try:
                time.sleep(1.0)  # let the sign-ups fill the hashing pool first
                fixed_rate_get(r)
            finally:
                signups = storm.join()
            r.extra["storm"] = {
                "create_per_s": signups.calls_per_s,
                "create_p99_ms": signups.p99_ms,
                "create_errors": signups.errors,
                "codes": signups.codes,
            }
            r.notes.append(
                f"storm: {signups.calls_per_s:.0f} CreateUser/s, {signups.errors} errors"
            )
            if r.calls_per_s is not None and r.calls_per_s < 0.9 * rps_total:
                r.notes.append(f"GetUser rate fell to {r.calls_per_s:.0f}/s of {rps_total}/s")
            r.target = Target("<= 2x idle p99", "ratio", "<=", 2.0)
            r.baseline = "get_user_idle"
            if idle and idle[0].p99_ms and r.p99_ms is not None:
                r.ratio = r.p99_ms / idle[0].p99_ms
                r.ratio_kind = "p99"
                r.ratio_text = f"p99 {r.ratio:.1f}x idle"

        def burst(r: Result) -> None:
            idle_kib = server.rss_kib()
            reset = server.reset_peak_rss()
            peak = [idle_kib]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.01):
                    peak[0] = max(peak[0], server.rss_kib())

            sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
            sampler.start()
            try:
                spec = self.spec(target, "create", config.burst, burst=True)
                self.py(r, spec, server)
            finally:
                stop.set()
                sampler.join()
            hwm = server.peak_rss_kib() if reset else 0
            peak_mib = max(peak[0], hwm) / MIB
            r.extra.update(
                idle_rss_mib=idle_kib / MIB,
                peak_rss_mib=peak_mib,
                sampled_peak_rss_mib=peak[0] / MIB,
                vmhwm_mib=hwm / MIB if reset else None,
            )
            r.ratio = peak_mib / (idle_kib / MIB) if idle_kib else None
            r.ratio_kind = "rss"
            r.ratio_text = f"peak RSS {peak_mib:.0f} MiB (idle {idle_kib / MIB:.0f})"
            r.target = Target("peak RSS <= 300 MiB", "rss_mib", "<=", 300)

        scenarios: list[tuple[str, str, Callable[[Result], None]]] = [
            ("get_user", "GetUser", get_user),
            ("lookup_user", "LookupUser by username", lookup),
            ("batch_get_users", "BatchGetUsers, 100 ids", batch),
            ("list_users", "ListUsers, page of 50", list_users),
            ("create_user", f"CreateUser, {config.concurrency} in flight", create),
            ("authenticate_user", "AuthenticateUser", authenticate),
            (
                "transfer_funds",
                f"TransferFunds, {len(seed.funded_ids)} accts, {config.transfer_clients} clients",
                transfer,
            ),
            ("mix", "Mix 90% GetUser / 10% TransferFunds", mix),
            ("get_user_idle", f"GetUser at {rps_total}/s, idle", get_idle),
            ("get_user_storm", f"GetUser at {rps_total}/s, sign-up storm", get_storm),
            ("create_user_burst", f"CreateUser burst of {config.burst} at once", burst),
        ]
        for key, title, measure in scenarios:
            if key == "get_user_storm" and not idle and self.config.wants(key):
                # The storm is judged against the idle run; measure it even if filtered out.
                self.scenario(
                    "get_user_idle", f"GetUser at {rps_total}/s, idle", name, get_idle, force=True
                )
            result = self.scenario(key, title, name, measure)
            if result is not None:
                self._single_worker[(key, name)] = result
            server.check_alive()

    def run_workers(self, backend: Backend) -> None:
        config, seed, name = self.config, backend.seed, backend.name
        workers = config.workers
        keys = ("get_user_workers", "create_user_workers")
        if not any(config.wants(k) for k in keys):
            return
        self.block = f"{name} --workers {workers}"
        server = self.server(f"service-{name}-workers", backend.url, "--workers", str(workers))
        server.start(health=True)
        try:

            def get_user(r: Result) -> None:
                # The kernel spreads connections, not calls, over SO_REUSEPORT
                # workers: with 4 connections all 4 land on one worker one run
                # in eight. Four times the connections, with a quarter of the
                # streams each, keeps the calls in flight and evens the spread.
                streams = max(config.h2_streams // 4, 1)
                clients = config.h2_clients * config.h2_streams // streams
                request = pb.GetUserRequest(id=seed.middle_id)
                self.h2(r, server, "GetUser", request, clients=clients, streams=streams)
                self.compare(r, BARE_H2, "bare", Target(">= 60% of bare", "ratio", ">=", 0.6))
                self._versus_one_worker(r, "get_user", name)

            def create(r: Result) -> None:
                self.py(r, self.spec(server.target, "create", config.concurrency), server)
                self.compare(
                    r, HASHING, "hash loop", Target(">= 90% of hash loop", "ratio", ">=", 0.9)
                )
                self._versus_one_worker(r, "create_user", name)

            self.scenario(keys[0], f"GetUser, --workers {workers}", name, get_user)
            self.scenario(keys[1], f"CreateUser, --workers {workers}", name, create)
        finally:
            server.stop()

    def _versus_one_worker(self, result: Result, key: str, backend: str) -> None:
        """Speed-up over one worker, each normalised by the baseline of its own block."""
        single = self._single_worker.get((key, backend))
        if single is None or result.ratio is None or not single.ratio:
            return
        factor = result.ratio / single.ratio
        result.extra["vs_one_worker"] = factor
        result.ratio_text += f", {factor:.2f}x 1 worker"

    def workers_supported(self) -> bool:
        done = subprocess.run(
            [self.config.python, "-m", "service", "--help"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        return "--workers" in done.stdout

    # --- the whole run --------------------------------------------------------------

    def run(self) -> int:
        config = self.config
        self.meta = _meta(config)
        self.say(
            f"{'quick' if config.quick else 'full'} run: {config.duration:g}s per scenario "
            f"(+{config.warmup:g}s warm-up), backends {','.join(config.backends)}, "
            f"load average {self.meta['load_average_start']}"
        )
        try:
            self.start_bare()
        except ServerError as error:
            self.broken.append(f"bare server: {error}")
            self.bare = None
        workers = self.workers_supported()
        self.meta["workers_supported"] = workers
        if not workers:
            self.note("python -m service has no --workers flag yet: the --workers runs are skipped")
        try:
            for name in config.backends:
                try:
                    backend = self.prepare(name)
                    if backend is None:
                        self.skip("get_user", "all scenarios", name, "PostgreSQL not reachable")
                        continue
                    self.run_backend(backend)
                    run_tracing(self, backend)
                    if workers:
                        self.run_workers(backend)
                    else:
                        self.skip(
                            "get_user_workers",
                            f"GetUser, --workers {config.workers}",
                            name,
                            "service has no --workers flag",
                        )
                except ServerError as error:
                    self.broken.append(f"{name}: {error}")
                    self.say(f"BROKEN {name}: {error}")
        finally:
            if self.bare is not None:
                self.bare.stop()
        self.meta["load_average_end"] = _load_average()
        self.meta["seconds"] = round(time.monotonic() - self._began, 1)
        self.meta["notes"] = self.notes
        self.meta["broken"] = self.broken
        return self.report()

    def report(self) -> int:
        config = self.config
        config.results_dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        json_path = config.results_dir / "latest.json"
        png_path = config.results_dir / "latest.png"
        write_json(json_path, self.meta, self.results)
        shutil.copyfile(json_path, config.results_dir / f"bench-{stamp}.json")
        title = (
            f"users service benchmark {stamp} UTC, commit {self.meta['commit']}, "
            f"{self.meta['cpus']} CPUs, {config.duration:g}s per scenario"
        )
        try:
            write_chart(png_path, title, self.results)
        except Exception as error:  # a chart is a nicety: never fail the run for it
            self.note(f"chart not written: {type(error).__name__}: {error}")
        print(render_table(self.results))
        print()
        print(
            "vs baseline: calls/s as a share of the baseline row measured in the same "
            "backend block (bare = canned grpc.aio GetUser under the same h2load command; "
            "bare (py) = the same under the Python load generator; hash loop = argon2id "
            f"hashes/s with {config.hash_threads} threads). srv CPU: CPU time of the server's "
            "processes per second while measured (100% = one core of "
            f"{os.cpu_count()}). Targets are context, not asserts."
        )
        for note in self.notes:
            print(f"note: {note}")
        print(f"results: {json_path}, {png_path} ({self.meta['seconds']:.0f}s)")
        if self.broken:
            print("\nBROKEN:", file=sys.stderr)
            for problem in self.broken:
                print(f"  - {problem}", file=sys.stderr)
            return 1
        return 0


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def _load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def _meta(config: BenchConfig) -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, check=False)
        return done.stdout.strip()

    h2load = h2load_path()
    version = ""
    if h2load:
        version = subprocess.run(
            [h2load, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    settings = {
        k: (str(v) if not isinstance(v, int | float | bool | str | tuple) else v)
        for k, v in asdict(config).items()
    }
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "-s") else ""),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "h2load": version,
        "load_average_start": _load_average(),
        "config": settings,
    }


def main() -> None:
    config = BenchConfig.from_env()
    if h2load_path() is None:
        print(
            "bench: h2load not found; install Debian's nghttp2-client "
            "(make bench does: apt-get install -y nghttp2-client)",
            file=sys.stderr,
        )
        sys.exit(2)
    work = tempfile.mkdtemp(prefix="users-bench-")
    bench = Bench(config, Path(work))
    try:
        code = bench.run()
    finally:
        if os.environ.get("BENCH_KEEP", "") in {"", "0"}:
            with contextlib.suppress(OSError):
                shutil.rmtree(work)
        else:
            print(f"bench: kept work files in {work}", file=sys.stderr)
    sys.exit(code)
