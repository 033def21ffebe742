"""Gradient probes during training: why each gradient mode wins, measured on the batches a network trains on.

A probe of a :class:`hamgrad.nn.HamNet` with a ham, on one training batch (:func:`probe`):

- the gradient of the cross-entropy loss under the ham's own gradient mode and under ``bptt`` (through all K solver
  steps), both from the same initial state of the ham (the same draw of its random initialisation), for the lower
  bread's parameters and for the encoder's parameters (``model.encoder``) separately: each gradient's norm, their
  cosine and the norm ratio ``‖g_mode‖ / ‖g_bptt‖``;
- ρ(J_K), the spectral radius of the ham's one-step Jacobian ``∂F/∂h`` at the last iterate ``h^K`` of that batch.
  F acts on each image of the batch separately, so ``J_K`` is block diagonal: ρ(J_K) is the largest of the
  per-image radii, which Arnoldi estimates for all images at once (one batched Jacobian-vector product per step, on
  the tensors' device), stopping once every image's relative residual is at most ``rho_tol`` (1e-3) or after
  ``rho_iters`` (20) steps. The record keeps the largest (``rho``), the mean over the images (``rho_mean``), the
  relative residual ``‖J v − θ v‖ / |θ|`` of the Ritz pair behind ``rho`` (``rho_residual``: ``θ`` is an exact
  eigenvalue of ``J + E`` with ``‖E‖₂`` that residual times ``|θ|``) and the steps taken (``rho_steps``). Against
  dense eigenvalues at the default size (``benchmarks/bench_probes.py``, initial and trained weights, every ham):
  within 5e-5 relative; on a batch where NMF's top eigenvalues at initialisation form a tight cluster, the 20 steps
  stopped at residual 1e-2 and were 4e-3 off.

A probe leaves the model as it found it: it draws the ham's initial state from the random generator the training
step uses and then puts that generator's state back (so the training step draws the same state), restores the
BatchNorm running statistics its forward passes updated, and takes its gradients with ``torch.autograd.grad``
(never into ``.grad``, so the optimizer sees nothing). :func:`hamgrad.experiments.run_ablation` probes every
``AblationConfig.probe_every`` iterations and stores the series in the run's row (``probes``).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from .._checks import check_generator, check_int, check_positive
from ..analysis import jacobian
from .summary import finished_rows

__all__ = ["probe", "GROUPS", "RHO_ITERS", "RHO_TOL", "new_series", "append", "probe_series"]

#: The parameter groups a probe compares the two gradients on.
GROUPS = ("encoder", "lower_bread")
#: At most this many Arnoldi steps per ρ(J_K) estimate (see :func:`probe`).
RHO_ITERS = 20
#: The Arnoldi steps stop once every image's relative residual is at most this.
RHO_TOL = 1e-3


_GRADIENT_KEYS = ("mode_norm", "bptt_norm", "cosine", "norm_ratio")
_RHO_KEYS = ("rho", "rho_mean", "rho_residual", "rho_steps")


def new_series(every: int) -> dict:
    """The empty probe series of a run, as its results row holds it (``probes``): one list entry per probe.

    Args:
        every: the run's probe interval (``AblationConfig.probe_every``).

    Returns:
        ``{"every", "rho_iters", "rho_tol", "seconds", "step": [], "encoder": {key: []}, "lower_bread": {key: []},
        "rho": [], "rho_mean": [], "rho_residual": [], "rho_steps": []}`` with the keys of :func:`probe`'s
        gradient comparison; ``step`` is the number of updates before the probed batch (0: the initial weights) and
        ``seconds`` the time the probes took.
    """
    return {"every": every, "rho_iters": RHO_ITERS, "rho_tol": RHO_TOL, "seconds": 0.0, "step": [],
            **{g: {k: [] for k in _GRADIENT_KEYS} for g in GROUPS}, **{k: [] for k in _RHO_KEYS}}


def append(series: dict, step: int, record: dict) -> None:
    """Add one :func:`probe` record, taken before update ``step``, to a :func:`new_series` (in place); a value that
    is not finite is stored as ``None`` (JSON has no NaN)."""
    def plain(v):
        return v if isinstance(v, int) or math.isfinite(v) else None

    series["step"].append(step)
    for g in GROUPS:
        for k in _GRADIENT_KEYS:
            series[g][k].append(plain(record[g][k]))
    for k in _RHO_KEYS:
        series[k].append(plain(record[k]))


def probe_series(rows, what: str = "rows") -> dict:
    """The probes figure's numbers (:func:`hamgrad.plots.probes`) from a sweep's rows: the probe series of every
    finished run that holds them.

    Args:
        rows: the rows of :func:`hamgrad.experiments.load_results` (dicts with ``run_id``, ``solver``, ``grad``,
            ``block``, ``steps``, ``seed`` and ``probes``); failed runs and rows without probes
            (``probe_every=None``, or written before probes existed) are left out.
        what: what the rows are, named when none finished.

    Returns:
        ``{"runs": [{"run_id", "solver", "grad", "block", "steps", "seed", "every", "step", "encoder", "lower_bread",
        "rho", "rho_mean", "rho_residual", "rho_steps"}], "skipped": [{"run_id", "reason"}]}``: ``encoder`` and
        ``lower_bread`` map ``mode_norm``, ``bptt_norm``, ``cosine`` and ``norm_ratio`` to one value per probed step
        (``None`` where undefined); ``skipped`` lists the runs without a ham.

    Raises:
        ValueError: when a row is not a sweep row, no run finished, or no finished run holds probes.
    """
    for r in rows:
        if not isinstance(r, dict) or "run_id" not in r or "solver" not in r:
            raise ValueError(f"rows must be sweep rows (hamgrad.experiments.load_results), got {r!r:.80}")
    runs, skipped = [], []
    for r in finished_rows(rows, what):
        p = r.get("probes")
        if p is None:
            continue
        if "skipped" in p:
            skipped.append({"run_id": r["run_id"], "reason": p["skipped"]})
            continue
        runs.append({**{k: r.get(k) for k in ("run_id", "solver", "grad", "block", "steps", "seed")},
                     "every": p["every"], **{k: p[k] for k in ("step", *GROUPS, *_RHO_KEYS)}})
    if not runs:
        raise ValueError(f"{what} holds no gradient probes: run the sweep with probes (AblationConfig.probe_every, "
                         f"hamgrad ablate --probe-every N) and at least one ham")
    return {"runs": runs, "skipped": skipped}


def _device_rng(device: torch.device):
    """The device's RNG module (``torch.cuda``, ...), or ``None`` on the CPU (whose RNG is ``torch``'s own)."""
    return None if device.type == "cpu" else torch.get_device_module(device.type)


@contextlib.contextmanager
def _unchanged(model: torch.nn.Module, device: torch.device, generator: torch.Generator | None):
    """Yield ``rewind()``, which puts the random generator of the ham's initial state back where it was on entry;
    on exit rewind it once more and restore every buffer of ``model`` (BatchNorm's running statistics)."""
    rng = _device_rng(device)
    if generator is not None:
        state = generator.get_state()

        def rewind():
            generator.set_state(state)
    else:
        cpu, dev = torch.get_rng_state(), None if rng is None else rng.get_rng_state(device)

        def rewind():
            torch.set_rng_state(cpu)
            if dev is not None:
                rng.set_rng_state(dev, device)
    buffers = [(b, b.clone()) for b in model.buffers()]
    try:
        yield rewind
    finally:
        rewind()
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)


def _flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads]).double()


def _compare(g: torch.Tensor, ref: torch.Tensor) -> dict:
    """Norms, cosine and norm ratio of a mode's flat gradient ``g`` and the BPTT gradient ``ref`` (``nan`` where a
    norm is zero)."""
    g_norm, ref_norm = float(g.norm()), float(ref.norm())
    cosine = float(g @ ref) / (g_norm * ref_norm) if g_norm > 0 and ref_norm > 0 else math.nan
    return {"mode_norm": g_norm, "bptt_norm": ref_norm, "cosine": cosine,
            "norm_ratio": g_norm / ref_norm if ref_norm > 0 else math.nan}


def _top_ritz(H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the largest-modulus eigenvalue ``θ`` of the square part of an Arnoldi Hessenberg matrix ``H``
    ``(B, k + 1, k)`` and its relative residual ``|β_k y_k| / |θ|`` (``y`` the unit eigenvector, ``β_k = H[k, k−1]``),
    which is ``‖J v − θ v‖ / |θ|`` for the Ritz vector ``v``: float64 ``(|θ|, residual)`` of length B."""
    k = H.shape[-1]
    theta, Y = torch.linalg.eig(H[:, :k, :k])
    top = theta.abs().argmax(dim=1)
    modulus = theta.abs().gather(1, top[:, None])[:, 0]
    y = Y.gather(2, top[:, None, None].expand(-1, k, 1))[:, :, 0]
    last = y[:, k - 1].abs() / y.abs().norm(dim=1)
    return modulus, H[:, k, k - 1].abs() * last / modulus.clamp_min(torch.finfo(torch.float64).tiny)


def _sample_radii(J, h: tuple, iters: int, tol: float, generator: torch.Generator) -> tuple:
    """Per sample ``b`` of a block-diagonal ``J`` (a block: the state's entries of sample ``b``, the leading
    dimension of every tensor of ``h``), the largest-modulus Ritz value of Arnoldi on that block: all samples advance
    together, one product with ``J`` per step, until every sample's relative residual is at most ``tol`` or after
    ``iters`` steps.

    Returns:
        ``(|θ|, residual, steps)``: float64 tensors of length B on the CPU, and the number of Arnoldi steps taken.
    """
    B = h[0].shape[0]
    numels = [t.numel() for t in h]
    per_sample = [n // B for n in numels]

    def to_samples(v):  # the operator's flat order (each tensor of the state in turn) -> (B, p)
        return torch.cat([part.reshape(B, -1) for part in torch.split(v, numels)], dim=1)

    def to_flat(V):  # (B, p) -> the operator's flat order
        return torch.cat([part.reshape(-1) for part in torch.split(V, per_sample, dim=1)])

    p = sum(per_sample)
    m = min(iters, p)
    tiny = torch.finfo(J.dtype).tiny
    Q = torch.zeros(m + 1, B, p, dtype=J.dtype, device=J.device)
    H = torch.zeros(B, m + 1, m, dtype=torch.float64, device=J.device)
    q = torch.randn(B, p, generator=generator, device=generator.device, dtype=J.dtype).to(J.device)
    Q[0] = q / q.norm(dim=1, keepdim=True)
    for j in range(m):
        w = to_samples(J @ to_flat(Q[j]))
        scale = w.norm(dim=1)
        for _ in range(2):  # classical Gram–Schmidt, twice
            c = torch.einsum("jbp,bp->bj", Q[:j + 1], w)
            w = w - torch.einsum("bj,jbp->bp", c, Q[:j + 1])
            H[:, :j + 1, j] += c.double()
        beta = w.norm(dim=1)
        H[:, j + 1, j] = beta.double()
        # an invariant subspace (β ≈ 0): the sample's Ritz values are exact; its later vectors stay zero
        alive = beta > 100 * torch.finfo(J.dtype).eps * scale.clamp_min(tiny)
        Q[j + 1] = torch.where(alive[:, None], w / beta.clamp_min(tiny)[:, None], 0.0)
        modulus, residual = _top_ritz(H[:, :j + 2, :j + 1])
        if bool((residual <= tol).all()):
            break
    return modulus.cpu(), residual.cpu(), j + 1


def probe(model, images: torch.Tensor, labels: torch.Tensor, *, generator: torch.Generator | None = None,
          rho_iters: int = RHO_ITERS, rho_tol: float = RHO_TOL) -> dict:
    """Compare the ham's own gradient mode with BPTT on one batch, and estimate ρ(J_K) (see the module docstring).

    The model runs in its current mode (the runner probes in training mode: BatchNorm on batch statistics and
    ``K = steps[0]``, the training step's loss); the loss is the cross-entropy of ``model(images)`` against
    ``labels``. Both gradients start the ham from the same initial state, drawn from ``generator`` (or torch's
    global generator, as the training step does), whose state is then put back; the model's buffers, its ``.grad``
    and the ham's gradient mode are as they were.

    Args:
        model: a :class:`hamgrad.nn.HamNet` with a ham (``model.hamburger``).
        images: a batch ``(B, 3, H, W)`` on the model's device.
        labels: its labels ``(B, H, W)`` (class indices).
        generator: the generator of the ham's initial state (``None``: torch's global generator, as in training).
        rho_iters: the most Arnoldi steps of the ρ(J_K) estimate.
        rho_tol: the Arnoldi steps stop once every image's relative residual is at most this.

    Returns:
        ``{"encoder": g, "lower_bread": g, "rho": float, "rho_mean": float, "rho_residual": float,
        "rho_steps": int}`` with ``g`` = ``{"mode_norm", "bptt_norm", "cosine", "norm_ratio"}`` (floats, ``nan``
        where a norm is zero) and ``rho_steps`` the Arnoldi steps taken.

    Raises:
        ValueError: when the model has no ham (``HamNet(ham=None)`` or a context module), ``rho_iters < 1`` or
            ``rho_tol <= 0``, or ``generator`` is on another device than ``images``.
        TypeError: when ``generator`` is not a ``torch.Generator``, or ``rho_iters``/``rho_tol`` not a number.
    """
    ham = getattr(model, "hamburger", None)
    if ham is None:
        raise ValueError("model has no ham (HamNet(ham=None) or a context module in its head): nothing to probe")
    check_int(rho_iters, "rho_iters", 1)
    check_positive(rho_tol, "rho_tol")
    check_generator(generator, "generator", images.device)
    groups = {"encoder": list(model.encoder.parameters()), "lower_bread": list(ham.lower_bread.parameters())}
    params = [p for name in GROUPS for p in groups[name]]
    mode, grads = ham.grad, {}
    # a frozen encoder (HamNet.load_encoder) is probed all the same: what its gradient would be
    frozen = [p for p in params if not p.requires_grad]
    with _unchanged(model, images.device, generator) as rewind:
        try:
            for p in frozen:
                p.requires_grad_(True)
            for grad in (mode, "bptt"):
                rewind()  # the same initial state of the ham in both passes
                ham.grad = grad
                with ham.capture() if grad == "bptt" else contextlib.nullcontext() as cap:
                    loss = F.cross_entropy(model(images, generator=generator), labels)
                grads[grad] = torch.autograd.grad(loss, params)
        finally:
            ham.grad = mode
            for p in frozen:
                p.requires_grad_(False)
    record, start = {}, 0
    for name in GROUPS:
        end = start + len(groups[name])
        record[name] = _compare(_flat(grads[mode][start:end]), _flat(grads["bptt"][start:end]))
        start = end
    J = jacobian(ham.solver, cap.info.state, cap.x)
    radii, residuals, steps = _sample_radii(J, cap.info.state, rho_iters, rho_tol,
                                            torch.Generator(images.device).manual_seed(0))
    top = int(radii.argmax())
    record.update(rho=float(radii[top]), rho_mean=float(radii.mean()), rho_residual=float(residuals[top]),
                  rho_steps=steps)
    return record
