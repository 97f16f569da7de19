# Two commands on a fresh machine:
#   make demo   set up, start a server on the embedded tiny model, generate with three
#               control units while streaming previews, write the frames and the image
#   make test   set up (project venv, Blender-as-a-module venv, Krita) and run every test
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow hosts bench bench-gpu lint protos clean weights

setup: $(VENV)/.installed

# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[server,bridge,dev]"
	touch $@

demo: setup
	$(BIN)/python examples/demo.py

# A small model trained from scratch with seed 0 on synthetic scenes, with depth, normal and
# canny units (README, "Training"); not the embedded default. Resumes where it stopped;
# checkpoints and loss logs go to build/train/.
TRAINED := build/weights/tiny
weights: setup
	$(BIN)/tether train base --out $(TRAINED) --checkpoints build/train/base \
		--save-dtype float16 --threads 1 --resume
	for kind in depth normal canny; do \
		$(BIN)/tether train control --kind $$kind --models $(TRAINED)/models.toml --add \
			--out $(TRAINED)/control-$$kind --checkpoints build/train/control-$$kind \
			--hint-channels 8,16,32,64 --scenes 2000 --steps 400 --checkpoint-every 50 \
			--save-dtype float16 --threads 1 --resume || exit 1; \
	done

# The real hosts the tests drive: Blender as a Python module (own venv, numpy<2), Krita,
# and Chromium for the live viewer page.
hosts: setup
	bash clients/blender/setup_test_env.sh
	bash clients/krita/setup_test_env.sh
	bash clients/godot/setup_test_env.sh

test: setup hosts
	$(BIN)/python -m pytest -q

test-slow: setup hosts
	$(BIN)/python -m pytest -q -m slow

bench: setup
	$(BIN)/python tests/bench/engine.py

# On a CUDA machine (a CUDA build of torch in .venv): the GPU checks and benchmarks in one
# run of under 8 minutes, JSON in out/gpu/.
bench-gpu: setup
	$(BIN)/python tests/bench/gpu.py

lint: setup
	$(BIN)/ruff check .

protos: setup
	$(BIN)/python protos/generate.py

clean:
	rm -rf $(VENV) .venv-blender out dist
