# The two commands of the README. Each creates .venv (Python 3.11) with the pinned
# dependencies of requirements.lock on first use, in one resolver run.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.nfr-installed

# The Blender version matrix: the Blender-side tests (pytest marker "bpy") run on bpy 4.2 LTS,
# 4.5 LTS and the latest 5.x (5.3: Python 3.13 wheels only) in .venv-blender-<version>, besides
# 5.0 in the main venv (with 'unit'). Those venvs hold bpy, numpy, pillow and pytest only
# (requirements-blender-<version>.lock), no torch: the worker runs in the main venv, set as the
# add-on's External Python like a studio's own environment (NFR_WORKER_PYTHON).
BLENDER_VERSIONS := 4.2 4.5 5.3
# The first python3.13 that runs (a pyenv shim may exist without the version being active).
PYTHON313 ?= $(shell for p in python3.13 $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13); do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null && { command -v $$p; break; }; done)
BLENDER_PYTHON_4.2 := $(PYTHON)
BLENDER_PYTHON_4.5 := $(PYTHON)
BLENDER_PYTHON_5.3 := $(PYTHON313)
# bpy 5.3 needs Python 3.13: a machine without it runs the rest of the matrix and says so;
# CI (CI=true) insists on the whole matrix.
ifeq ($(PYTHON313),)
ifneq ($(CI),true)
BLENDER_VERSIONS := $(filter-out 5.3,$(BLENDER_VERSIONS))
$(warning no Python 3.13 found: bpy 5.3 is left out of the Blender matrix (set PYTHON313))
endif
endif
# Every Blender-side file runs on every version: whatever a test needs from torch or scipy
# (tiny models, face-model .mat files, reference images) runs in the worker's Python
# (tests/fixtures/worker_python.py).
BPY_TESTS := $(sort $(wildcard tests/test_*_bpy.py)) tests/test_extension_install.py \
	tests/test_build_addon.py

.PHONY: demo test lint typecheck unit blender-matrix bench addon clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.lock
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $@

demo: $(STAMP)
	$(BIN)/python demo.py

test: lint typecheck unit blender-matrix

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

.venv-blender-%/.nfr-installed: requirements-blender-%.lock pyproject.toml
	@test -n "$(BLENDER_PYTHON_$*)" || { echo "no Python for bpy $* (python3.13: set PYTHON313)"; exit 2; }
	test -x $(@D)/bin/python || $(BLENDER_PYTHON_$*) -m venv $(@D)
	$(@D)/bin/python -m pip install --disable-pip-version-check -q -r $<
	$(@D)/bin/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation \
		--ignore-requires-python -e .
	touch $@

blender-matrix: $(STAMP) $(BLENDER_VERSIONS:%=.venv-blender-%/.nfr-installed)
	@for version in $(BLENDER_VERSIONS); do \
		start=$$(date +%s); echo "== bpy $$version"; \
		NFR_WORKER_PYTHON=$(CURDIR)/$(BIN)/python OMP_NUM_THREADS=1 \
			.venv-blender-$$version/bin/python -m pytest -q -m bpy $(BPY_TESTS) || exit 1; \
		echo "== bpy $$version: $$(( $$(date +%s) - start )) s"; \
	done

bench: $(STAMP)
	$(BIN)/nfr bench --json out/bench.json

addon: $(STAMP)
	$(BIN)/python build_addon.py

clean:
	rm -rf build dist out
