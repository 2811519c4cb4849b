"""``speechflow manifest``: CutSets for real corpora, from local copies (nothing is downloaded).

Corpora with a Lhotse recipe go through it: ``librispeech``, ``libritts``, ``librilight``, ``ljspeech`` and ``vctk``
write one ``<part>_cuts.jsonl.gz`` per corpus part (``train-clean-100``, ``small``, ...) into OUT_DIR, with absolute
audio paths, and Lhotse's supervisions (text, speaker). The layouts Lhotse has no recipe for are ours
(`training.data.corpora`): ``tree`` (any folder of audio), ``voicebank``, ``librimix`` (a metadata CSV). ``convert``
turns a manifest of the JSONL format used before CutSets into one; ``combine`` shuffles several into one
(`training.data.manifest.combine_cuts`), to train on two corpora at once.

    speechflow manifest librilight /data/libri-light data/librilight/ --jobs 8
    speechflow manifest convert old/train.jsonl data/train_cuts.jsonl.gz
    speechflow manifest combine data/both/train_cuts.jsonl.gz data/corpus/train_cuts.jsonl.gz \
        data/rich/train_cuts.jsonl.gz
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lhotse import CutSet

from .cuts import ManifestError, write_cuts
from .manifest import combine_cuts, speed_perturbed_cuts

log = logging.getLogger(__name__)


def _librispeech(corpus: Path, out: Path, jobs: int, parts: Sequence[str] | None):
    from lhotse.recipes import prepare_librispeech

    return prepare_librispeech(corpus, dataset_parts=parts or "auto", num_jobs=jobs)


def _libritts(corpus: Path, out: Path, jobs: int, parts: Sequence[str] | None):
    from lhotse.recipes import prepare_libritts

    return prepare_libritts(corpus, dataset_parts=parts or "all", num_jobs=jobs)


def _librilight(corpus: Path, out: Path, jobs: int, parts: Sequence[str] | None):
    from lhotse.recipes import prepare_librilight

    return _only(prepare_librilight(corpus, num_jobs=jobs), parts)


def _ljspeech(corpus: Path, out: Path, jobs: int, parts: Sequence[str] | None):
    from lhotse.recipes import prepare_ljspeech

    return {"all": prepare_ljspeech(corpus)}


def _vctk(corpus: Path, out: Path, jobs: int, parts: Sequence[str] | None):
    from lhotse.recipes import prepare_vctk

    return {"all": prepare_vctk(corpus)}


def _only(manifests: dict, parts: Sequence[str] | None) -> dict:
    return {k: v for k, v in manifests.items() if not parts or k in parts}


RECIPES: dict[str, Callable] = {"librispeech": _librispeech, "libritts": _libritts, "librilight": _librilight,
                                "ljspeech": _ljspeech, "vctk": _vctk}


def prepare(corpus_name: str, corpus: str | os.PathLike, out: str | os.PathLike, jobs: int = 1,
            parts: Sequence[str] | None = None) -> dict[str, int]:
    """Run Lhotse's recipe on a local copy -> OUT/<part>_cuts.jsonl.gz per part; returns part -> cuts written."""
    corpus, out = Path(os.path.abspath(corpus)), Path(os.path.abspath(out))  # absolute audio paths in the cuts
    if not corpus.is_dir():
        raise ManifestError(f"{corpus_name} directory not found: {corpus}")
    try:
        manifests = RECIPES[corpus_name](corpus, out, jobs, parts)
    except (AssertionError, FileNotFoundError, ValueError) as e:  # what the recipes raise on an unexpected tree
        raise ManifestError(f"{corpus}: not a {corpus_name} tree Lhotse's recipe can read ({e})") from e
    counts: dict[str, int] = {}
    for part, m in sorted(manifests.items()):
        if not m or m.get("recordings") is None or not len(m["recordings"]):
            continue
        cuts = CutSet.from_manifests(recordings=m["recordings"], supervisions=m.get("supervisions"))
        write_cuts(out / f"{part}_cuts.jsonl.gz", cuts)
        counts[part] = len(cuts)
    if not counts:
        raise ManifestError(f"{corpus}: Lhotse's {corpus_name} recipe found no audio")
    return counts


# ------------------------------------------------------------------------------------------------------------ CLI


def build_parser(prog: str = "speechflow manifest") -> argparse.ArgumentParser:
    from .corpora import AUDIO_EXTS

    parser = argparse.ArgumentParser(prog=prog, description="Write Lhotse CutSets for real speech corpora.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in RECIPES:
        p = sub.add_parser(name, help=f"{name} through Lhotse's recipe -> OUT_DIR/<part>_cuts.jsonl.gz")
        p.add_argument("root", type=Path, help="the corpus's local copy")
        p.add_argument("outdir", type=Path)
        p.add_argument("--parts", nargs="+", help="corpus parts to prepare (default: all found)")
        p.add_argument("--jobs", type=int, default=1, help="parallel jobs of the recipe")
    tree = sub.add_parser("tree", help="any directory tree of audio (speaker = first folder level)")
    tree.add_argument("root", type=Path)
    tree.add_argument("out", type=Path, help="CutSet to write (.jsonl.gz)")
    tree.add_argument("--min-duration", type=float, default=0.5, help="skip shorter files (seconds)")
    tree.add_argument("--ext", nargs="+", default=list(AUDIO_EXTS), help="audio extensions to include")
    vb = sub.add_parser("voicebank", help="VoiceBank-DEMAND -> OUTDIR/train_cuts.jsonl.gz, OUTDIR/test_cuts.jsonl.gz")
    vb.add_argument("root", type=Path)
    vb.add_argument("outdir", type=Path)
    mix = sub.add_parser("librimix", help="a LibriMix metadata CSV (mixtures as written by its scripts)")
    mix.add_argument("csv", type=Path)
    mix.add_argument("out", type=Path, help="CutSet to write (.jsonl.gz)")
    mix.add_argument("--root", type=Path, default=None, help="base of relative CSV paths (default: the CSV's folder)")
    conv = sub.add_parser("convert", help="a JSONL manifest of the format before CutSets -> a CutSet")
    conv.add_argument("old", type=Path)
    conv.add_argument("out", type=Path, help="CutSet to write (.jsonl.gz)")
    ast = sub.add_parser("asterisk", help="real speech from Debian's asterisk-core-sounds-*-g722 and asterisk-prompt-* "
                         "packages -> OUTDIR/{train,valid,test}_cuts.jsonl.gz (16 kHz FLAC; Allison Smith is the "
                         "test split) and OUTDIR/music/ from asterisk-moh-opsound-*")
    ast.add_argument("outdir", type=Path)
    ast.add_argument("--sounds", type=Path, default=None, help="the packages' sounds folder (default: "
                     "/usr/share/asterisk/sounds)")
    ast.add_argument("--doc", type=Path, action="append", default=None, help="a folder holding "
                     "asterisk-core-sounds-<lang>/core-sounds-<lang>.txt.gz transcripts (repeatable; default: "
                     "/usr/share/doc)")
    ast.add_argument("--moh", type=Path, default=None,
                     help="the music-on-hold folder (default: /usr/share/asterisk/moh)")
    comb = sub.add_parser("combine", help="several CutSets -> one, shuffled (ids prefixed by their folder's name)")
    comb.add_argument("out", type=Path, help="CutSet to write (.jsonl.gz)")
    comb.add_argument("inputs", type=Path, nargs="+", help="cut manifests (.jsonl.gz), two or more")
    comb.add_argument("--seed", type=int, default=0, help="of the shuffle")
    speed = sub.add_parser("speed", help="a copy of every cut per speed factor, each a new speaker "
                           "(<speaker>-sp<factor>): more voices from a few real talkers")
    speed.add_argument("source", type=Path, help="cut manifest (.jsonl.gz)")
    speed.add_argument("out", type=Path, help="CutSet to write (.jsonl.gz)")
    speed.add_argument("--factors", type=float, nargs="+", default=[0.9, 1.1],
                       help="speed factors (pitch and tempo move together; default 0.9 1.1)")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "speechflow manifest") -> int:
    from . import corpora
    from .convert import convert_manifest

    args = build_parser(prog).parse_args(argv)
    try:  # every command -> {manifest written: cuts in it}
        if args.command in RECIPES or args.command == "voicebank":
            parts = (prepare(args.command, args.root, args.outdir, jobs=args.jobs, parts=args.parts)
                     if args.command in RECIPES else corpora.voicebank_demand_manifest(args.root, args.outdir))
            written = {args.outdir / f"{part}_cuts.jsonl.gz": n for part, n in parts.items()}
        elif args.command == "tree":
            written = {args.out: corpora.audio_tree_manifest(args.root, args.out, exts=tuple(args.ext),
                                                             min_duration=args.min_duration)}
        elif args.command == "librimix":
            written = {args.out: corpora.librimix_manifest(args.csv, args.out, root=args.root)}
        elif args.command == "asterisk":
            written = {args.outdir / f"{split}_cuts.jsonl.gz": n for split, n in _asterisk(args).items()}
        elif args.command == "combine":
            written = {args.out: combine_cuts(args.inputs, args.out, seed=args.seed)}
        elif args.command == "speed":
            written = {args.out: speed_perturbed_cuts(args.source, args.out, args.factors)}
        else:
            written = {args.out: convert_manifest(args.old, args.out)}
        print(", ".join(f"wrote {n} cuts to {path}" for path, n in written.items()))
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _asterisk(args: argparse.Namespace) -> dict[str, int]:
    from . import asterisk, real_corpus

    utterances = asterisk.list_utterances(sounds_dir=args.sounds or asterisk.SOUNDS_DIR,
                                          doc_dirs=tuple(args.doc or (asterisk.DOC_DIR,)))
    return real_corpus.write_corpus(args.outdir, utterances, moh_dir=args.moh or asterisk.MOH_DIR)


if __name__ == "__main__":
    sys.exit(main())
