# `make demo` and `make test` set everything up on a fresh machine (Python >= 3.11 and make).
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1

.PHONY: install test demo clean check-wheel

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install  # 2 workers, a test file each at a time (tests/conftest.py splits the cores between them)
	$(PY) -m pytest -q -n 2 --dist loadfile

check-wheel: install  # the wheel, installed non-editable, runs from an empty folder
	DEPS=$(VENV) bash scripts/check_wheel.sh

demo: install
	$(VENV)/bin/movierec demo

clean:  # the demo's files only; real runs in output/ stay
	rm -rf output/demo output/tiny-qwen3 data/demo
