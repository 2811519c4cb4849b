#!/usr/bin/env bash
# The serving image's install steps, in the order the Dockerfile runs them. CI runs this same script against a
# throwaway virtualenv (`make docker-steps`), so the image recipe cannot rot unnoticed on machines without Docker.
#   PIP=...       pip to use (default: pip of the image's Python, which already has CUDA PyTorch)
#   SKIP_APT=1    skip the Debian packages (CI has installed them already)
set -euo pipefail
PIP=${PIP:-pip}
SRC=${1:-.}

if [ "${SKIP_APT:-0}" != 1 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        espeak-ng libespeak-ng1 libsndfile1 curl
    rm -rf /var/lib/apt/lists/*
fi
# torch is not a dependency of the package, so the base image's CUDA build is kept as it is.
$PIP install --no-cache-dir "${SRC}[serve,asr]"  # asr: transcripts of uploaded voices
