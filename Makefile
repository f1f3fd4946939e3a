# Two commands for a fresh machine: `make run` (set up, then run Orchard) and `make test`
# (set up, then run the whole test suite). Both create .venv with pinned versions.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test package bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[runner,gui,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/orchard

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

package: $(STAMP)
	$(MAKE) -C packaging linux PY=$(abspath $(BIN)/python)

bench: $(STAMP)
	$(BIN)/python bench/runner_overhead.py
	$(BIN)/python bench/preview_cost.py
	$(BIN)/python bench/node_overhead.py
	$(BIN)/python -m app bench --pipeline text-to-image --model orchard-tiny/sdxl \
	  --models-dir .tiny-models --runs 20 --steps 4 --width 256 --height 256 \
	  --through direct,runner,node --flags CHANNELS_LAST,COMPILE=unet --compare --no-record

clean:
	rm -rf $(VENV) .tiny-models .pytest_cache .mypy_cache .ruff_cache
