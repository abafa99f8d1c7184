# Entry points; each target installs what it needs first (see scripts/).
.PHONY: run run-offline test test-unit lint format bench install tools

run:            ## install, then run both services on embedded defaults (5020, 5021)
	scripts/run.sh

run-offline:    ## same, with the shipped fake exchange as the Binance feed
	FEED=fake scripts/run.sh

test:           ## install, then run the whole test suite with coverage
	scripts/test.sh

test-unit:      ## unit tests only
	scripts/test.sh -m unit

install:        ## create .venv and install the project (dev, test and bench extras)
	scripts/bootstrap.sh

tools:          ## install Prometheus (promtool), nginx and PM2 for the ops tests
	scripts/install-tools.sh

lint:           ## ruff lint and format check
	scripts/bootstrap.sh && .venv/bin/ruff check . && .venv/bin/ruff format --check .

format:
	scripts/bootstrap.sh && .venv/bin/ruff check --fix . && .venv/bin/ruff format .

bench:          ## the benchmarks (see bench/README.md); installs wrk with apt when missing
	scripts/bootstrap.sh
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	.venv/bin/python bench/rate_limit/run.py && \
	.venv/bin/python bench/streaming/run.py && .venv/bin/python bench/database/run.py
