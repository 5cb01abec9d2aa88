# The README's commands. Each target sets up what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test goldens chromium clean

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

test: $(VENV)/.installed chromium
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

# Rewrite the golden manifests in tests/golden after an intended change; review the diff.
goldens: $(VENV)/.installed
	KBENCH_UPDATE_GOLDENS=1 $(BIN)/pytest -q tests/test_k8s_render.py -k golden

# Headless Chromium renders the HTML report in the tests (Debian's package; needs root).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

clean:
	rm -rf $(VENV) kbench-runs kbench-reports kbench-logs
