"""Argument checks shared by every layer: each error names the argument and what was expected."""

from __future__ import annotations

import math

import torch


def check_int(value, name: str, minimum: int) -> int:
    """An int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_choice(value, name: str, allowed: tuple):
    """``value`` if it is one of ``allowed``, else a ValueError naming ``name`` and the choices."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def check_steps(steps, name: str = "steps") -> int:
    """An int >= 1."""
    return check_int(steps, name, 1)


def check_positive(value, name: str) -> float:
    """A finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def check_float_tensor(x, name: str = "x", min_dim: int = 1, meta: bool = False) -> torch.Tensor:
    """A floating-point tensor with at least ``min_dim`` dimensions, with data (not on the meta device) unless
    ``meta`` (shape-only uses: counting a module's operations)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float16/bfloat16/float32/float64), got {x.dtype}")
    if x.is_meta and not meta:
        raise ValueError(f"{name} is on the meta device (a tensor without data): hamgrad computes on real tensors, "
                         "create it on a device such as 'cpu' or 'cuda'")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimensions, got shape {tuple(x.shape)}")
    return x


def check_finite(x: torch.Tensor, name: str = "x", why: str = "") -> tuple[float, float]:
    """No NaN or Inf; returns ``(min, max)`` of ``x`` (one fused pass, one host sync). ``why`` is appended to the
    error (what a non-finite value means there)."""
    if x.numel() == 0:
        return 0.0, 0.0
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN or Inf{why}")
    return lo, hi


def check_differentiable(out, what: str) -> None:
    """At least one tensor of ``out`` (computed in grad mode from inputs that require grad) carries an autograd
    graph; else ``what`` detached its result, and every derivative of it would read as 0."""
    if not any(t.requires_grad for t in out):
        raise ValueError(f"{what} returned tensors with no autograd graph to its inputs (it detaches them, runs under "
                         "torch.no_grad, or goes through .item()/NumPy), so every derivative of it would read as 0: "
                         "compute it with differentiable torch operations")


def stochastic_error(what: str) -> ValueError:
    """The error for a function that draws random numbers: its Jacobian is not defined."""
    return ValueError(f"{what} draws random numbers (two evaluations at the same point differ): its Jacobian is not "
                      "defined, and products through it would mix different draws. Make it deterministic (draw the "
                      "noise once outside and close over it, or put its modules in eval mode)")


def check_int_range(value, name: str, low: int, high: int, what: str = "") -> int:
    """An int (not a bool) with ``low <= value <= high``; ``what`` says where the limits come from."""
    why = f" ({what})" if what else ""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int in [{low}, {high}]{why}, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must satisfy {low} <= {name} <= {high}{why}, got {value}")
    return value


def check_pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= ``minimum``; an int ``n`` means ``(n, n)``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return check_int(value[0], f"{name}[0]", minimum), check_int(value[1], f"{name}[1]", minimum)
    n = check_int(value, name, minimum)
    return n, n


def check_nonnegative(value, name: str) -> float:
    """A finite real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def check_bool(value, name: str) -> bool:
    """A real ``bool`` (``"yes"``, ``1`` or ``None`` are refused: they would silently read as true or false)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_generator(generator, name: str = "generator", device: torch.device | None = None):
    """``None`` or a ``torch.Generator`` (on ``device``'s type when given)."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {generator!r}")
    if device is not None and generator.device.type != torch.device(device).type:
        raise ValueError(f"{name} is on {generator.device} but the input is on {device}: create it with "
                         f"torch.Generator(device=x.device)")
    return generator


def check_representable(value: float, name: str, dtype: torch.dtype, what: str = "") -> None:
    """A magnitude that stays finite in ``dtype`` (e.g. a hyperparameter or a bound on an intermediate product)."""
    big = torch.finfo(dtype).max
    if not value <= big:
        raise ValueError(f"{name}{what} = {value:.3g} overflows {dtype} (largest {big:.3g}), the dtype the "
                         "computation runs in: choose a smaller value or rescale the input")


def check_device(device, here: bool = True) -> torch.device:
    """``device`` as a ``torch.device`` (that exists on this machine when ``here``), else a ValueError naming it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not a torch device (expected e.g. 'cpu', 'cuda', 'cuda:1')") from None
    if here and dev.type != "cpu":
        module = getattr(torch, dev.type, None)
        count = module.device_count() if hasattr(module, "device_count") and module.is_available() else 0
        if count == 0:
            raise ValueError(f"device={device!r}: no {dev.type} device is available on this machine")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device={device!r}: this machine has {count} {dev.type} device(s)")
    return dev


def check_feature_map(x, channels: int, like: torch.Tensor, name: str = "x") -> None:
    """The input of a context module: a floating ``(B, channels, H, W)`` tensor with ``B, H, W >= 1``, on the device of
    ``like`` (one of the module's parameters) and, unless autocast is on for that device, in its dtype. Costs no host
    sync (what needs the values is :func:`check_mixing`); meta tensors pass (counting MACs runs modules on them)."""
    check_float_tensor(x, name, meta=True)
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (B, channels={channels}, H, W), got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} has shape {tuple(x.shape)}: an empty batch or feature map (B, H and W must be >= 1)")
    if x.device != like.device:
        raise ValueError(f"{name} is on {x.device} but the module is on {like.device}: move one to the other "
                         f"(module.to({str(x.device)!r}) or x.to({str(like.device)!r}))")
    if x.dtype != like.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{name} has dtype {x.dtype} but the module's parameters are {like.dtype}: cast one to the "
                        f"other (x.to({like.dtype}) or module.to({x.dtype})), or run under torch.autocast")


def check_mixing(x: torch.Tensor, y: torch.Tensor, what: str, name: str = "x") -> None:
    """After a context module's mixing of a finite input ``x``: the mixed features ``y`` are finite, else ``what``
    overflowed ``y``'s dtype (one host sync, before the upper bread). Nothing to check on the meta device."""
    if y.is_meta:
        return
    if y.numel() and not all(math.isfinite(v) for v in torch.stack(torch.aminmax(y.detach())).tolist()):
        raise ValueError(f"{what} overflowed {y.dtype} for {name} of shape {tuple(x.shape)} with max|{name}| = "
                         f"{float(x.detach().abs().max()):.3g}: its output is not finite; rescale the input (or "
                         "compute in float32 instead of under float16 autocast)")
