"""The ``exportstance`` command. Each subpackage registers its own subcommands, imported only when used."""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> module that defines ``register(subparsers)``; imported lazily so `score` never loads training code.
_COMMANDS: dict[str, str] = {
    "base-model": "exportstance.model.cli",
    "train": "exportstance.training.cli",
    "evaluate": "exportstance.training.cli",
    "corpus-stats": "exportstance.training.cli",
    "score": "exportstance.serve.cli",
    "demo": "exportstance.serve.cli",
    "report": "exportstance.serve.cli",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exportstance",
        description="Stance (pro/anti/neutral) of German statements on export controls of AI chips to China.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = sorted(set(_COMMANDS.values())) if only is None else [_COMMANDS[only]]
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in _COMMANDS else None
    args = build_parser(command).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
