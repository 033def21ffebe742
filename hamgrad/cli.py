"""The ``hamgrad`` command: ``hamgrad figures``, ``hamgrad ablate``, ``hamgrad spectrum``.

Each subcommand adds its parser in ``_build_parser`` and points ``func`` at a ``_cmd_*`` function below.
"""

from __future__ import annotations

import argparse
import sys


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hamgrad", description="Gradient analysis for Hamburger-style layers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ablate = sub.add_parser("ablate", help="resumable one-step vs BPTT sweep of HamNet on the global-context shapes",
                            description="Train and evaluate HamNet for every solver × gradient mode × seed (plus "
                                        "the no-ham baseline); rerun the same command to resume a killed sweep.")
    ablate.add_argument("--solvers", default="nmf,vq,cd", help="comma-separated solver names (default nmf,vq,cd)")
    ablate.add_argument("--grads", default="one-step,bptt", help="comma-separated gradient modes "
                                                                 "(default one-step,bptt)")
    ablate.add_argument("--seeds", type=int, help="seeds per combination (default 3; 1 with --quick)")
    ablate.add_argument("--steps", type=int, help="solver steps K in training (evaluation uses K + 1; default 6)")
    ablate.add_argument("--iters", type=int, help="training iterations per run")
    ablate.add_argument("--quick", action="store_true", help="tiny model and data (a smoke test, seconds per run)")
    ablate.add_argument("--no-baseline", action="store_true", help="skip the HamNet(ham=None) baseline runs")
    ablate.add_argument("--device", default="cpu", help="torch device to train on (default cpu)")
    ablate.add_argument("--out", required=True, help="the sweep's folder, e.g. runs/NAME")
    ablate.add_argument("--overwrite", action="store_true",
                        help="replace a sweep with a different config found in --out")
    ablate.set_defaults(func=_cmd_ablate)
    return parser


def _cmd_ablate(args) -> int:
    """``hamgrad ablate``: build the AblationConfig from the flags and run (or resume) the sweep."""
    from .experiments import AblationConfig, run_ablation

    def names(text: str) -> tuple:
        return tuple(t.strip() for t in text.split(",") if t.strip())

    given = {"seeds": args.seeds, "steps": args.steps, "iters": args.iters}
    fields = {k: v for k, v in given.items() if v is not None}
    fields.update(solvers=names(args.solvers), grads=names(args.grads), baseline=not args.no_baseline)
    try:
        config = (AblationConfig.quick if args.quick else AblationConfig)(**fields)
        run_ablation(config, args.out, overwrite=args.overwrite, device=args.device)
    except (ValueError, TypeError) as err:
        print(f"hamgrad ablate: error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
