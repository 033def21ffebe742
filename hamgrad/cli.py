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
    _add_solver_options(figures, None)  # (a sweep of a user's solver behind figures 4-6)
    figures.set_defaults(func=_cmd_figures)

    ablate = sub.add_parser("ablate", help="resumable gradient-mode sweep of HamNet on a procedural segmentation task",
                            description="Train and evaluate HamNet for every solver × gradient mode × block × K × "
                                        "seed (plus the no-ham baseline and, with --contexts, other context modules "
                                        "in the head), in this process or on Ray (--workers, --address); rerun the "
                                        "same command to resume a killed sweep.")
    ablate.add_argument("--solvers", default="nmf,vq,cd", help="comma-separated solver names (default nmf,vq,cd)")
    _add_solver_options(ablate, "every solver's constructor (besides the rank)")
    ablate.add_argument("--grads", default="one-step-coef,one-step,bptt",
                        help="comma-separated gradient modes (default one-step-coef,one-step,bptt; one-step-coef is "
                             "the paper's one-step as the official code computes it)")
    ablate.add_argument("--blocks", default="v2", help="comma-separated Hamburger blocks: v2 (the official HamNet's) "
                                                       "and/or v1 (the paper's) (default v2)")
    ablate.add_argument("--seeds", type=int, help="seeds per combination (default 3; 1 with --quick)")
    ablate.add_argument("--steps", help="solver steps K in training, or a comma-separated list of K to sweep, e.g. "
                                        "6,12,24 (evaluation uses K for v2, K + 1 for v1; default 6)")
    ablate.add_argument("--iters", type=int, help="training iterations per run")
    ablate.add_argument("--rank", type=int, help="rank r of the hams and of A²'s attention maps (default 8; "
                                                 "4 with --quick)")
    ablate.add_argument("--quick", action="store_true", help="tiny model and data (a smoke test, seconds per run)")
    ablate.add_argument("--probe-every", type=int, help="every N iterations, compare each ham run's gradient with "
                                                        "BPTT's on its training batch (encoder, lower bread) and "
                                                        "estimate rho(J_K); stored in the run's row (default 50; 0: "
                                                        "no probes)")
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
    ablate.add_argument("--encoder-from", help="SWEEP/RUN_ID: every run starts from the encoder of that finished run "
                                               "of another sweep (e.g. runs/table1-regional/sa_seed0) instead of "
                                               "drawing its own")
    ablate.add_argument("--freeze-encoder", action="store_true",
                        help="with --encoder-from: keep that encoder as it is, so that only the head trains")
    ablate.add_argument("--device", default="cpu", help="torch device to train on (default cpu)")
    ablate.add_argument("--out", required=True, help="the sweep's folder, e.g. runs/NAME")
    ablate.add_argument("--overwrite", action="store_true",
                        help="delete the sweep found in --out when its config differs (more seeds, solvers, modes, K "
                             "or contexts of the same settings only add runs to it, without --overwrite)")
    ablate.add_argument("--repair", action="store_true",
                        help="rebuild a missing or damaged config.json in --out from these flags, checked against "
                             "the sweep's checkpoints and rows, keeping its finished runs")
    ablate.add_argument("--workers", type=int, default=1,
                        help="runs trained at once, as Ray tasks (default 1: in this process, without Ray)")
    ablate.add_argument("--address", help="attach to a running Ray cluster: 'auto' or HOST:PORT (default: a new local "
                                          "Ray instance of its own when --workers > 1, never a cluster already on the "
                                          "machine); --out must be on a shared filesystem")
    ablate.add_argument("--cpus-per-run", type=float, default=1, help="CPUs (torch threads) per run on Ray (default 1)")
    ablate.add_argument("--gpus-per-run", type=float, default=0, help="GPUs per run on Ray (default 0)")
    ablate.add_argument("--retries", type=int, default=1,
                        help="tries again a run that raises or whose worker dies, this many times, before recording "
                             "it as failed (default 1)")
    ablate.add_argument("--verbose", action="store_true", help="show Ray's own start-up lines, warnings and worker "
                                                               "output (hidden by default)")
    ablate.set_defaults(func=_cmd_ablate)

    spectrum = sub.add_parser("spectrum", help="Jacobian spectra of one solver configuration",
                              description="Top-k eigenvalues of dF/dh at h^K (the state after the last step) and "
                                          "top-k singular values of dy/dx through the K unrolled steps (h^0 held "
                                          "fixed), matrix-free, on uniform random input X ~ U(0, 1) drawn from "
                                          "--seed; each with its time and matvec count. Any registered solver "
                                          "works: --import a module or file that calls hamgrad.register_solver, or "
                                          "install a package with an entry point in the group hamgrad.solvers.")
    spectrum.add_argument("--solver", default="nmf", help="registered solver name (default nmf)")
    _add_solver_options(spectrum, "the solver's constructor")
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
                          description="Measure the context modules (every registered one and the hams: the paper's "
                                      "Table 3 and more) on one (batch, channels, S, S) map per side S: parameters "
                                      "(in M = 2^20, the paper's unit, and in 10^6), MACs (FlopCounterMode: matrix "
                                      "products and convolutions only) of the training forward and of inference, "
                                      "peak memory, and the time of a training step and of inference in interleaved "
                                      "rounds (a new random order each round); print the table, each module's "
                                      "ratios to the NMF ham (times: median [min-max] of the per-round ratios), "
                                      "Table 3 beside the paper's numbers at 128 x 128, and log-log slopes against "
                                      "n = S^2. Conventions (see hamgrad.cost): the hams run the official training "
                                      "path (--grad one-step-coef), the row a2 is Table 3's A^2 (c_m = c_n = d), "
                                      "a2-r hamgrad's A^2 with r maps.")
    cost.add_argument("--contexts", default=",".join(_default_contexts()),
                      help=f"comma-separated row names (default {','.join(_default_contexts())})")
    cost.add_argument("--sizes", default="64,128", help="comma-separated square map sides (default 64,128)")
    cost.add_argument("--channels", type=int, default=512, help="channels of the map (default 512)")
    cost.add_argument("--d", type=int, default=512, help="inner channels d (default 512)")
    cost.add_argument("--rank", type=int, default=64, help="rank r of the hams and of a2-r (default 64)")
    cost.add_argument("--steps", type=int, default=6,
                      help="ham steps K in training (inference K + 1 in the v1 block, K in v2; default 6)")
    cost.add_argument("--grad", default="one-step-coef",
                      help="the hams' gradient mode (default one-step-coef: the official code's training path; "
                           "one-step reads out the state's D C)")
    cost.add_argument("--block", default="v1", choices=("v1", "v2"),
                      help="the hams' Hamburger block (default v1, Table 3's)")
    cost.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    cost.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds (default 3)")
    cost.add_argument("--sa-math", action="store_true",
                      help="also measure self-attention with SDPA's math kernel (materialises the n x n matrix)")
    cost.add_argument("--fit-from", type=int, default=32, help="smallest side in the slope fit (default 32)")
    cost.add_argument("--device", default="cpu", help="torch device (default cpu)")
    cost.add_argument("--quick", action="store_true", help="a smoke-test size (overrides those flags): sides 16,32, "
                                                           "64 channels, d 64, r 8, one round, slopes from side 16")
    cost.add_argument("--out", help="folder for context_cost.json, .md and, with two or more sizes, the scaling "
                                    "figure context_cost.png (an older one is removed with one size); a table of the "
                                    "other size (quick or full) there is refused unless --force")
    cost.add_argument("--force", action="store_true", help="replace a cost table of the other size in --out")
    cost.add_argument("--ablation-dir", help="instead of the map sizes: accuracy per unit of cost of a context sweep "
                                             "(hamgrad ablate --contexts ...), each module's mIoU beside its cost as "
                                             "the head of that sweep's HamNet (the sweep fixes the sizes, K, mode and "
                                             "block; --repeats and --device apply); --out gets context_ablation.json, "
                                             ".md and .png")
    _add_solver_options(cost, None)  # (a user's solver among --contexts)
    cost.set_defaults(func=_cmd_cost)
    return parser


def _add_solver_options(parser: argparse.ArgumentParser, what: str | None) -> None:
    """``--import`` and (unless ``what`` is ``None``) ``--solver-arg``, shared by the commands that build solvers by
    name."""
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (a module name, found from the current directory too, or a path to "
                             "a .py file); it registers its solvers with hamgrad.register_solver. Repeatable")
    if what is not None:
        parser.add_argument("--solver-arg", dest="solver_args", action="append", default=[], metavar="KEY=VALUE",
                            help=f"a keyword argument of {what}, e.g. inv_t=10 (VALUE read as int, float, true/false, "
                                 f"else str). Repeatable")


def _default_contexts() -> tuple:
    from .cost import DEFAULT_CONTEXTS

    return DEFAULT_CONTEXTS


def _figure_names() -> tuple:
    from .figures import available

    return available()


def _cmd_figures(args) -> int:
    """``hamgrad figures``: run (or resume) :func:`hamgrad.figures.run_all` and print where each figure went."""
    import time
    from pathlib import Path

    from .figures import get, run_all

    for spec in args.imports:
        _import_user_module(spec)
    if args.only is None:
        names = _figure_names()
    else:
        names = tuple(dict.fromkeys(n.strip() for n in args.only.split(",") if n.strip()))
        if not names:
            raise ValueError(f"--only names no figure (got {args.only!r}); give comma-separated names from "
                             f"{', '.join(_figure_names())}, or leave --only out for all of them")
    unknown = [n for n in names if n not in _figure_names()]
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; choose from {list(_figure_names())}")
    if args.out is not None and not args.out.strip():
        raise ValueError("--out must name a folder, got an empty string")
    if args.ablation_dir is not None and any(get(n).from_sweep for n in names):
        folder = Path(args.ablation_dir)
        if not (folder / "config.json").is_file():
            default = "runs/paper-ablation" + ("-quick" if args.quick else "")
            raise ValueError(f"--ablation-dir {args.ablation_dir} holds no sweep (no config.json): give the folder of "
                             f"a sweep (hamgrad ablate --out), or leave --ablation-dir out to run the built-in sweep "
                             f"in {default}")
    out = args.out or ("figures_quick" if args.quick else "figures")
    start = time.perf_counter()
    redrawn = []
    results = run_all(out, quick=args.quick, names=names, ablation_dir=args.ablation_dir, force=args.force,
                      redrawn=redrawn)
    for name, result in results.items():
        how = "redrawn from its JSON" if name in redrawn else f"computed in {result['seconds']:.1f} s"
        print(f"{name:>20}: {out}/{name}.png, {out}/{name}.json ({how})")
    print(f"done in {time.perf_counter() - start:.1f} s" + (" (quick size: smoke-test figures, marked as such)"
                                                           if args.quick else ""))
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

    for spec in args.imports:
        _import_user_module(spec)

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
             "rank": args.rank, "probe_every": args.probe_every, "image_size": args.image_size,
             "train_samples": args.train_samples, "task": args.task, **regional}
    fields = {k: v for k, v in given.items() if v is not None}
    fields.update(solvers=names(args.solvers), grads=names(args.grads), blocks=names(args.blocks),
                  baseline=not args.no_baseline, contexts=names(args.contexts),
                  solver_args=_parse_solver_args(args.solver_args), encoder_from=args.encoder_from,
                  freeze_encoder=args.freeze_encoder)
    config = (AblationConfig.quick if args.quick else AblationConfig)(**fields)
    run_ablation(config, args.out, overwrite=args.overwrite, repair=args.repair, device=args.device,
                 workers=args.workers, address=args.address, cpus_per_run=args.cpus_per_run,
                 gpus_per_run=args.gpus_per_run, retries=args.retries, verbose=args.verbose)  # main() reports errors
    return 0


def _import_user_module(spec: str) -> None:
    """``--import SPEC``: import a module by name (the current directory on the path, as with ``python -m``)
    or execute a ``.py`` file as the module named by its stem. Raises ValueError with a one-line message."""
    import importlib
    import os
    from pathlib import Path

    from ._modules import module_from_source

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
            module_from_source(path.stem, path.read_text(encoding="utf-8"), str(path))
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


def _build_solver(name: str, rank: int | None, solver_args: list, builtins: set):
    """The solver ``name`` built with ``--solver-arg``s and ``--rank`` (64 by default for the built-in hams; a
    user's solver gets a rank only when ``--rank`` is given). Returns ``(solver, parameters)``."""
    import warnings

    from .solvers import available_solvers, get_solver, solver_factory

    kwargs = _parse_solver_args(solver_args)
    key = name.lower()
    if key not in available_solvers():
        raise ValueError(f"unknown --solver {name!r}; available: {', '.join(available_solvers())} (--import a module "
                         f"that calls hamgrad.register_solver to add yours)")
    solver_factory(key)  # an installed package's entry point is loaded here (a broken one: one line naming it)
    if "rank" in kwargs and rank is not None:
        raise ValueError("give the rank once: --rank or --solver-arg rank=..., not both")
    if rank is not None or (key in builtins and "rank" not in kwargs):
        kwargs["rank"] = 64 if rank is None else rank
    try:
        solver = get_solver(key, **kwargs)
    except Exception as err:  # the constructor is the user's: whatever it raises is one line
        raise (TypeError if isinstance(err, TypeError) else ValueError)(
            f"--solver {name} with arguments {kwargs}: {type(err).__name__}: {err}") from err
    hparams = getattr(solver, "hparams", None)
    params = hparams() if callable(hparams) else kwargs
    if not isinstance(params, dict):
        warnings.warn(f"{type(solver).__name__}.hparams() returned a {type(params).__name__}, not a dict: printing "
                      f"the constructor arguments instead", stacklevel=2)
        params = kwargs
    return solver, params


def _available_memory(device) -> int | None:
    """Bytes that can still be allocated on ``device`` (CUDA: free device memory; CPU: the kernel's MemAvailable),
    or ``None`` where this cannot be told."""
    if device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        except (OSError, StopIteration, ValueError):
            return None
    return None


def _check_fits(nbytes: int, what: str, device) -> None:
    """Refuse, before allocating it, ``what`` (``nbytes``, a lower bound) when the device has less memory free."""
    free = _available_memory(device)
    if free is not None and nbytes > free:
        raise ValueError(f"{what} need at least {nbytes / 2**30:.3g} GiB, more than the {free / 2**30:.3g} GiB "
                         f"available on {device}")


def _cmd_spectrum(args) -> int:
    """``hamgrad spectrum``: eigenvalues of ∂F/∂h at h^K and singular values of ∂y/∂x, with times and matvecs."""
    import time

    import torch

    from ._checks import check_device
    from .analysis import eigvals, jacobian, svdvals, unrolled_jacobian
    from .fixed_point import FixedPoint, as_state
    from .solvers import Solver, available_solvers

    try:
        builtins = set(available_solvers())
        for spec in args.imports:
            _import_user_module(spec)
        solver, params = _build_solver(args.solver, args.rank, args.solver_args, builtins)
        device, dtype = check_device(args.device), getattr(torch, args.dtype)
        if min(args.d, args.n) < 1 or args.steps < 1 or args.k < 1:
            raise ValueError(f"--d, --n, --steps and -k must be >= 1, got d={args.d}, n={args.n}, "
                             f"steps={args.steps}, k={args.k}")
        if isinstance(solver, Solver) and solver.rank > min(args.d, args.n):  # the hams' own check, before X exists
            raise ValueError(f"rank={solver.rank} must be <= min(--d, --n) = min({args.d}, {args.n})")
        itemsize = torch.empty((), dtype=dtype).element_size()
        _check_fits(args.d * args.n * itemsize, f"the input X ({args.d} x {args.n}, {args.dtype})", device)
    except (ValueError, TypeError, RuntimeError) as err:
        print(f"hamgrad spectrum: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    try:
        g = torch.Generator(device=device).manual_seed(args.seed)
        x = torch.rand(args.d, args.n, generator=g, device=device, dtype=dtype)
        start = time.perf_counter()
        h0 = solver.init(x, generator=g)
        state = sum(t.numel() * t.element_size() for t in as_state(h0, name="the solver's init(x)"))
        _check_fits((args.steps + 2) * state, f"--steps {args.steps}: the K + 1 states of the trajectory", device)
        J_y = unrolled_jacobian(solver, x, h0, steps=args.steps)
        h_K = FixedPoint.from_solver(solver).unroll(x, h0, args.steps)[-1]
        J_h = jacobian(solver, h_K, x, wrt="h")
        setup = time.perf_counter() - start
        eig = eigvals(J_h, k=args.k, tol=args.tol, generator=torch.Generator().manual_seed(args.seed))
        sv = svdvals(J_y, k=args.k, tol=args.tol, generator=torch.Generator().manual_seed(args.seed))
    except (ValueError, TypeError, RuntimeError) as err:
        print(f"hamgrad spectrum: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except Exception as err:  # anything else a user's solver raises: one line naming it, not a traceback
        print(f"hamgrad spectrum: error: {type(err).__name__} while computing with solver {args.solver!r}: "
              f"{' '.join(str(err).split())}", file=sys.stderr)
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
    import json
    from pathlib import Path

    from . import cost

    for spec in args.imports:
        _import_user_module(spec)
    if args.out is not None and not args.out.strip():
        raise ValueError("--out must name a folder, got an empty string")
    if args.ablation_dir is not None:
        return _cost_of_ablation(args)
    if args.out is not None:
        saved = Path(args.out) / "context_cost.json"
        if saved.is_file() and not args.force:  # checked before anything is measured
            try:
                quick = json.loads(saved.read_text(encoding="utf-8")).get("quick", False)
            except (ValueError, AttributeError):
                raise ValueError(f"{saved} is not a cost table (damaged?); delete it or pass --force") from None
            if quick != args.quick:
                raise ValueError(f"--out {args.out} holds a {'quick' if quick else 'full-size'} cost table ({saved}) "
                                 f"that this {'quick' if args.quick else 'full-size'} run would replace: choose "
                                 f"another --out, or pass --force")
    if args.fit_from < 1:
        raise ValueError(f"--fit-from must be a map side >= 1, got {args.fit_from}")
    try:
        names = tuple(t.strip() for t in args.contexts.split(",") if t.strip())
        sides = tuple(int(t) for t in args.sizes.split(",") if t.strip())
        size = dict(channels=args.channels, d=args.d, rank=args.rank, repeats=args.repeats)
        if args.quick:
            sides, size, args.fit_from = (16, 32), dict(channels=64, d=64, rank=8, repeats=1), 16
        result = cost.compare_contexts(names, sides, fit_from=args.fit_from ** 2, progress=True,
                                       sdpa_backends=(None, "math") if args.sa_math else (None,), batch=args.batch,
                                       steps=(args.steps, args.steps + (args.block == "v1")), grad=args.grad,
                                       version=args.block, device=args.device, **size)
    except (ValueError, TypeError, RuntimeError) as err:
        message = f"--sizes must be comma-separated ints, got {args.sizes!r}" if "invalid literal" in str(err) else err
        print(f"hamgrad cost: error: {message}", file=sys.stderr)
        return 2
    result["quick"] = bool(args.quick)
    print(cost.to_markdown(result))
    if args.out:
        from .plots import context_scaling

        fig = context_scaling(result) if len(sides) > 1 else None
        for path in cost.save(result, args.out, fig=fig):
            print(f"wrote {path}")
    return 0


def _cost_of_ablation(args) -> int:
    """``hamgrad cost --ablation-dir``: :func:`hamgrad.cost.ablation_costs`, printed and optionally saved."""
    from . import cost
    from .plots import context_tradeoff

    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    table = cost.ablation_costs(args.ablation_dir, repeats=args.repeats, device=args.device)
    markdown = cost.ablation_markdown(table)
    print(markdown)
    if args.out:
        for path in cost.save(table, args.out, "context_ablation", fig=context_tradeoff(table), markdown=markdown):
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
