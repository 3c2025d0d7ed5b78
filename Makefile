# Two commands do everything on a fresh clone (Python 3.11, pip, no GPU needed):
#   make demo   set up .venv and run the main job
#   make test   set up .venv, lint, run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-install when the project's dependency list changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,deploy]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m monai_smalldet demo --out demo_output

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# pytest exits 5 when it collects no test: that is a failure here, as any non-zero exit.
test: lint
	$(PY) -m pytest -q

clean:
	rm -rf demo_output .pytest_cache .ruff_cache .hypothesis
