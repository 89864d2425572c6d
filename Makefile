# The two commands a reader needs are `make book` and `make test`; both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
LINTED := vae_tutorial tests benchmarks book mutants

.PHONY: book lab test data notebooks explorer lint bench mutants portability seed-spread seed-shift clean

# Create the virtual environment once; reinstall only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,test]"
	touch $(STAMP)

# Build the static site from the chapters' stored outputs into _build/html.
book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --keep-going

# Open the chapters in JupyterLab, run by .venv's Python; it prints the URL to open.
# Pass options with LAB_ARGS, e.g. make lab LAB_ARGS="--no-browser --port 8899".
# Jupyter refuses to run as root unless told; in a container you often are root, so we tell it.
lab: $(STAMP)
	@if [ "$$(id -u)" -eq 0 ]; then \
	    echo "make lab: running as root (as in a container), so JupyterLab gets --allow-root."; \
	    root=--allow-root; \
	fi; \
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=book $$root $(LAB_ARGS)

# Fetch and verify the four MNIST files into data/MNIST/raw.
data: $(STAMP)
	$(PY) -m vae_tutorial.download

lint: $(STAMP)
	$(PY) -m ruff check $(LINTED)
	$(PY) -m ruff format --check $(LINTED)

# Lint, unit tests, every chapter through nbval, a warning-free book build, then the site in a browser.
test: $(STAMP) data lint
	$(PY) -m pytest tests --ignore=tests/site
	mkdir -p _build && $(PY) tests/tracked.py --before _build/tracked.json
	$(PY) -m pytest --nbval book --nbval-sanitize-with book/sanitize.cfg
	$(PY) tests/tracked.py --after _build/tracked.json
	rm -rf _build/html
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going
	$(PY) -m pytest tests/site

# Re-execute every chapter in place, refreshing its stored outputs; no other tracked file may change.
notebooks: $(STAMP) data
	mkdir -p _build && $(PY) tests/tracked.py --before _build/tracked.json
	$(VENV)/bin/jupyter execute --inplace --timeout=600 book/*.ipynb
	$(PY) tests/tracked.py --after _build/tracked.json

# The site's latent explorer (chapter 6): export the 2-D VAE from the cache of trained models
# (trained once if absent) into book/_static/vae-explorer-weights.js. Chapter 6 writes nothing.
explorer: $(STAMP) data
	$(PY) -c 'from vae_tutorial.explorer import BOOK_ASSET, export_book_explorer as export; \
	    print(BOOK_ASSET, "written" if export() else "unchanged (the same bytes)")'

# Time training (a result file in benchmarks/results/), then regenerate README's speed figures.
bench: $(STAMP) data
	$(PY) benchmarks/train_speed.py
	$(PY) benchmarks/report.py

# Apply each deliberate break in mutants/*.patch to a scratch copy; every one must fail a test.
# Not part of `make test`: it runs the unit tests once per break (minutes). JOBS=2 runs two at once.
mutants: $(STAMP) data
	$(PY) mutants/run.py --jobs $(JOBS)

# The unit tests and every chapter (nbval) under three CPU kernel paths: native, avx2, default (SSE).
# Not part of `make test` (it runs the suite once per path). Select with PATHS="avx2 default",
# CHAPTERS="book/07_collapse.ipynb" (or none); JOBS=2 runs two paths at once, one thread each.
PATHS ?= native avx2 default
CHAPTERS ?=
JOBS ?= 1
portability: $(STAMP) data
	$(PY) tests/portability.py --paths "$(PATHS)" --jobs $(JOBS) $(if $(CHAPTERS),--chapters "$(CHAPTERS)")

# How each chapter's checked numbers vary over seeds (shifts 0, 1, 2): benchmarks/results/ and each chapter's table.
seed-spread: $(STAMP) data
	$(PY) benchmarks/seed_spread.py $(if $(CHAPTERS),--chapters $(CHAPTERS))

# Every chapter through nbval with its seeds shifted by one, no assert edited.
seed-shift: $(STAMP) data
	$(PY) benchmarks/seed_spread.py --nbval 1 $(if $(CHAPTERS),--chapters $(CHAPTERS))

clean:
	rm -rf _build .pytest_cache .ruff_cache
