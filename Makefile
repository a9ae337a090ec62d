# The two commands a newcomer types: `make demo` and `make test`. Each sets up what it needs in a
# virtual environment under the repo (.venv, git-ignored), reinstalling only when pyproject.toml
# changed, so both are idempotent.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
WORKERS ?= 2   # processes for nbdev-test and pytest (this machine and CI: 2 cores)
# Each of those processes gets its share of the cores for torch's and BLAS's thread pools, unless OMP_NUM_THREADS is set:
# two processes that each start a pool as large as the machine fight over the cores (nbdev-test here: 7 min 50 s, 5 min 6 s
# with a thread each).
THREADS ?= $(shell $(PYTHON) -c 'import os; print(max(1, (os.cpu_count() or 1) // $(strip $(WORKERS))))')
# And OpenMP threads that wait passively, unless the user chose how they wait (runner.OPENMP_WAIT_CHOICES): the two processes
# always run side by side, and a pool that spins beside another process slows both (`python -m cxr_nb.bench openmp`: 2-thread
# training 3-5x slower beside a second process with libgomp's default spin than with passive waiters). Whatever code raises its
# own pool to 2 threads (stand-in builds train with zoo.BUILD_THREADS) runs beside the other worker: pytest here took 7 min 12 s
# with passive waiters against 8 min 48 s without (tests/test_zoo.py 84 s against 205 s), in one checkout, one after the other.
WAITING := $$(test -n "$$OMP_WAIT_POLICY$$GOMP_SPINCOUNT$$KMP_BLOCKTIME" || echo OMP_WAIT_POLICY=PASSIVE)
SHARE   := env $(WAITING) OMP_NUM_THREADS=$${OMP_NUM_THREADS:-$(THREADS)} MKL_NUM_THREADS=$${MKL_NUM_THREADS:-$(THREADS)} OPENBLAS_NUM_THREADS=$${OPENBLAS_NUM_THREADS:-$(THREADS)}
STAMP  := $(VENV)/.installed
PARAMS ?= $(wildcard params/*/demo.yaml) $(wildcard params/*/shortcut.yaml)   # the demos, and the shortcut variant
# The stand-ins those demos use (tests/test_params.py checks this list against them); `cxr-nb zoo build` alone builds all five
DEMO_STANDINS ?= densenet121-res224-nih densenet121-res224-pc clip-vit-b32

.PHONY: install demo results docs gallery test sync-check lint nbtest pytest export clean-outputs help

help:
	@echo "make demo     install, build the SynthCXR stand-ins the demos use if missing, run every params/*/demo.yaml and shortcut.yaml"
	@echo "              in study order (outputs/), then write outputs/index.html"
	@echo "make test     install, then nbdev-clean/nbdev-export sync checks, ruff, nbdev-test and pytest"
	@echo "make results  rewrite the README's results table from the demo's outputs/*/*/metrics.json"
	@echo "make gallery  redraw nbs/images/synthcxr_gallery.jpg, the README's SynthCXR films (synth.gallery)"
	@echo "make docs     the documentation site of the library notebooks, into _docs/ (installs quarto-cli from PyPI)"

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), f"cxr-nb needs Python >= 3.10, $(PYTHON) is {sys.version.split()[0]}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"   # byte-compiled here: with PYTHONDONTWRITEBYTECODE set, nothing is cached later
	touch $(STAMP)

# the stand-in weights the demos use first (built once, minutes; seconds when cached), then the studies in notebook order (completed runs
# with the same parameters are skipped), then the index page, written even when a study failed (it says which and why)
demo: install
	$(BIN)/cxr-nb zoo build $(DEMO_STANDINS)
	$(BIN)/cxr-nb run $(PARAMS); status=$$?; $(BIN)/cxr-nb report --quiet || exit 1; exit $$status

results: install
	$(BIN)/cxr-nb report --quiet --readme README.md

gallery: install
	mkdir -p nbs/images
	$(BIN)/python -c 'import cv2; from cxr_nb.synth import gallery; assert cv2.imwrite("nbs/images/synthcxr_gallery.jpg", gallery(), [cv2.IMWRITE_JPEG_QUALITY, 88]), "could not write nbs/images/synthcxr_gallery.jpg"'

# nbdev-docs renders with Quarto: the quarto-cli package downloads Quarto's binary from GitHub when it is installed.
# The study notebooks are left out: they are rendered, executed, in outputs/index.html.
docs: install
	$(BIN)/python -m pip install --quiet quarto-cli
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/nbdev-docs --skip-folder-re '^([_.]|studies$$)'

# nbdev's own CI: cleaning and exporting must change nothing in the tree.
sync-check: install
	@before="$$(git status --porcelain -uall; git diff | md5sum)"; \
	$(BIN)/nbdev-clean && $(BIN)/nbdev-export || exit 1; \
	after="$$(git status --porcelain -uall; git diff | md5sum)"; \
	if [ "$$before" != "$$after" ]; then \
	  echo "nbdev-clean / nbdev-export changed the tree: notebooks unclean or library out of sync."; \
	  echo "Run them, review 'git diff' and commit the result."; git status --short; exit 1; \
	fi; echo "notebooks clean, library in sync"

# pyflakes rules over the library, the notebooks and the tests (settings in pyproject.toml)
lint: install
	$(BIN)/ruff check cxr_nb nbs tests

nbtest: install
	$(SHARE) $(BIN)/nbdev-test --n-workers $(WORKERS)

# one test file per worker (pytest-xdist): each file's module fixtures are built once
pytest: install
	$(SHARE) $(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile tests

test: sync-check lint nbtest pytest

export: install
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean
