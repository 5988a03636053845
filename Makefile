# Two commands set everything up on a fresh machine:
#   make demo   -- create .venv, install CPU torch 2.13.0 first, then mechwork; run the main job
#                  (prints the report, writes dashboards/modadd-113.html and the README's example post as
#                  a small site in dashboards/site/)
#   make test   -- the same set-up plus Debian's chromium (for the browser test), then the test suite
#                  (two workers; tests marked slow are left out: `make test-all` runs them too)
#   make lint   -- ruff and mypy (mypy keeps its cache in .mypy_cache); CI (.ci/run) runs it before make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mechwork-installed

.PHONY: setup browser demo test test-all lint bench plotly-bundle clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# CPU torch first: a bare `torch` requirement with no torch installed pulls a multi-GB CUDA build.
# compileall: an editable install leaves mechwork's own modules uncompiled, and where PYTHONDONTWRITEBYTECODE is
# set every command would compile them again (0.5-1 s of a cold `mechwork dashboard`).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,ray,figures]'
	$(BIN)/python -m compileall -q -x node_modules mechwork
	touch $@

setup: $(STAMP)

# Debian's chromium for the dashboard browser test; without it (not root, say) that test skips, except in CI.
browser:
	@.ci/install-browser || echo "warning: no chromium: the browser test will skip (and fail under CI=1)" >&2

demo: setup
	$(BIN)/mechwork demo

# worksteal: an idle worker takes queued tests from the busy one, so a few long tests do not serialise the end
test: setup browser
	$(BIN)/python -m pytest -n 2 --dist worksteal --durations=20

test-all: setup browser
	$(BIN)/python -m pytest -n 2 --dist worksteal --durations=20 -m "slow or not slow"

lint: setup
	$(BIN)/ruff check mechwork tests benchmarks experiments
	$(BIN)/mypy mechwork

bench: setup
	$(BIN)/python benchmarks/bench_fastpath.py
	$(BIN)/python benchmarks/bench_grok.py
	$(BIN)/python benchmarks/bench_dashboard.py
	$(BIN)/python benchmarks/bench_patching.py

# rebuild the shipped partial plotly.js (mechwork/data/js/) from plotly.js's npm sources; needs node and npm
plotly-bundle:
	cd mechwork/dashboard/plotlyjs && npm ci && node build.mjs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
