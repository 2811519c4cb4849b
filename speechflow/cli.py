"""``speechflow`` console script. Each subcommand imports only what it needs, so ``speechflow --help`` is instant
and the serving image does not need the training extras. The commands live in ``speechflow.commands``, one module
per concern (training, inference, evaluation, serving)."""

from __future__ import annotations

import argparse
import sys

from model.errors import SpeechFlowError

from .commands import evaluation, inference, serving, training
from .commands.common import DEFAULT_BUNDLE

__all__ = ["DEFAULT_BUNDLE", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (training, inference, evaluation, serving):
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["manifest"]:  # its own parser (training.data.lhotse_recipes), options and --help included
        from training.data.lhotse_recipes import main as manifest_main

        return manifest_main(argv[1:], prog="speechflow manifest")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SpeechFlowError as e:
        print(f"speechflow {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"speechflow {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
