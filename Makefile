# The two set-up commands of the README. Both create .venv, install torch 2.13.0 (CPU) unless the
# venv can already import a torch, then install specc with its dev extra.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	# test-only reference models, --no-deps: torchvision's wheel would pull a CUDA torch, and it goes off sys.path
	# into .venv/refs so that transformers cannot find it (tests/refs/torchvision_models.py explains the import);
	# ultralytics' own requirements would pull torchvision and more
	$(BIN)/python -m pip install -q --no-deps --target $(VENV)/refs torchvision==0.28.0
	$(BIN)/python -m pip install -q --no-deps ultralytics==8.4.190
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/specc build specs/transformer_encoder.yaml
	$(BIN)/specc train --force
	$(BIN)/specc export

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/build_time.py
	$(BIN)/python bench/cli_startup.py
	$(BIN)/python bench/train_loop.py
	$(BIN)/python bench/epochs.py
	$(BIN)/python bench/zoo.py
	$(BIN)/python bench/ddp.py
	$(BIN)/python bench/export.py
	$(BIN)/python bench/reliability.py
	$(BIN)/python bench/gpu.py   # CUDA only; says so and exits 0 elsewhere

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
