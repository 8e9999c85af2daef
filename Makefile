# forgeway: every entry point. `make setup` is idempotent; test, lab and bench run it.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)

.PHONY: setup test test-unit test-program test-policies test-lab lab lab-down bench lint preview doctor reference new-stack

setup: $(VENV)/.installed
	@bash tools/ci/setup-apt.sh tools/ci/apt-packages.txt

# uv (pinned in requirements-setup.txt) installs the pinned requirements in seconds where
# pip takes minutes; when uv cannot be had or fails, pip installs them as before.
# --system-certs: the machine's CA store, as pip uses (uv's own roots refuse a TLS proxy's).
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-setup.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-setup.txt \
	  && $(VENV)/bin/uv pip install --quiet --system-certs --python $(PY) -r requirements-dev.txt \
	  || { echo "setup: uv failed, installing with pip" >&2; \
	       $(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt; }
	touch $@

# Every tier: unit, program, policies, lab, in one pytest session on two xdist workers
# (--dist loadgroup). The lab tier needs root and its apt packages; without them it fails
# (it never skips). Every test on `make lab`'s topology (fixed names) runs on one worker,
# in order: the longest group (nearly all of the session's wall time), so it goes first
# (--no-loadscope-reorder and the order tests/lab/conftest.py gives it). The other worker
# meanwhile runs the rest: each other lab module whole (namespaces of its own with random
# names), the program and the policies tier each whole (tests/conftest.py: a stack
# synthesized once per worker), and the unit tests one by one, last, so that both workers
# end together. Groups: tests/xdist_groups.py. The lab's timing tests share the machine
# with the other worker as before, when it ran only lab modules (which load it more).
# First, the lab's cached root file systems are built, at once, if missing
# (tools/lab/prebuild.py: minutes on a machine without the cache, nothing with it). Its
# failure fails nothing by itself: the lab tests then build them, and fail, saying why.
# --durations: CI's log then says where the critical path's time goes.
PARALLEL := -n 2 --dist loadgroup

test: setup
	-$(PY) -m tools.lab.prebuild
	$(PY) -m pytest tests -m "not bench" $(PARALLEL) --no-loadscope-reorder --durations=40

test-unit: setup
	$(PY) -m pytest tests -m unit $(PARALLEL)

# One worker each (program and policies are one xdist group apiece), so no -n here.
test-program test-policies test-lab: setup
	$(PY) -m pytest tests -m "$(@:test-%=%)"

# The lab: network namespaces on this machine (root), the lab stack applied to them.
# FORGE=gitea: its Gitea variant, Gitea and Woodpecker in place of GitLab (docs/lab-gitea.md).
FORGE ?= gitlab
lab: setup
	$(PY) -m tools.lab up --forge $(FORGE)

lab-down:
	$(PY) -m tools.lab down

bench: setup
	$(PY) -m tests.bench.synth_bench
	$(PY) -m tests.bench.lab_bench
	$(PY) -m tests.bench.recovery_bench
	$(PY) -m tests.bench.backup_bench
	$(PY) -m tests.bench.standin_memory_bench

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy components tools tests policies __main__.py
	$(VENV)/bin/mypy examples/consumer/__main__.py  # its own project (a second __main__)

# The offline plan: the program under Pulumi's mock monitor, compared with the lab
# applier's state (.lab/state.json for the lab). Not `pulumi preview`: no provider runs.
# Needs only the venv (no apt packages, no root): it runs in CI images as it is.
STACK ?= lab
preview: $(VENV)/.installed
	$(PY) -m tools.applier.plan --stack $(STACK)

# The running stack's health and drift, read-only over the program's own SSH connections
# (tools/doctor): exit 0 well, 1 a warning, 2 a problem, 3 it could not run; every problem
# names its repair. JSON for monitoring: make doctor DOCTOR_FLAGS=--json.
doctor: $(VENV)/.installed
	$(PY) -m tools.doctor --stack $(STACK) $(DOCTOR_FLAGS)

# A stack of your own (README, "Deploy for real"): Pulumi.$(STACK).yaml from the example
# with a fresh encryptionsalt for your passphrase (PULUMI_CONFIG_PASSPHRASE(_FILE), else
# asked twice) and FILL-IN placeholders. Never overwrites a stack file. Needs only a
# venv with requirements.txt (no dev tools, no apt packages, no root).
new-stack:
	@test "$(origin STACK)" != file || { echo "usage: make new-stack STACK=<name> (not prod: that is the example)" >&2; exit 2; }
	@test -x $(PY) || { echo "no $(PY): python3 -m venv $(VENV) && $(VENV)/bin/pip install -r requirements.txt" >&2; exit 2; }
	$(PY) -m tools.stack new $(STACK)

# Regenerate the config reference in README.md and Pulumi.yaml from components/config/.
reference: setup
	$(PY) -m tools.ci.reference
