# backdoor-book: `make book` builds the site, `make test` runs the test suite.
# Both create/reuse .venv, install the project and fetch the verified MNIST files first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The install stamp is keyed on the dependency spec: editing pyproject.toml reinstalls.
SPEC_HASH := $(shell cat pyproject.toml | sha256sum | cut -c1-16)
STAMP  := $(VENV)/.install-$(SPEC_HASH)
# Notebook executions are cached by jupyter-cache, which hashes cells only: key the cache on the
# package source too (every module, subpackages included), so a change to backdoor_utils
# re-executes the chapters.
PKG_HASH := $(shell find backdoor_utils -name '*.py' | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-16)
export JUPYTER_PATH := $(CURDIR)/$(VENV)/share/jupyter
export TQDM_DISABLE := 1

.PHONY: setup data test test-full mutants book pdf browser-check browser-tools format bench clean

setup: $(STAMP) data/MNIST/raw/.verified

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (backdoor-book)" >/dev/null
	rm -f $(VENV)/.install-*
	touch $@

data/MNIST/raw/.verified: $(STAMP)
	$(BIN)/python -m backdoor_utils.core.data
	touch $@

test: setup browser-tools
	$(BIN)/python -m pytest -n auto --dist loadgroup --durations=20

test-full: setup
	$(BIN)/python -m pytest -m full --durations=20 tests
	$(BIN)/python -m pytest --nbval-lax notebooks

# Break one method at a time (an attack, a detector, a defense, the scoring) in a copy of the
# package and check that its unit tests fail; about 15 minutes, not part of `make test`.
mutants: setup
	$(BIN)/python -m tests.mutants

# Sphinx re-reads only the pages whose source changed, so the saved environment (.doctrees) goes
# with the cache: every chapter is read, hence executed, again. The hash is recorded as soon as
# both are dropped, so an interrupted build keeps the chapters it executed (jupyter-cache) and the
# next `make book` resumes with the others.
book: setup
	@if [ "$$(cat _build/.pkg-hash 2>/dev/null)" != "$(PKG_HASH)" ]; then \
	  echo "backdoor_utils changed: dropping cached notebook executions and the saved pages"; \
	  rm -rf _build/.jupyter_cache _build/.doctrees; \
	  mkdir -p _build && echo $(PKG_HASH) > _build/.pkg-hash; fi
	@log="$${BACKDOOR_ARTIFACTS:-artifacts}/computed.log"; mkdir -p "$$(dirname "$$log")" && touch "$$log"; \
	  echo "every cache entry computed (model, fine-tune, detection, screening, trigger reversal, matrix cell) is logged as it finishes (time, seconds, entry) in $$log:"; \
	  start=$$(date +%s); tail -n 0 -f "$$log" & follow=$$!; \
	  $(BIN)/jupyter-book build . -W --keep-going; status=$$?; kill $$follow; \
	  echo "where this build spent its time (also in _build/summary.json and _build/build-times.png):"; \
	  $(BIN)/python -m backdoor_utils.tooling.build_summary --since $$start \
	    --json _build/summary.json --figure _build/build-times.png || echo "the build summary failed (the build itself did not)"; \
	  exit $$status

pdf: book browser-tools
	$(BIN)/python -m backdoor_utils.tooling.browser pdf

browser-check: book browser-tools
	$(BIN)/python -m backdoor_utils.tooling.browser check

# Debian's chromium (driven by Playwright, never downloaded) and poppler-utils (reads the PDF).
browser-tools:
	@if ! command -v chromium >/dev/null || ! command -v pdfimages >/dev/null; then \
	  if ! command -v apt-get >/dev/null; then \
	    echo "error: chromium and poppler-utils are needed and apt-get is not available here;" \
	         "install them with your system's package manager (or set CHROMIUM=/path/to/chromium)"; exit 1; fi; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing chromium and poppler-utils with apt-get"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium poppler-utils; \
	fi

# The notebooks, the package and the tests are formatted to the book's code column (88
# characters); `make test` checks it, and runs ruff's checks on the package and the tests.
format: setup
	$(BIN)/python -m black --line-length 88 --ipynb notebooks
	$(BIN)/python -m black backdoor_utils tests

bench: setup
	$(BIN)/python -m backdoor_utils.tooling.bench

clean:
	rm -rf _build runs
