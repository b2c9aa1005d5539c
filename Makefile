# The README's two commands: `make demo` (set up, then run the main job on the lab)
# and `make test` (set up, then run the test suite). `make bench` runs the benchmarks.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: setup demo test bench soak lint

setup:
	@infra/setup.sh

demo: setup
	@infra/demo.sh

test: setup lint
	uv run --frozen pytest -q -n 2 --dist loadgroup --durations=25 -m "not soak" $(PYTEST_ARGS)

bench: setup
	uv run --frozen python -m tests.benchmarks.run $(BENCH_ARGS)

# The reliability matrix's slow part (tests/reliability/): its cases marked `soak`, every kill point of every flow,
# then two hours of serving compressed into 20 minutes. KILL_ARGS / SOAK_ARGS narrow them (--flows failover; --minutes 5).
# The kill matrix runs three labs side by side, each with its share of the flows (--parallel 1 for one).
KILL_ARGS ?= --parallel 3
soak: setup
	@status=0; \
	uv run --frozen pytest -q -m soak tests/reliability || [ $$? = 5 ] || status=1; \
	uv run --frozen python -m tests.reliability.kill_matrix $(KILL_ARGS) || status=1; \
	uv run --frozen python -m tests.reliability.soak $(SOAK_ARGS) || status=1; \
	exit $$status

lint: setup
	uv run --frozen ruff check flows tasks configs infra tests
	uv run --frozen lint-imports
