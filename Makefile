# The two commands of the README. Each creates .venv (Python 3.11) with the pinned
# dependencies of requirements.lock on first use, in one resolver run.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.nfr-installed

.PHONY: demo test lint typecheck unit bench addon clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.lock
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $@

demo: $(STAMP)
	$(BIN)/python demo.py

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .

# mypy sees the package the way Python does: a tree of links named like the installed package.
typecheck: $(STAMP)
	rm -rf build/typecheck && mkdir -p build/typecheck/neural_face_rig
	ln -s $(CURDIR)/blender_addon/__init__.py build/typecheck/neural_face_rig/__init__.py
	ln -s $(CURDIR)/contract build/typecheck/neural_face_rig/contract
	ln -s $(CURDIR)/rig build/typecheck/neural_face_rig/rig
	ln -s $(CURDIR)/neural build/typecheck/neural_face_rig/neural
	cd build/typecheck && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml \
		-p neural_face_rig.contract -p neural_face_rig.rig -p neural_face_rig.neural

unit: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/nfr bench --json out/bench.json

addon: $(STAMP)
	$(BIN)/python build_addon.py

clean:
	rm -rf build dist out
