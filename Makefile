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

.PHONY: setup run proto proto-check migrations migrations-check lint format typecheck test fuzz soak ha ha-soak ha-bench check bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

setup: $(PY)  ## Create .venv and install the service with its dev tools.
	$(PY) -m pip install --quiet -e '.[dev]'

run: setup  ## Run the service on SQLite (./data/users.sqlite3).
	$(PY) -m service --listen $(LISTEN)

define generate
	rm -rf $(1) && mkdir -p $(1)
	$(PROTOC) --python_out=$(1) --grpc_python_out=$(1) \
		--mypy_out=$(1) --mypy_grpc_out=$(1) $(PROTOS)
	find $(1)/users -type d -exec touch {}/__init__.py \;
	touch $(1)/users/py.typed
endef

proto:  ## Regenerate generated/ from protos/.
	$(call generate,generated)

proto-check:  ## Fail when generated/ is stale.
	$(call generate,.proto-check)
	diff -r -x __pycache__ generated .proto-check || \
		(echo 'generated/ is stale: run make proto and commit the result' && exit 1)
	rm -rf .proto-check

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

fuzz: setup  ## Hostile-input tests with about 10,000 generated requests (CI runs a few hundred).
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q tests/integration/test_hostile_input.py

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

check: setup lint typecheck proto-check migrations-check test  ## What CI runs.

# h2load (Debian nghttp2-client) drives the gRPC calls; sudo only when not root.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

bench: $(PY)  ## Benchmark the service on SQLite and PostgreSQL (BENCH_QUICK=1: smoke run; see bench/README.md).
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@command -v h2load >/dev/null 2>&1 || { echo 'bench: installing h2load (nghttp2-client)'; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null; }
	$(PY) -m bench

clean:
	rm -rf $(VENV) .proto-check .mypy_cache .pytest_cache .ruff_cache build *.egg-info
