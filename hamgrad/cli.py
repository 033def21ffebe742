"""The ``hamgrad`` command: ``hamgrad figures``, ``hamgrad ablate``, ``hamgrad spectrum``, ``hamgrad cost``,
``hamgrad --version``.

Each subcommand adds its parser in ``_build_parser`` and points ``func`` at a ``_cmd_*`` function below.
"""

from __future__ import annotations

import argparse
import sys


def _build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="hamgrad", description="Gradient analysis for Hamburger-style layers.")
    parser.add_argument("--version", action="version", version=f"hamgrad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    figures = sub.add_parser("figures", help="regenerate the paper's six figures (PNG + JSON)",
                             description="Compute, draw and save every figure of the paper's analysis; resumable: "
                                         "a figure already in --out at the same size is only redrawn.")
    figures.add_argument("--out", help="output folder (default figures, or figures_quick with --quick)")
    figures.add_argument("--quick", action="store_true", help="the small CI size (seconds per figure)")
    figures.add_argument("--only", help="comma-separated subset of: " + ", ".join(_figure_names()))
    figures.add_argument("--ablation-dir", help="sweep folder behind figures 4-6 (default runs/paper-ablation"
                                                "[-quick]; a folder from `hamgrad ablate` is read as it is)")
    figures.add_argument("--force", action="store_true", help="recompute figures that already exist in --out (also "
                                                              "those of the other size, which are otherwise refused)")
    figures.set_defaults(func=_cmd_figures)

    ablate = sub.add_parser("ablate", help="resumable gradient-mode sweep of HamNet on the global-context shapes",
                            description="Train and evaluate HamNet for every solver × gradient mode × block × K × "
                                        "seed (plus the no-ham baseline and, with --contexts, other context modules "
                                        "in the head), in this process or on Ray (--workers, --address); rerun the "
                                        "same command to resume a killed sweep.")
    ablate.add_argument("--solvers", default="nmf,vq,cd", help="comma-separated solver names (default nmf,vq,cd)")
    ablate.add_argument("--grads", default="one-step-coef,one-step,bptt",
                        help="comma-separated gradient modes (default one-step-coef,one-step,bptt; one-step-coef is "
                             "the paper's one-step as the official code computes it)")
    ablate.add_argument("--blocks", default="v2", help="comma-separated Hamburger blocks: v2 (the official HamNet's) "
                                                       "and/or v1 (the paper's) (default v2)")
    ablate.add_argument("--seeds", type=int, help="seeds per combination (default 3; 1 with --quick)")
    ablate.add_argument("--steps", help="solver steps K in training, or a comma-separated list of K to sweep, e.g. "
                                        "6,12,24 (evaluation uses K for v2, K + 1 for v1; default 6)")
    ablate.add_argument("--iters", type=int, help="training iterations per run")
    ablate.add_argument("--quick", action="store_true", help="tiny model and data (a smoke test, seconds per run)")
    ablate.add_argument("--no-baseline", action="store_true", help="skip the HamNet(ham=None) baseline runs")
    ablate.add_argument("--contexts", default="", help="comma-separated non-ham context modules to train too: sa "
                                                       "(self-attention), da (dual attention), a2 (double "
                                                       "attention), apc (adaptive pyramid context), dm (dynamic "
                                                       "filters), acf (attentional class feature), gap (global "
                                                       "pooling)")
    ablate.add_argument("--task", choices=("global", "regional"), default="global",
                        help="the data: global (every shape labelled with the image's majority family, "
                             "GlobalContextShapes; the default) or regional (every shape labelled with its own "
                             "region's majority, RegionalShapes)")
    ablate.add_argument("--image-size", type=int, help="height and width of the images (default 64; 32 with --quick)")
    ablate.add_argument("--train-samples", type=int, help="training items (default 1000; 16 with --quick); the next "
                                                          "200 (8 with --quick) evaluate")
    ablate.add_argument("--regions", type=int, help="regions per image of the regional task (default 2)")
    ablate.add_argument("--shapes-per-region", help="shapes per region of the regional task, N or LOW,HIGH "
                                                    "(default 3,4)")
    ablate.add_argument("--separation", type=float, help="least RGB distance between two region tints of the "
                                                         "regional task (default 0.15)")
    ablate.add_argument("--device", default="cpu", help="torch device to train on (default cpu)")
    ablate.add_argument("--out", required=True, help="the sweep's folder, e.g. runs/NAME")
    ablate.add_argument("--overwrite", action="store_true",
                        help="replace a sweep with a different config found in --out")
    ablate.add_argument("--workers", type=int, default=1,
                        help="runs trained at once, as Ray tasks (default 1: in this process, without Ray)")
    ablate.add_argument("--address", help="attach to a running Ray cluster: 'auto' or HOST:PORT (default: a local "
                                          "Ray instance when --workers > 1); --out must be on a shared filesystem")
    ablate.add_argument("--cpus-per-run", type=float, default=1, help="CPUs (torch threads) per run on Ray (default 1)")
    ablate.add_argument("--gpus-per-run", type=float, default=0, help="GPUs per run on Ray (default 0)")
    ablate.add_argument("--retries", type=int, default=1,
                        help="tries again a run that raises or whose worker dies, this many times, before recording "
                             "it as failed (default 1)")
    ablate.set_defaults(func=_cmd_ablate)

    spectrum = sub.add_parser("spectrum", help="Jacobian spectra of one solver configuration",
                              description="Top-k eigenvalues of dF/dh at h^K (the state after the last step) and "
                                          "top-k singular values of dy/dx through the K unrolled steps (h^0 held "
                                          "fixed), matrix-free, on uniform random input X ~ U(0, 1) drawn from "
                                          "--seed; each with its time and matvec count. Any registered solver "
                                          "works: --import a module or file that calls hamgrad.register_solver, or "
                                          "install a package with an entry point in the group hamgrad.solvers.")
    spectrum.add_argument("--solver", default="nmf", help="registered solver name (default nmf)")
    spectrum.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                          help="import MODULE first (a module name, found from the current directory too, or a path "
                               "to a .py file); it registers its solvers with hamgrad.register_solver. Repeatable")
    spectrum.add_argument("--solver-arg", dest="solver_args", action="append", default=[], metavar="KEY=VALUE",
                          help="a keyword argument of the solver's constructor, e.g. inv_t=10 (VALUE read as int, "
                               "float, true/false, else str). Repeatable")
    spectrum.add_argument("--d", type=int, default=512, help="channels d (default 512)")
    spectrum.add_argument("--n", type=int, default=4096, help="positions n (default 4096)")
    spectrum.add_argument("--rank", type=int, help="rank r, for solvers whose constructor takes one (default 64)")
    spectrum.add_argument("--steps", type=int, default=6, help="unrolled steps K (default 6)")
    spectrum.add_argument("-k", type=int, default=6, help="how many eigenvalues and singular values (default 6)")
    spectrum.add_argument("--device", default="cpu", help="torch device (default cpu)")
    spectrum.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="default float32")
    spectrum.add_argument("--seed", type=int, default=0, help="seed of the input, h^0 and start vectors (default 0)")
    spectrum.add_argument("--tol", type=float, help="relative residual tolerance (default 1e-4 in float32, 1e-8 "
                                                    "in float64)")
    spectrum.set_defaults(func=_cmd_spectrum)

    cost = sub.add_parser("cost", help="parameters, MACs, memory and time of context modules (the paper's Table 3)",
                          description="Measure self-attention, A², the hams and global pooling on one "
                                      "(batch, channels, S, S) map per side S: parameters, MACs (FlopCounterMode: "
                                      "matrix products and convolutions only), peak memory and median time of a "
                                      "training step and of inference; print the table, SA / ham ratios beside the "
                                      "paper's, and log-log slopes against n = S² (see hamgrad.cost).")
    cost.add_argument("--contexts", default=",".join(_default_contexts()),
                      help=f"comma-separated module names (default {','.join(_default_contexts())})")
    cost.add_argument("--sizes", default="64,128", help="comma-separated square map sides (default 64,128)")
    cost.add_argument("--channels", type=int, default=512, help="channels of the map (default 512)")
    cost.add_argument("--d", type=int, default=512, help="inner channels d (default 512)")
    cost.add_argument("--rank", type=int, default=64, help="rank r of the hams and A² (default 64)")
    cost.add_argument("--steps", type=int, default=6, help="ham steps K in training (inference K + 1; default 6)")
    cost.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    cost.add_argument("--repeats", type=int, default=3, help="timed calls per median (default 3)")
    cost.add_argument("--sa-math", action="store_true",
                      help="also measure self-attention with SDPA's math kernel (materialises the n x n matrix)")
    cost.add_argument("--fit-from", type=int, default=32, help="smallest side in the slope fit (default 32)")
    cost.add_argument("--device", default="cpu", help="torch device (default cpu)")
    cost.add_argument("--quick", action="store_true", help="a smoke-test size (overrides those flags): sides 16,32, "
                                                           "64 channels, d 64, r 8, one repeat, slopes from side 16")
    cost.add_argument("--out", help="folder for context_cost.json, .md and, with two or more sizes, the scaling "
                                    "figure context_cost.png")
    cost.set_defaults(func=_cmd_cost)
    return parser


def _default_contexts() -> tuple:
    from .cost import DEFAULT_CONTEXTS

    return DEFAULT_CONTEXTS


def _figure_names() -> tuple:
    from .figures import available

    return available()


def _cmd_figures(args) -> int:
    """``hamgrad figures``: run (or resume) :func:`hamgrad.figures.run_all` and print where each figure went."""
    import time

    from .figures import run_all

    names = _figure_names() if not args.only else tuple(n.strip() for n in args.only.split(",") if n.strip())
    unknown = [n for n in names if n not in _figure_names()]
    if unknown:
        print(f"hamgrad figures: error: unknown figure(s) {unknown}; choose from {list(_figure_names())}",
              file=sys.stderr)
        return 2
    out = args.out or ("figures_quick" if args.quick else "figures")
    start = time.perf_counter()
    results = run_all(out, quick=args.quick, names=names, ablation_dir=args.ablation_dir, force=args.force)
    for name, result in results.items():
        print(f"{name:>20}: {out}/{name}.png, {out}/{name}.json (computed in {result['seconds']:.1f} s)")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_ablate(args) -> int:
    """``hamgrad ablate``: build the AblationConfig from the flags and run (or resume) the sweep."""
    from .experiments import AblationConfig, run_ablation

    def names(text: str) -> tuple:
        return tuple(t.strip() for t in text.split(",") if t.strip())

    def steps(text: str):
        try:
            ks = tuple(int(t) for t in names(text))
        except ValueError:
            raise ValueError(f"--steps must be an int or comma-separated ints such as 6,12,24, got {text!r}") from None
        return ks[0] if len(ks) == 1 and "," not in text else ks

    def shapes(text: str):
        try:
            counts = tuple(int(t) for t in names(text))
        except ValueError:
            counts = ()
        if len(counts) not in (1, 2):
            raise ValueError(f"--shapes-per-region must be N or LOW,HIGH, got {text!r}")
        return counts if len(counts) == 2 else counts[0]

    regional = {"regions": args.regions, "separation": args.separation,
                "shapes_per_region": None if args.shapes_per_region is None else shapes(args.shapes_per_region)}
    given_regional = [f"--{k.replace('_', '-')}" for k, v in regional.items() if v is not None]
    if given_regional and args.task != "regional":
        raise ValueError(f"{', '.join(given_regional)}: only for the regional task (add --task regional)")
    given = {"seeds": args.seeds, "steps": None if args.steps is None else steps(args.steps), "iters": args.iters,
             "image_size": args.image_size, "train_samples": args.train_samples, "task": args.task, **regional}
    fields = {k: v for k, v in given.items() if v is not None}
    fields.update(solvers=names(args.solvers), grads=names(args.grads), blocks=names(args.blocks),
                  baseline=not args.no_baseline, contexts=names(args.contexts))
    config = (AblationConfig.quick if args.quick else AblationConfig)(**fields)
    run_ablation(config, args.out, overwrite=args.overwrite, device=args.device, workers=args.workers,
                 address=args.address, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                 retries=args.retries)  # main() reports its errors
    return 0


def _import_user_module(spec: str) -> None:
    """``--import SPEC``: import a module by name (the current directory on the path, as with ``python -m``)
    or execute a ``.py`` file as the module named by its stem. Raises ValueError with a one-line message."""
    import importlib
    import importlib.util
    import os
    from pathlib import Path

    is_file = spec.endswith(".py") or os.sep in spec
    if is_file:
        path = Path(spec).resolve()
        if not path.is_file():
            raise ValueError(f"--import {spec}: no such file")
        loaded = sys.modules.get(path.stem)
        if loaded is not None and Path(getattr(loaded, "__file__", None) or "").resolve() != path:
            raise ValueError(f"--import {spec}: a module named {path.stem!r} is already imported (rename the file)")
    try:
        if is_file:
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[path.stem] = module
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(path.stem, None)
                raise
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            importlib.import_module(spec)
    except ModuleNotFoundError as err:
        raise ValueError(f"--import {spec}: no module named {err.name!r} (give a module importable from the current "
                         f"directory or a path to a .py file)") from err
    except Exception as err:  # the user's module failed while it ran: one line, not a traceback
        raise ValueError(f"--import {spec}: importing it raised {type(err).__name__}: {err}") from err


def _parse_solver_args(items: list) -> dict:
    """``--solver-arg KEY=VALUE`` items as keyword arguments; VALUE read as int, float, true/false, else str."""
    kwargs = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"--solver-arg {item!r}: expected KEY=VALUE with KEY a Python identifier")
        if key in kwargs:
            raise ValueError(f"--solver-arg {key} given twice")
        value = text.strip()
        for parse in (int, float):
            try:
                value = parse(value)
                break
            except ValueError:
                pass
        else:
            value = {"true": True, "false": False}.get(value.lower(), value)
        kwargs[key] = value
    return kwargs


def _entry_point_solvers() -> dict:
    """The ``hamgrad.solvers`` entry points of the installed packages, by lower-case name (not loaded)."""
    from importlib.metadata import entry_points

    return {ep.name.lower(): ep for ep in entry_points(group="hamgrad.solvers")}


def _build_solver(name: str, rank: int | None, solver_args: list, builtins: set):
    """The solver ``name`` built with ``--solver-arg``s and ``--rank`` (64 by default for the built-in hams; a
    user's solver gets a rank only when ``--rank`` is given). Returns ``(solver, parameters)``."""
    from .solvers import available_solvers, get_solver, register_solver

    kwargs = _parse_solver_args(solver_args)
    key = name.lower()
    if key not in available_solvers():  # not registered yet: an installed package's entry point, if one has the name
        plugins = _entry_point_solvers()
        if key in plugins:
            try:
                loaded = plugins[key].load()  # a class, or a module that registers its solvers when imported
            except Exception as err:  # a broken plugin: one line, not a traceback
                raise ValueError(f"--solver {name}: loading entry point {plugins[key].value!r} raised "
                                 f"{type(err).__name__}: {err}") from err
            if key not in available_solvers() and isinstance(loaded, type):
                register_solver(key, loaded)
        if key not in available_solvers():
            names = sorted(set(available_solvers()) | set(plugins))
            raise ValueError(f"unknown --solver {name!r}; available: {', '.join(names)} (--import a module that "
                             f"calls hamgrad.register_solver to add yours)")
    if "rank" in kwargs and rank is not None:
        raise ValueError("give the rank once: --rank or --solver-arg rank=..., not both")
    if rank is not None or (key in builtins and "rank" not in kwargs):
        kwargs["rank"] = 64 if rank is None else rank
    try:
        solver = get_solver(key, **kwargs)
    except TypeError as err:
        raise TypeError(f"--solver {name} with arguments {kwargs}: {err}") from err
    hparams = getattr(solver, "hparams", None)
    return solver, hparams() if callable(hparams) else kwargs


def _cmd_spectrum(args) -> int:
    """``hamgrad spectrum``: eigenvalues of ∂F/∂h at h^K and singular values of ∂y/∂x, with times and matvecs."""
    import time

    import torch

    from ._checks import check_device
    from .analysis import eigvals, jacobian, svdvals, unrolled_jacobian
    from .fixed_point import FixedPoint
    from .solvers import available_solvers

    try:
        builtins = set(available_solvers())
        for spec in args.imports:
            _import_user_module(spec)
        solver, params = _build_solver(args.solver, args.rank, args.solver_args, builtins)
        device, dtype = check_device(args.device), getattr(torch, args.dtype)
        if min(args.d, args.n) < 1:
            raise ValueError(f"--d and --n must be >= 1, got d={args.d}, n={args.n}")
        g = torch.Generator(device=device).manual_seed(args.seed)
        x = torch.rand(args.d, args.n, generator=g, device=device, dtype=dtype)
        start = time.perf_counter()
        h0 = solver.init(x, generator=g)
        J_y = unrolled_jacobian(solver, x, h0, steps=args.steps)
        h_K = FixedPoint.from_solver(solver).unroll(x, h0, args.steps)[-1]
        J_h = jacobian(solver, h_K, x, wrt="h")
        setup = time.perf_counter() - start
        eig = eigvals(J_h, k=args.k, tol=args.tol, generator=torch.Generator().manual_seed(args.seed))
        sv = svdvals(J_y, k=args.k, tol=args.tol, generator=torch.Generator().manual_seed(args.seed))
    except (ValueError, TypeError, RuntimeError) as err:
        print(f"hamgrad spectrum: error: {err}", file=sys.stderr)
        return 2

    print(f"solver {args.solver}: {type(solver).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in params.items())
          + ")")
    print(f"input X ~ U(0,1) of shape ({args.d}, {args.n}), {args.dtype} on {device}, K={args.steps}, "
          f"seed {args.seed}; trajectory and linearisations {setup:.2f} s")

    def header(what, op, spec):
        status = "converged" if spec.converged else "NOT converged"
        print(f"\n{what}  [{op.shape[0]} x {op.shape[1]}]: {spec.method}, {spec.matvecs} matvecs, "
              f"{spec.seconds:.2f} s, tol {spec.tol:.0e}, {status}")

    header(f"top-{args.k} eigenvalues of dF/dh at h^{args.steps}", J_h, eig)
    for i, (lam, res) in enumerate(zip(eig.values.tolist(), eig.residuals.tolist()), 1):
        print(f"  {i:>3}  {lam.real:+.6f} {lam.imag:+.6f}j   |λ| {abs(lam):.6f}   residual {res:.1e}")
    header(f"top-{args.k} singular values of dy/dx", J_y, sv)
    for i, (sigma, res) in enumerate(zip(sv.values.tolist(), sv.residuals.tolist()), 1):
        print(f"  {i:>3}  {sigma:.6f}   residual {res:.1e}")
    return 0


def _cmd_cost(args) -> int:
    """``hamgrad cost``: :func:`hamgrad.cost.compare_contexts`, printed as markdown and optionally saved."""
    from . import cost

    try:
        names = tuple(t.strip() for t in args.contexts.split(",") if t.strip())
        sides = tuple(int(t) for t in args.sizes.split(",") if t.strip())
        size = dict(channels=args.channels, d=args.d, rank=args.rank, repeats=args.repeats)
        if args.quick:
            sides, size, args.fit_from = (16, 32), dict(channels=64, d=64, rank=8, repeats=1), 16
        result = cost.compare_contexts(names, sides, fit_from=args.fit_from ** 2, progress=True,
                                       sdpa_backends=(None, "math") if args.sa_math else (None,), batch=args.batch,
                                       steps=(args.steps, args.steps + 1), device=args.device, **size)
    except (ValueError, TypeError, RuntimeError) as err:
        message = f"--sizes must be comma-separated ints, got {args.sizes!r}" if "invalid literal" in str(err) else err
        print(f"hamgrad cost: error: {message}", file=sys.stderr)
        return 2
    print(cost.to_markdown(result))
    if args.out:
        from .plots import context_scaling

        fig = context_scaling(result) if len(sides) > 1 else None
        for path in cost.save(result, args.out, fig=fig):
            print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``hamgrad`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Failures end in one line ``hamgrad CMD: error: ...`` on stderr and status 2 (bad arguments, files or folders
    named in the message); Ctrl-C ends with "interrupted: resume with the same command" and status 130. Warnings
    print as one line ``hamgrad CMD: warning: ...``.
    """
    import warnings

    parser = _build_parser()
    args = parser.parse_args(argv)
    prefix = f"hamgrad {args.command}"
    show = warnings.showwarning
    warnings.showwarning = lambda message, *_, **__: print(f"{prefix}: warning: {message}", file=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted: resume with the same command", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as err:  # OSError: a path that cannot be created, read or written
        print(f"{prefix}: error: " + " ".join(str(err).split()), file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = show


if __name__ == "__main__":
    sys.exit(main())
