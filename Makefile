# Set-up, tests and the embedded-default experiment, from a fresh clone.
#   make test   venv + install + ruff + the whole test suite (what CI runs)
#   make run    venv + install + LeNet-5 on embedded MNIST through a real NNI experiment
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8080

.PHONY: setup test run clean

setup: $(VENV)/.installed

# torch/torchvision are pinned to the builds this project is tested with (<= 2.14.1).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

test: setup
	$(BIN)/ruff check .
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q

run: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/safs experiment experiment_configs/lenet5_mnist_safs.yml --port $(PORT)

clean:
	rm -rf $(VENV) workspace
