# spanlib: two commands for a fresh machine.
#   make book   create .venv, install spanlib with its extras, build the HTML book (PROFILE=quick)
#   make test   install, run the unit tests, build the book strictly offline and check it in Chromium
# `make help` lists the other targets: the steps of these two, and `make book-student`
# for an edition without solutions.

PYTHON ?= python3.11
VENV ?= .venv
# SPANLIB_PROFILE in the environment picks the profile too (`SPANLIB_PROFILE=paper make book`).
PROFILE ?= $(or $(SPANLIB_PROFILE),quick)
BIN := $(VENV)/bin
# The torch releases pinned for a reproducible install; Colab keeps its own (pyproject has lower bounds).
TORCH ?= torch==2.14.1 torchvision==0.29.1
BOOK_FLAGS := -W -n --keep-going
# Idle OpenMP threads sleep instead of spinning: on a busy machine spinning made two threads
# slower than one (benchmarks/README.md).
export OMP_WAIT_POLICY ?= PASSIVE

# jupyter-book's execution cache recognises a notebook by its code cells alone, and Sphinx rereads
# only changed sources, so outputs would outlive a change to spanlib. The stamp of an output folder
# drops both (the execution cache and Sphinx's saved environment) when spanlib changes.
LIBRARY := $(shell find spanlib -name '*.py')

.PHONY: help venv book book-student book-offline chromium unit browser test clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

venv: $(VENV)/.installed  ## create .venv and install spanlib with the test and book extras

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,book]" $(TORCH)
	touch $@

_build/%/.library-stamp: $(LIBRARY)
	rm -rf _build/$*/_build/.jupyter_cache _build/$*/_build/.doctrees
	mkdir -p _build/$* && touch $@

book: venv _build/$(PROFILE)/.library-stamp  ## build the book for PROFILE into _build/PROFILE/_build/html
	SPANLIB_PROFILE=$(PROFILE) SPANLIB_RESULTS=$(CURDIR)/_build/$(PROFILE)/results \
		$(BIN)/jupyter-book build . --path-output _build/$(PROFILE) $(BOOK_FLAGS)
	@echo "Book: _build/$(PROFILE)/_build/html/index.html"

book-student: venv _build/student/.library-stamp  ## build the student edition (solutions removed) into _build/student/_build/html
	BOOK_HIDE_SOLUTIONS=1 SPANLIB_PROFILE=$(PROFILE) SPANLIB_RESULTS=$(CURDIR)/_build/$(PROFILE)/results \
		$(BIN)/jupyter-book build . --path-output _build/student $(BOOK_FLAGS)
	@echo "Student book: _build/student/_build/html/index.html"

book-offline: venv _build/offline/.library-stamp  ## strict quick build with local MathJax and widget scripts, for the browser test
	$(BIN)/python tools/fetch_offline_assets.py
	BOOK_OFFLINE=1 SPANLIB_PROFILE=quick SPANLIB_RESULTS=$(CURDIR)/_build/offline/results \
		$(BIN)/jupyter-book build . --path-output _build/offline $(BOOK_FLAGS)

chromium:  ## install Debian's Chromium for the browser test (needs root or sudo)
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

unit: venv  ## run the library tests and the notebook hygiene test
	$(BIN)/pytest tests --ignore=tests/browser

browser: chromium  ## open every page of the offline build in headless Chromium, screenshots in _build/offline/screenshots
	SPANLIB_REQUIRE_BROWSER=1 $(BIN)/pytest tests/browser

test: unit book-offline browser  ## run every check, the strict quick book build included

clean:  ## remove build outputs (keeps .venv)
	rm -rf _build .pytest_cache .hypothesis results
