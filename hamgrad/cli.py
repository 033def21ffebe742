"""The ``hamgrad`` command: ``hamgrad figures``, ``hamgrad ablate``, ``hamgrad spectrum``.

Each subcommand adds its parser in ``_build_parser`` and points ``func`` at a ``_cmd_*`` function below.
"""

from __future__ import annotations

import argparse
import sys


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hamgrad", description="Gradient analysis for Hamburger-style layers.")
    parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
