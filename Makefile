# Set-up, tests and the embedded-default experiment, from a fresh clone.
#   make test   venv + install + ruff + the whole test suite (what CI runs), then the Python 3.13 suite
#   make test-py313   the test suite on Python 3.13 in a Debian trixie root (root only; .ci/py313)
#   make run    venv + install + LeNet-5 on embedded MNIST through a real NNI experiment
#   make run-py313   the same on Python 3.13 in that root; the manager is stopped at the end
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8080
# what `make test` runs on Python 3.13 (NNI's manager, the trial entry point, the tuner, the export,
# imports): the whole suite on both does not fit CI's 30 minutes. `make test-py313` runs it all.
PY313_TESTS ?= tests/test_experiment_nni.py tests/test_trial_channel.py tests/test_tuner_dispatcher.py \
	tests/test_export.py tests/test_forkserver.py tests/test_startup.py tests/test_layers.py tests/test_install.py \
	tests/test_borrowed.py
# ... less the multi-fidelity variants of the nnictl tests (the same NNI calls as their LAHC and
# one-budget twins, which 3.13 runs; `make test-py313` runs them too)
PY313_SELECT ?= -k 'not asha and not promot and not ladders'

.PHONY: setup test test-py313 run run-py313 clean

setup: $(VENV)/.installed

# torch/torchvision are pinned to the builds this project is tested with (<= 2.14.1).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# .ci/py313 exits 77 (after saying why) where it cannot run: not root, no debootstrap.
test: setup
	$(BIN)/ruff check .
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q
	.ci/py313 $(PY313_TESTS) $(PY313_SELECT) || [ $$? -eq 77 ]

test-py313:
	.ci/py313

run: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/safs experiment experiment_configs/lenet5_mnist_safs.yml --port $(PORT)

run-py313:
	.ci/py313 -- sh -c 'safs experiment experiment_configs/lenet5_mnist_safs.yml --port $(PORT); \
		status=$$?; nnictl stop --all; exit $$status'

clean:
	rm -rf $(VENV) workspace
