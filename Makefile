# Entry points; each target installs what it needs first (see scripts/).
.PHONY: run run-offline test test-unit lint typecheck format bench install lock tools

run:            ## install the runtime only, then run both services (5020, 5021) on embedded defaults
	@scripts/run.sh

run-offline:    ## same, with the fake exchange (tools/fake-exchange) as the Binance feed (waits until it listens)
	@FEED=fake scripts/run.sh

test:           ## install the runtime plus test, lint and bench tools, then run the whole suite
	scripts/test.sh

test-unit:      ## unit tests only (no server needed), in 4 parallel workers, without coverage (make test has it)
	scripts/test.sh -m unit -n 4 --dist worksteal --no-cov

install:        ## create .venv and install the project with its dev, test and bench extras
	scripts/bootstrap.sh

lock:           ## regenerate each service image's requirements.txt from pyproject.toml
	scripts/bootstrap.sh && .venv/bin/python scripts/lock.py

tools:          ## install Prometheus (promtool), nginx and PM2 for the ops tests
	scripts/install-tools.sh

lint:           ## ruff lint and format check, mypy
	scripts/bootstrap.sh && .venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

typecheck:      ## mypy only
	scripts/bootstrap.sh && .venv/bin/mypy

format:
	scripts/bootstrap.sh && .venv/bin/ruff check --fix . && .venv/bin/ruff format .

bench:          ## the benchmarks (see bench/README.md); installs wrk with apt when missing
	scripts/bootstrap.sh
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	.venv/bin/python bench/rate_limit/run.py && \
	.venv/bin/python bench/streaming/run.py && .venv/bin/python bench/database/run.py
