# Two commands for a fresh machine: `make lab` (the tutorial in JupyterLab) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
# The torch requirement used for the local environment; override for a GPU build,
# e.g. `make test TORCH="torch==2.13.0+cu126"`.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: lab classroom demo docs-gif test env lab-env test-env clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

env: $(BIN)/python
	echo "$(TORCH)" > $(VENV)/torch-constraint.txt
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -c $(VENV)/torch-constraint.txt -e .

lab-env: env
	$(BIN)/pip install -q -c $(VENV)/torch-constraint.txt -e ".[lab]"

test-env: env
	$(BIN)/pip install -q -c $(VENV)/torch-constraint.txt -e ".[test,diffusers,lab]"
	$(BIN)/pip install -q --no-deps "k-diffusion==0.1.1.post1"

# The main job: JupyterLab on the quickstart tutorial (LAB_ARGS="--no-browser --ip=0.0.0.0" on a server).
LAB_ARGS ?=
lab: lab-env
	$(BIN)/python -m jupyter lab notebooks/01_quickstart.ipynb $(LAB_ARGS)

# The app alone, served by Voila for a classroom (no code shown): http://localhost:8866
# (VOILA_ARGS="--Voila.ip=0.0.0.0 --no-browser" to serve a room from a server).
VOILA_ARGS ?=
classroom: lab-env
	$(BIN)/python -m voila notebooks/app.ipynb $(VOILA_ARGS)

# A headless demo of the sampling layer and the session: writes PNGs to out/.
demo: env
	$(BIN)/python -m regional_widgets demo --out out/demo.png

# The README's GIF of a run (docs/run.gif).
docs-gif: env
	$(BIN)/python docs/make_run_gif.py docs/run.gif

test: test-env
	$(BIN)/python -m pytest -q --nbval-lax --nbval-current-env tests notebooks

clean:
	rm -rf $(VENV) out
