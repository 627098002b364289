# Taskplane developer commands. The README's two set-up commands are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Values that satisfy production settings' validation, for `check --deploy` only (not secrets).
DEPLOY_CHECK_ENV := \
	SECRET_KEY=deploy-check-only-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ \
	ALLOWED_HOSTS=taskplane.example.com \
	DATABASE_URL=postgres://postgres@127.0.0.1:5432/taskplane \
	CELERY_BROKER_URL=redis://127.0.0.1:6379/0 \
	REDIS_URL=redis://127.0.0.1:6379/1 \
	FERNET_KEYS=ZGVwbG95LWNoZWNrLW9ubHktbm90LWEtc2VjcmV0ISE= \
	METRICS_TOKEN=deploy-check-only \
	EMAIL_URL=smtp+tls://deploy:check-only@smtp.example.com:587 \
	PAYMENTS_URL=https://payments.example.com/v1

.PHONY: run test lint check-migrations check-deploy venv clean

$(STAMP): requirements/base.txt requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/dev.txt
	touch $(STAMP)

venv: $(STAMP)

run: venv
	compose/start/local.sh

lint: venv
	$(BIN)/ruff check .

# The suite, its checks and the benchmarks never read a developer's .env (settings/env.py).
test check-migrations check-deploy bench-outbox bench-idempotency bench-flags bench-resilience bench-schedules: export TASKPLANE_ENV_FILE = off

test: lint check-migrations check-deploy
	$(BIN)/pytest

# Model changes without a migration; needs no database (settings/migration_check.py).
check-migrations:
	$(BIN)/python manage.py makemigrations --check --dry-run --settings settings.migration_check

check-deploy:
	$(DEPLOY_CHECK_ENV) $(BIN)/python manage.py check --deploy --fail-level WARNING --settings settings.production

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache

# On-demand benchmark, not part of `make test` (docs/benchmarks.md). The last stdout line is the JSON summary;
# BENCH_ARGS passes options, e.g. BENCH_ARGS="--quiet-wait 120 --no-retained".
.PHONY: bench-outbox
bench-outbox: venv
	DJANGO_SETTINGS_MODULE=settings.test $(BIN)/python -m tests.benchmarks.bench_outbox $(BENCH_ARGS)

# Idempotency-Key latency (docs/benchmarks.md); e.g. BENCH_ARGS="--requests 500 --py-spy /path/to/py-spy".
.PHONY: bench-idempotency
bench-idempotency: venv
	DJANGO_SETTINGS_MODULE=settings.test $(BIN)/python -m tests.benchmarks.bench_idempotency $(BENCH_ARGS)

# Feature flags (docs/benchmarks.md): installs django-waffle, the baseline, for this benchmark only.
.PHONY: bench-flags
bench-flags: venv
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/bench.txt
	$(BIN)/python -m tests.benchmarks.bench_flags $(BENCH_ARGS)

# Schedules firing at 1,000/s among 100,000 against django-celery-beat's tick (docs/benchmarks.md).
.PHONY: bench-schedules
bench-schedules: venv
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements/bench.txt
	$(BIN)/python -m tests.benchmarks.bench_schedules $(BENCH_ARGS)

# Resilience kit overhead on real Redis and the HTTP client's over bare requests (docs/benchmarks.md).
.PHONY: bench-resilience
bench-resilience: venv
	$(BIN)/python -m tests.benchmarks.bench_resilience $(BENCH_ARGS)

# Saga engine: 3-step sagas on real workers vs a bare Celery chain (docs/benchmarks.md).
.PHONY: bench-sagas
bench-sagas: export TASKPLANE_ENV_FILE = off
bench-sagas: venv
	DJANGO_SETTINGS_MODULE=settings.test $(BIN)/python -m tests.benchmarks.bench_sagas $(BENCH_ARGS)

# Fault-injection soaks (docs/reliability.md): rounds of kill -9 of every process kind, repeated PostgreSQL
# restarts and crashes, repeated RabbitMQ outages, with many more orders than the short variants in `make test`.
# Each runs against private PostgreSQL, Redis and RabbitMQ servers it starts itself. CHAOS_ARGS passes pytest options.
.PHONY: chaos
chaos: venv
	$(BIN)/pytest -m chaos $(CHAOS_ARGS)
