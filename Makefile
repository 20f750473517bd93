# Davit: the commands a developer and CI use. `make help` lists them.
PYTHON   := .venv/bin/python
CLUSTERS ?= 1
PYTEST   := $(PYTHON) -m pytest -p no:cacheprovider

.PHONY: help deps up down status demo test lint unit integration crds dashboard format clean bench bench-export bench-restore bench-volume bench-volume-large bench-api bench-large bench-scaling bench-report bench-plan chaos

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

deps: ## install everything the project needs (Debian packages, Kubernetes binaries, Azurite, .venv)
	bash scripts/install-deps.sh

up: deps ## start the local stack in .dev/ (CLUSTERS=2 for a second control plane)
	$(PYTHON) -m devstack up --clusters $(CLUSTERS)

down: ## stop everything `make up` started
	@if [ -x $(PYTHON) ]; then $(PYTHON) -m devstack down; fi

status: ## list the stack's processes
	$(PYTHON) -m devstack status

demo: up ## bring the stack up; back a sample app up, delete it, restore it, check every object and byte
	bash scripts/demo.sh

lint: deps ## ruff, mypy and the import contracts (.importlinter)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy
	.venv/bin/lint-imports

unit: deps ## fast tests of the pure core, no stack
	$(PYTEST) tests/unit -q

# Two workers, each with a local stack of its own (.dev-test-gw0/, .dev-test-gw1/); a test file stays on
# one worker, so a file's fixtures are set up once. Tests marked `long` run in `make chaos`.
PARALLEL := -n 2 --dist loadfile

integration: deps ## tests against the real local stack (started and stopped by the tests)
	$(PYTEST) tests/integration -q $(PARALLEL) -m "not long"

test: deps lint ## everything CI runs: lint, unit and integration tests
	$(PYTEST) tests -q $(PARALLEL) -m "not long" --durations=10

BENCHMARKS := bench-export bench-restore bench-plan bench-large bench-scaling bench-volume bench-volume-large bench-api

bench: deps ## every benchmark (SPEC §9), one after the other: JSON in bench/results/, the table in bench/RESULTS.md
	@status=0; for target in $(BENCHMARKS); do $(MAKE) --no-print-directory $$target || status=1; done; \
	$(PYTHON) -m bench.report; exit $$status

bench-report: deps ## rewrite bench/RESULTS.md from the newest result of each benchmark in bench/results/
	$(PYTHON) -m bench.report

bench-export: deps ## back up 10,000 ConfigMaps/Secrets and compare with a raw paginated list
	$(PYTHON) -m bench.export; status=$$?; $(PYTHON) -m devstack --dir .dev-bench down; exit $$status

bench-restore: deps ## restore 10,000 ConfigMaps/Secrets and compare with a parallel create (8 threads)
	$(PYTHON) -m bench.restore; status=$$?; $(PYTHON) -m devstack --dir .dev-bench down; exit $$status

bench-api: deps ## 10 idle minutes of watcher + exporter with 5,000 finished backups: LISTs counted by the API server
	$(PYTHON) -m bench.api_load; status=$$?; $(PYTHON) -m devstack --dir .dev-bench down; exit $$status

bench-plan: deps ## planning a restore of 100,000 objects part by part against whole: peak RSS, Redis bytes (no stack)
	$(PYTHON) -m bench.plan_memory

bench-large: deps ## back up and restore 10,000 and 100,000 objects: time growth and every process' peak RSS
	$(PYTHON) -m bench.large; status=$$?; $(PYTHON) -m devstack --dir .dev-bench down; exit $$status

bench-scaling: deps ## 50 namespaces backed up and restored by 1, then 2 workers, 20 ms per store request: speed-up
	$(PYTHON) -m bench.scaling; status=$$?; $(PYTHON) -m devstack --dir .dev-bench down; exit $$status

bench-volume: deps ## 640 MiB of mixed data against restic and borg: backup, re-backups, restore, peak RSS
	$(PYTHON) -m bench.volume

bench-volume-large: deps ## the same with 10 GiB of large files, then 1,000,000 small files (needs ~35 GiB free)
	$(PYTHON) -m bench.volume --case large; large=$$?; $(PYTHON) -m bench.volume --case small; small=$$?; \
	exit $$(( large > small ? large : small ))

chaos: deps ## fault-injection suite on its own local stack (docs/chaos.md); table in bench/results/chaos-*.json
	$(PYTHON) -m tests.chaos.runner
	$(PYTEST) tests -q -m long

dashboard: deps ## regenerate deploy/monitoring/dashboards/davit.json from dashboards/davit.py
	$(PYTHON) -m dashboards

crds: ## regenerate deploy/crds from the API types
	$(PYTHON) -m davit.api.crds deploy/crds

format: ## apply ruff's formatting and fixable lint
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

clean: down ## remove local state (not the caches in ~/.cache/davit)
	rm -rf .dev .dev-test .dev-test-gw* .dev-bench .dev-chaos .mypy_cache .ruff_cache
