# Two commands do all set-up on a fresh clone:
#   make demo   fine-tune the offline EfficientNet-Lite0 on the ELPV solar-cell images
#   make test   run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
EXTRAS ?= cpu,lite,demo,test

.PHONY: venv demo test clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m finetune.demo

test: venv
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
