# Every target runs inside the project's virtual environment (.venv), which
# `make setup` creates; override PYTHON to build it from another interpreter.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

LISTEN ?= 127.0.0.1:50051
PROTOS := $(shell find protos -name '*.proto' | sort)
# Codegen runs from the proto root so that imports read `users.v1.*`, the
# package name under which generated/ is installed.
PROTOC = $(PY) -m grpc_tools.protoc -Iprotos \
	--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
	--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc

CERTS ?= certs

.PHONY: certs bench-authz auth-timing setup run proto proto-check proto-lint proto-breaking proto-baseline migrations migrations-check lint format typecheck test fuzz soak ha ha-soak ha-bench check bench bench-scale bench-curve bench-transfers bench-feed clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The service depends on users-api by path (generated/), and pip installs a
# copy of it; the editable install after it makes `make proto` take effect
# without a reinstall.
EDITABLE_STUBS = $(PY) -m pip install --quiet --no-deps -e ./generated

setup: $(PY)  ## Create .venv and install the service with its dev tools.
	$(PY) -m pip install --quiet -e '.[dev]'
	$(EDITABLE_STUBS)

certs: setup  ## Development CA, server and SPIFFE client certificates in $(CERTS)/ (see README).
	$(PY) deploy/certs.py $(CERTS) \
		--client spiffe://users.example/ns/ops/sa/admin \
		--client spiffe://users.example/ns/web/sa/frontend \
		--client spiffe://users.example/ns/payments/sa/billing

run: setup  ## Run the service on SQLite (./data/users.sqlite3).
	$(PY) -m service --listen $(LISTEN)

# generated/ is also the users-api distribution: its pyproject.toml and
# README.md are its own and stay; only generated/users/ is rewritten. The
# client service configs (*_grpc_service_config.json) live beside the protos,
# as googleapis keeps them, and are shipped with the stubs as package data.
SERVICE_CONFIGS := $(shell cd protos && find . -name '*_grpc_service_config.json' | sort)

define generate
	rm -rf $(1)/users && mkdir -p $(1)
	$(PROTOC) --python_out=$(1) --grpc_python_out=$(1) \
		--mypy_out=$(1) --mypy_grpc_out=$(1) $(PROTOS)
	find $(1)/users -type d -exec touch {}/__init__.py \;
	touch $(1)/users/py.typed
	cd protos && cp --parents $(SERVICE_CONFIGS) $(abspath $(1))/
endef

proto:  ## Regenerate generated/users/ from protos/.
	$(call generate,generated)

proto-check:  ## Fail when generated/users/ is stale.
	rm -rf .proto-check
	$(call generate,.proto-check)
	diff -r -x __pycache__ generated/users .proto-check/users || \
		(echo 'generated/ is stale: run make proto and commit the result' && exit 1)
	rm -rf .proto-check

# buf (lint and breaking-change checks of protos/, rules in buf.yaml) comes
# from the npm registry, pinned in package.json and package-lock.json.
BUF := node_modules/.bin/buf
# Breaking changes are checked against the committed image of the last
# released contract, and against the last commit of this ref that changed
# protos/ (skipped where the ref does not exist, as in a bare export).
BUF_AGAINST_REF ?= main

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

proto-lint: node_modules/.installed  ## buf lint with the rule set of buf.yaml.
	$(BUF) lint

proto-breaking: node_modules/.installed  ## Fail on a wire, JSON or generated-code breaking change of protos/.
	$(BUF) breaking --against protos/baseline.binpb
	@commit=$$(git log -1 --format=%H $(BUF_AGAINST_REF) -- protos 2>/dev/null); \
	if [ -z "$$commit" ]; then echo "proto-breaking: no $(BUF_AGAINST_REF) to compare with"; exit 0; fi; \
	against=$$(mktemp -d) && trap 'rm -rf "$$against"' EXIT && \
	git archive "$$commit" protos | tar -x -C "$$against" && \
	echo "$(BUF) breaking --against $(BUF_AGAINST_REF)@$$commit:protos" && \
	$(BUF) breaking --against "$$against/protos"

proto-baseline: node_modules/.installed  ## On a release: record protos/ as the contract later changes must keep.
	$(BUF) build --exclude-source-info -o protos/baseline.binpb

migrations: setup  ## After a model change: write the next migration (NAME=what_changed), then commit it.
	$(BIN)/tortoise -c service.db.migrate.TORTOISE_ORM makemigrations models $(if $(NAME),--name $(NAME))
	$(BIN)/ruff check --fix --quiet service/db/migrations
	$(BIN)/ruff format --quiet service/db/migrations

migrations-check:  ## Fail when the models have changes that no migration covers.
	$(PY) -m service.db.migrate check

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck:
	$(BIN)/mypy
	$(BIN)/mypy --strict deploy/ha

test: setup  ## Run every test; PostgreSQL cases need USERS_TEST_POSTGRES_URL.
	$(BIN)/pytest

# A new seed each run unless given; printed, so that FUZZ_SEED=N replays a failure.
ifndef FUZZ_SEED
FUZZ_SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif

fuzz: setup  ## Hostile-input tests, about 10,000 requests from a random seed it prints (FUZZ_SEED=N replays; CI runs a few hundred from a fixed one).
	@echo "fuzz: seed $(FUZZ_SEED) (replay: make fuzz FUZZ_SEED=$(FUZZ_SEED))"
	USERS_FUZZ_SEED=$(FUZZ_SEED) HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q tests/integration/test_hostile_input.py

soak: setup  ## Bank load while a private PostgreSQL is restarted and crashed (SOAK_SECONDS=120); fails on a lost write.
	$(PY) -m tests.soak

# Debian's engines for the highly available deployment (deploy/ha/README.md).
HA_PACKAGES := patroni etcd-server pgbouncer python3-etcd

ha: setup  ## Install Debian's patroni, etcd-server and pgbouncer for deploy/ha/cluster.py.
	@[ -x /usr/bin/patroni ] && [ -x /usr/bin/etcd ] && [ -x /usr/sbin/pgbouncer ] || { \
		echo 'ha: installing $(HA_PACKAGES)'; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $(HA_PACKAGES) >/dev/null; }

ha-soak: ha  ## Bank load on the HA cluster through switchover, failover and rejoins (HA_SOAK_SECONDS=20 per phase); fails on a lost write.
	$(PY) -m tests.ha_soak

ha-bench: ha  ## Bank throughput through 1 replica against 2 behind PgBouncer (HA_BENCH_SECONDS=10 per round).
	$(PY) -m tests.ha_throughput

check: setup lint typecheck proto-check proto-lint proto-breaking migrations-check test  ## What CI runs.

# h2load (Debian nghttp2-client) drives the gRPC calls; sudo only when not root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

bench-authz: setup  ## Server CPU per call with and without --authz-policy (mTLS, same run).
	$(PY) -m bench.authz

auth-timing: setup  ## AuthenticateUser time for existing vs unknown names, both backends.
	$(PY) -m bench.auth_timing

# h2load (GetUser curves), pgbench (the transfers' baseline), and cc with the
# nghttp2 headers for bench/grpcload.c (the transfers' C client).
define BENCH_TOOLS
	@command -v h2load >/dev/null 2>&1 || { echo 'bench: installing h2load (nghttp2-client)'; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null; }
	@command -v pgbench >/dev/null 2>&1 || { echo 'bench: installing pgbench (postgresql-contrib)'; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-contrib >/dev/null; }
	@{ command -v cc >/dev/null 2>&1 && [ -f /usr/include/nghttp2/nghttp2.h ]; } || { \
		echo 'bench: installing cc and libnghttp2-dev'; $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libnghttp2-dev >/dev/null; }
endef

bench: $(PY)  ## Benchmark the service on SQLite and PostgreSQL (BENCH_QUICK=1: smoke run; see bench/README.md).
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(EDITABLE_STUBS)
	$(BENCH_TOOLS)
	$(PY) -m bench
	$(PY) -m bench.scale
	$(PY) -m bench.curve
	$(PY) -m bench.transfers

bench-scale: setup  ## Read latency at 10k/100k/1M users (BENCH_SCALE_BASELINE=REF: also that commit).
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(EDITABLE_STUBS)
	$(PY) -m bench.scale

bench-curve: setup  ## GetUser calls/s vs a bare grpc.aio handler, 1..512 in flight (table + PNG).
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(EDITABLE_STUBS)
	$(BENCH_TOOLS)
	$(PY) -m bench.curve

bench-transfers: setup  ## TransferFunds vs pgbench TPC-B, 32 clients, same run.
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(EDITABLE_STUBS)
	$(BENCH_TOOLS)
	$(PY) -m bench.transfers

bench-feed: setup  ## The change feed: writes/s with and without the outbox, commit-to-watcher lag, a long transaction's cost.
	$(PY) -m bench.feed

clean:
	rm -rf $(VENV) node_modules .proto-check .mypy_cache .pytest_cache .ruff_cache build *.egg-info \
		generated/build generated/*.egg-info
