# Cầu — the two set-up commands of the README:
#   make run    install the gateway into .venv and run it on its embedded defaults
#   make test   install what the tests need (Python and Debian packages) and run them all
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.cau-installed

.PHONY: run install test test-deps unit conformance bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/cau run $(ARGS)

test-deps: install
	bash scripts/install-test-deps.sh $(PY)

# Unit tests, then the conformance suite against this gateway.
test: test-deps
	$(PY) -m pytest tests interop_tests -q

unit: install
	$(PY) -m pytest tests -q

conformance: install
	$(VENV)/bin/cau conformance --report conformance-report

bench: install
	bash scripts/install-bench-deps.sh $(PY)
	$(PY) bench/audio_room.py
	$(PY) bench/video_room.py --ffmpeg

clean:
	rm -rf $(VENV) build *.egg-info conformance-report
