# Two entry points a new user needs: `make serve` (the main job) and `make test`. Both create .venv and install what
# they need; running them again installs nothing new.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
EXTRAS ?= train,serve,eval,dev
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install system-deps test lint serve pretrain-demo clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $@

install: system-deps $(STAMP)

# espeak-ng and libsndfile come from Debian; skipped when already present (or when not root).
system-deps:
	@if ! command -v espeak-ng >/dev/null || ! ldconfig -p | grep -q libsndfile; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq espeak-ng libespeak-ng1 libsndfile1 sox >/dev/null; \
		else echo "install espeak-ng, libespeak-ng1, libsndfile1 and sox with your package manager"; fi; \
	fi

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

# Until the HTTP server lands, the main job is the offline pipeline on a generated example.
serve: install
	$(BIN)/speechflow demo

clean:
	rm -rf $(VENV) .pytest_cache
