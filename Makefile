# The README's commands. Each target sets up what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo check test test-fast goldens chromium kubectl clean

# A virtual environment with kbench (editable), the training stack and the test tools.
# Rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# The smoke study on this machine: train every pair locally, then build the report.
demo: $(VENV)/.installed
	$(BIN)/kbench submit --grid smoke --backend local
	$(BIN)/kbench collect

# Static checks: lint and format, the layers between the wings (pyproject's importlinter
# contracts), and the type check of the whole package.
check: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# The fast tier: no process started, no server.
test-fast: check
	$(BIN)/pytest tests/unit

# Both tiers, as CI runs them; the 25 slowest tests are listed at the end.
test: check chromium kubectl
	$(BIN)/pytest --durations=25 tests/unit tests/e2e

# Rewrite the golden manifests in tests/golden after an intended change; review the diff.
goldens: $(VENV)/.installed
	KBENCH_UPDATE_GOLDENS=1 $(BIN)/pytest -q tests/unit/test_k8s_render.py -k golden

# Headless Chromium renders the HTML report in the tests (Debian's package; needs root).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# kubectl applies render's output in the Role test (Debian's package when none is installed).
kubectl:
	@command -v kubectl >/dev/null || (apt-get update -qq && apt-get install -y -qq kubernetes-client)

clean:
	rm -rf $(VENV) kbench-runs kbench-reports kbench-logs
