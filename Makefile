# The README quickstart: `make demo` and `make test`, each from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools  # setuptools: cluster/setup_node.sh builds with it

# Stamps re-install only when the package's dependencies change (the install is editable).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

# The cluster extra too: the launcher test installs pagmfr on its nodes from this environment.
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,cluster]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/pagmfr demo --out runs/demo
	$(BIN)/python studies/ablation.py --preset demo --name demo \
		--storage-path runs/demo/study --tracking-uri sqlite:///runs/demo/mlflow.db
	$(BIN)/pagmfr report --study demo --tracking-uri sqlite:///runs/demo/mlflow.db --out runs/demo/report
	cat runs/demo/report/components.md
	$(BIN)/pagmfr demo --check-table runs/demo/report/components.md --readme README.md

test: $(VENV)/.installed-test
	tests/install_packages.sh
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-test
	$(BIN)/ruff check pagmfr tests benchmarks studies
	$(BIN)/ruff format --check pagmfr tests benchmarks studies

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/metrics.py
	$(BIN)/python benchmarks/generator.py
	$(BIN)/python benchmarks/harness.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/report.py
	$(BIN)/python benchmarks/data_check.py
	$(BIN)/python benchmarks/startup.py

clean:
	rm -rf runs .pytest_cache
