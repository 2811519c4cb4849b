#!/usr/bin/env bash
# The real-speech corpus from Debian's Asterisk prompt packages (training/data/asterisk.py): installs the packages
# (root), takes the Spanish and French transcript files from their .debs (those two packages conflict with the
# 8 kHz es/fr prompt packages, so they are unpacked rather than installed), then writes OUT/{train,valid,test}_cuts
# with 16 kHz FLAC audio and OUT/music. Allison Smith (English and Spanish) is the test split: never train on it.
#   scripts/real-speech-corpus.sh [OUT]      (default: data/real)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-data/real}
BIN=${BIN:-.venv/bin}
PACKAGES="asterisk-core-sounds-en-g722 asterisk-core-sounds-en asterisk-core-sounds-es-g722 \
asterisk-core-sounds-fr-g722 asterisk-core-sounds-it-g722 asterisk-core-sounds-it asterisk-core-sounds-ru-g722 \
asterisk-core-sounds-ru asterisk-prompt-es-co asterisk-prompt-fr-armelle asterisk-prompt-it-menardi-wav \
asterisk-moh-opsound-g722"
missing=$(for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then echo "please install: $missing" >&2; exit 2; fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
DOCS="$OUT/.transcripts"
if [ ! -d "$DOCS/usr/share/doc/asterisk-core-sounds-fr" ]; then
    mkdir -p "$DOCS/debs"
    (cd "$DOCS/debs" && apt-get download -qq asterisk-core-sounds-es asterisk-core-sounds-fr)
    for deb in "$DOCS"/debs/*.deb; do dpkg-deb -x "$deb" "$DOCS"; done
fi
"$BIN/speechflow" manifest asterisk "$OUT" --doc /usr/share/doc --doc "$DOCS/usr/share/doc"
