"""The ``medseg`` command line: a thin layer over the public API.

Each group of sub-commands lives in a module of :mod:`napari_medseg.commands` exposing
``register(subparsers)``; heavy modules (torch, SimpleITK, ...) are imported inside the commands, so
``medseg --help`` is fast. `MedsegError` becomes a one-line message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from napari_medseg import __version__
from napari_medseg.errors import CancelledError, MedsegError

COMMAND_MODULES = ("io_commands", "model_commands", "training_commands", "runtime_commands", "zoo_commands")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg", description="Medical volume segmentation (napari-medseg).")
    parser.add_argument("--version", action="version", version=f"napari-medseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"napari_medseg.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"napari_medseg.commands.{name}":
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        rc = args.func(args)
    except CancelledError as e:
        print(f"medseg: {e}", file=sys.stderr)
        return 130
    except MedsegError as e:
        print(f"medseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medseg: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
