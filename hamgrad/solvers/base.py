"""The solver protocol shared by the hams, and the registry for new solvers.

A solver is a set of pure tensor functions over ``x`` of shape ``(..., d, n)`` and a state ``h = (D, C)`` with
``D (..., d, r)`` and ``C (..., r, n)``:

- ``init(x, generator=None) -> h``     the initial state (random dictionary, codes from it);
- ``step(x, h) -> h``                  one application of F (docs/theory.md §2), C first, then D;
- ``readout(x, h) -> y``               the low-rank reconstruction ``X̄``, same shape and dtype as ``x``;
- ``objective(x, h) -> (...)``         the decomposition objective per batch element;
- ``monitored_step(x) -> fn``          ``fn(h) = (step(x, h), objective(x, step(x, h)))``, the objective from the
                                       step's own products where the solver can (what ``hg.solve`` monitors);
- ``coef_step(x, h) -> C``             the last code update of the official Hamburger code, D held constant;
- ``coef_readout(x, h) -> y``          ``D coef_step(x, h)`` (the ``one-step-coef`` gradient mode's output).

Precision: float16/bfloat16 inputs are computed in float32 (the state is kept in float32) and ``readout`` returns
the input's dtype; autocast is switched off inside every method so the decomposition always runs in at least float32.
Nothing here uses ``torch.no_grad``: which steps carry a graph is decided by :func:`hamgrad.solve`.
"""

from __future__ import annotations

import functools

import torch

from .._checks import check_finite, check_float_tensor, check_int, check_positive, check_representable

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a solver computes in for inputs of ``dtype`` (float32 for half precisions)."""
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _full_precision(method):
    """Check ``x``'s type, then run ``method`` with autocast off and ``x`` cast to the compute dtype."""

    @functools.wraps(method)
    def wrapper(self, x, *args, **kwargs):
        check_float_tensor(x, "x", min_dim=2)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return method(self, x.to(compute_dtype(x.dtype)), *args, **kwargs)

    return wrapper


class Solver:
    """Base class of the hams. Subclasses implement ``_init``, ``_step``, ``_codes`` and ``_readout_codes``.

    Args:
        rank: r, the number of bases; 1 <= r <= min(d, n) (checked against each input).
        eps: the small constant that keeps divisions finite.
    """

    name = "solver"
    nonnegative = False

    def __init__(self, rank: int, eps: float = 1e-6):
        self.rank = check_int(rank, "rank", 1)
        self.eps = check_positive(eps, "eps")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({params})"

    def hparams(self) -> dict:
        """The constructor arguments, as plain data."""
        return {"rank": self.rank, "eps": self.eps}

    # ------------------------------------------------------------------ checks
    def check_input(self, x, name: str = "x") -> None:
        """Validate an input: a float tensor ``(..., d, n)`` with a non-empty batch, finite, ``rank <= min(d, n)``
        (and ``x >= 0`` for NMF), and small enough that the solver's products stay finite in the compute dtype.

        Costs a host sync (NaN/Inf check); :func:`hamgrad.solve` and :meth:`init` call it, :meth:`step` does not.

        Raises:
            TypeError: ``x`` is not a floating-point tensor.
            ValueError: any other condition above fails (the message names ``name``).
        """
        check_float_tensor(x, name, min_dim=2)
        d, n = x.shape[-2:]
        if self.rank > min(d, n):
            raise ValueError(f"rank={self.rank} must be <= min(d, n) = min({d}, {n}) for {name} of shape "
                             f"{tuple(x.shape)} (x is (..., d, n))")
        if x.numel() == 0:
            raise ValueError(f"{name} has an empty batch (shape {tuple(x.shape)}): nothing to decompose")
        lo, hi = check_finite(x, name)
        if self.nonnegative and lo < 0:
            raise ValueError(f"{name} must be non-negative for {type(self).__name__} (apply a ReLU first); "
                             f"its minimum is {lo:.4g}")
        dtype = compute_dtype(x.dtype)
        for label, value in self._magnitudes(max(abs(lo), abs(hi)), d, n).items():
            check_representable(value, label, dtype, f" (for {name} of shape {tuple(x.shape)})")

    def _magnitudes(self, amax: float, d: int, n: int) -> dict:
        """Bounds (in float64) on hyperparameters and intermediates that must be finite in the compute dtype:
        ``eps`` and ``max|x|² d n`` (a bound on ‖X‖², the scale of the objective)."""
        return {"eps": self.eps, "max|x|^2 * d * n": amax * amax * d * n}

    def check_state(self, x, h, name: str = "h") -> tuple:
        """Validate that ``h = (D, C)`` has shapes ``(..., d, r)`` and ``(..., r, n)`` matching ``x``."""
        if not isinstance(h, (tuple, list)) or len(h) != 2 or not all(isinstance(t, torch.Tensor) for t in h):
            raise TypeError(f"{name} must be a tuple (D, C) of two tensors, got {type(h).__name__}")
        D, C = h
        for t, label in ((D, "D"), (C, "C")):
            if not t.is_floating_point():
                raise TypeError(f"{name}: {label} must have a floating dtype, got {t.dtype}")
        *batch, d, n = x.shape
        want_D, want_C = (*batch, d, self.rank), (*batch, self.rank, n)
        if tuple(D.shape) != want_D or tuple(C.shape) != want_C:
            raise ValueError(f"{name} = (D, C) must have shapes D {want_D} and C {want_C} for x of shape "
                             f"{tuple(x.shape)} and rank {self.rank}; got D {tuple(D.shape)}, C {tuple(C.shape)}")
        return tuple(h)

    def _cast_state(self, x, h):
        D, C = self.check_state(x, h)
        return D.to(x.dtype), C.to(x.dtype)

    # ------------------------------------------------------------------ public API
    @_full_precision
    def init(self, x, generator: torch.Generator | None = None) -> tuple:
        """Initial state ``(D, C)`` for ``x``; reproducible with a ``torch.Generator`` on ``x.device``."""
        self.check_input(x)
        *batch, d, n = x.shape
        D = self._random_bases((*batch, d, self.rank), x, generator)
        return D, self._init_codes(x, D)

    @_full_precision
    def step(self, x, h) -> tuple:
        """One application of F: the code update, then the dictionary update (docs/theory.md §2)."""
        return self._step(x, *self._cast_state(x, h))

    def monitored_step(self, x):
        """A function ``fn(h) -> (step(x, h), objective(x, step(x, h)))`` for the input ``x`` (checked here once).

        The objective carries no graph; subclasses compute it from the step's own products (NMF) and precompute
        what depends on ``x`` alone, so monitoring costs almost nothing.
        """
        check_float_tensor(x, "x", min_dim=2)
        xc = x.to(compute_dtype(x.dtype))
        with torch.autocast(device_type=x.device.type, enabled=False), torch.no_grad():
            const = self._monitor_constants(xc)

        def fn(h):
            with torch.autocast(device_type=x.device.type, enabled=False):
                D, C = self._cast_state(xc, h)
                return self._step_and_objective(xc, D, C, const)
        return fn

    def readout(self, x, h) -> torch.Tensor:
        """``X̄ = D C`` (C from the state, or the solver's readout codes), in ``x``'s dtype."""
        return self._readout(x, h).to(x.dtype)

    @_full_precision
    def _readout(self, x, h):
        D, C = self._cast_state(x, h)
        return D @ self._readout_codes(x, D, C)

    @_full_precision
    def objective(self, x, h) -> torch.Tensor:
        """The decomposition objective per batch element, shape ``x.shape[:-2]``."""
        D, C = self._cast_state(x, h)
        return self._objective(x, D, C)

    @_full_precision
    def coef_step(self, x, h) -> torch.Tensor:
        """The official code's last code update with D held constant (no graph through D), in the compute dtype."""
        D, C = self._cast_state(x, h)
        return self._coef_codes(x, D.detach(), C.detach())

    def coef_readout(self, x, h) -> torch.Tensor:
        """``D coef_step(x, h)`` with D constant: the ``one-step-coef`` output, computed in the compute dtype (also
        under autocast) and returned in ``x``'s dtype."""
        return self._coef_readout(x, h).to(x.dtype)

    @_full_precision
    def _coef_readout(self, x, h):
        D, C = self._cast_state(x, h)
        D = D.detach()
        return D @ self._coef_codes(x, D, C.detach())

    # ------------------------------------------------------------------ for subclasses
    def _random_bases(self, shape, x, generator):
        raise NotImplementedError

    def _init_codes(self, x, D):
        raise NotImplementedError

    def _step(self, x, D, C):
        raise NotImplementedError

    def _readout_codes(self, x, D, C):
        return C

    def _coef_codes(self, x, D, C):
        raise NotImplementedError

    def _objective(self, x, D, C):
        return ((x - D @ self._readout_codes(x, D, C)) ** 2).sum(dim=(-2, -1))

    def _monitor_constants(self, x):
        return None

    def _step_and_objective(self, x, D, C, const):
        h = self._step(x, D, C)
        with torch.no_grad():
            return h, self._objective(x, *(t.detach() for t in h))


# ---------------------------------------------------------------------- registry
_REGISTRY: dict[str, type] = {}

#: The entry-point group in which an installed package offers solvers: ``name = "package.module:Class"`` (a class,
#: a function that returns a solver, or a module that registers its solvers when imported).
ENTRY_POINT_GROUP = "hamgrad.solvers"

_REQUIRED_METHODS = ("init", "step", "readout")


def register_solver(name: str, cls, *, overwrite: bool = False):
    """Register a solver class under ``name`` so that ``get_solver(name, ...)`` (and the CLI) can build it.

    ``cls(...)`` must produce an object with ``init(x, generator=None)``, ``step(x, h)`` and ``readout(x, h)`` (a
    solver that also has ``coef_readout(x, h)`` gets the ``one-step-coef`` gradient mode).

    Args:
        name: the registry key (case-insensitive).
        cls: the solver class, or a function that returns a solver (its result is checked when it is built).
        overwrite: replace a solver already registered under ``name``.

    Returns:
        ``cls`` (so that ``register_solver`` can be used on a class definition's result).

    Raises:
        TypeError: ``name`` is not a non-empty str, ``cls`` is not callable, or a class lacking
            ``init``/``step``/``readout``.
        ValueError: ``name`` is taken and ``overwrite`` is false.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if not callable(cls):
        raise TypeError(f"cls must be a class or a function that returns a solver, got {type(cls).__name__}")
    if isinstance(cls, type):
        _check_methods(cls, cls.__name__)
    key = name.lower()
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"a solver named {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[key] = cls
    return cls


def _check_methods(obj, label: str) -> None:
    for attr in _REQUIRED_METHODS:
        if not callable(getattr(obj, attr, None)):
            raise TypeError(f"a solver must define {attr}(...), {label} does not")


def _entry_points() -> dict:
    """The ``hamgrad.solvers`` entry points of the installed packages, by lower-case name (not loaded)."""
    from importlib.metadata import entry_points

    return {ep.name.lower(): ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def solver_factory(name: str):
    """What :func:`get_solver` calls to build solver ``name``: the registered class or function, after loading the
    installed entry point of that name if the name is not registered yet.

    Args:
        name: a name from :func:`available_solvers` (case-insensitive).

    Returns:
        The registered class (or function).

    Raises:
        TypeError: ``name`` is not a str.
        ValueError: ``name`` is neither registered nor an entry point (the message lists the solvers), or its entry
            point fails to load (naming it and the error).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.lower()
    if key not in _REGISTRY:
        plugins = _entry_points()
        if key not in plugins:
            raise ValueError(f"unknown solver {name!r}; available: {', '.join(available_solvers())} (register yours "
                             f"with hamgrad.register_solver, or install it under the entry-point group "
                             f"{ENTRY_POINT_GROUP})")
        try:
            loaded = plugins[key].load()  # a class, a function, or a module that registers its solvers
        except Exception as err:  # a broken plugin: one line naming it
            raise ValueError(f"solver {name!r}: loading its entry point {plugins[key].value!r} (group "
                             f"{ENTRY_POINT_GROUP}) raised {type(err).__name__}: {' '.join(str(err).split())}") from err
        if key not in _REGISTRY:
            if not callable(loaded):
                raise ValueError(f"solver {name!r}: its entry point {plugins[key].value!r} names a module that does "
                                 f"not register a solver of that name (it should call hamgrad.register_solver)")
            register_solver(key, loaded)
    return _REGISTRY[key]


def get_solver(name: str, /, **kwargs):
    """Build a registered solver by name (``"nmf"``, ``"vq"``/``"softvq"``, ``"cd"``, a user's, or an installed
    package's from the entry-point group ``hamgrad.solvers``).

    Args:
        name: a name from :func:`available_solvers` (case-insensitive; positional, so a solver may have a
            constructor argument called ``name``).
        **kwargs: the solver's constructor arguments (e.g. ``rank=8``, ``inv_t=10.0``).

    Returns:
        The solver instance.

    Raises:
        TypeError: ``name`` is not a str, a registered function returned no solver (no ``init``/``step``/
            ``readout``), or the constructor's own errors for ``kwargs``.
        ValueError: ``name`` is not available (the message lists the solvers), its entry point fails to load, or
            the constructor's own errors for ``kwargs``.
    """
    factory = solver_factory(name)
    solver = factory(**kwargs)
    if not isinstance(factory, type):
        _check_methods(solver, f"what {getattr(factory, '__qualname__', factory)!r} returned "
                               f"({type(solver).__name__})")
    return solver


def available_solvers() -> list[str]:
    """Names of the registered solvers and of the installed packages' solvers (entry-point group
    ``hamgrad.solvers``, loaded on first use by :func:`get_solver`).

    Returns:
        The names, lower-case and sorted.
    """
    return sorted(set(_REGISTRY) | set(_entry_points()))
