# Two commands do everything on a fresh clone (Python 3.11, pip, no GPU needed):
#   make demo   set up .venv and run the main job
#   make test   set up .venv, lint, run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint venv clean map system-tools

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-install when the project's dependency list changes. The GUI builds of ultralytics/OpenCV
# that older setups installed share files with the headless ones: removed first.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip uninstall --quiet --yes ultralytics opencv-python 2>/dev/null || true
	$(PY) -m pip install --quiet -e '.[dev,deploy,onnx]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m monai_smalldet demo --out demo_output

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# DICOM validators the tests run (dicom3tools, DCMTK): apt-get installs them when absent;
# with CI=true a missing one fails the run (see .ci/system-tools).
system-tools:
	.ci/system-tools

# pytest exits 5 when it collects no test: that is a failure here, as any non-zero exit.
test: lint system-tools
	$(PY) -m pytest -q

# The MONAI Application Package (needs Docker with buildx and internet; see apps/README.md).
# SDK 4.x is packaged by holoscan-cli 4.2's `holoscan package`, kept in its own venv.
MODEL_DIR ?= bundle/models
MAP_TAG   ?= monai-smalldet-mammo:0.1.0
map:
	@command -v docker >/dev/null || { echo "make map needs Docker (with buildx); see apps/README.md"; exit 1; }
	test -x .venv-map/bin/holoscan || { $(PYTHON) -m venv .venv-map && \
		.venv-map/bin/pip install 'holoscan-cli==4.2.0' 'monai-deploy-app-sdk==4.0.0'; }
	rm -rf build/map_lib && mkdir -p build/map_lib && cp -r monai_smalldet build/map_lib/
	.venv-map/bin/holoscan package apps/mammo_detect --config apps/mammo_detect/app.yaml \
		--models $(MODEL_DIR) --add build/map_lib --platform x86_64 \
		--sdk monai-deploy --sdk-version 4.0.0 --tag $(MAP_TAG)

clean:
	rm -rf demo_output .pytest_cache .ruff_cache .hypothesis
