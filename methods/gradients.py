"""Gradient-based saliency: Gradient, Gradient x Input, Integrated Gradients, SmoothGrad.

Every explainer is a plain object ``explain(x, target=None) -> Tensor`` shaped like ``x``
(``B x ...``), computed for the whole batch at once. While it runs, the model is put in
eval mode, its parameters stop requiring grad and autograd is enabled; all of that is
restored afterwards, and the parameters are never written to.

Domain parameters ``low``/``high`` are the bounds of the data domain (``0.0``/``1.0`` for
[0, 1] MNIST; the domain of the shifted data for a shifted encoding). Every explainer accepts
them, so a harness can pass the domain to every method; the methods whose reference depends
on the domain use them (IG ``black``/``uniform`` baselines, SmoothGrad's noise scale, the zB
rule).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from methods.registry import get_factory, register, resolve_target

__all__ = [
    "BaseExplainer",
    "Gradient",
    "GradientXInput",
    "IntegratedGradients",
    "SmoothGrad",
    "explaining",
    "input_gradient",
    "domain_bounds",
]


@contextmanager
def explaining(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode with frozen parameters and autograd on; restore all of it after.

    Restores each module's ``training`` flag and each parameter's ``requires_grad`` as found,
    also when the body raises.
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad():
            yield model
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in grads:
            p.requires_grad_(flag)


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x)
    if out.ndim != 2:
        raise ValueError(f"{type(model).__name__} returned shape {tuple(out.shape)}; expected logits [B, classes]")
    return out


def input_gradient(model: nn.Module, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``(d f_target / d x, f_target(x))`` for a batch: shapes ``x.shape`` and ``[B]``."""
    x = x.detach().clone().requires_grad_(True)
    out = _logits(model, x).gather(1, target[:, None]).squeeze(1)
    (grad,) = torch.autograd.grad(out.sum(), x)
    return grad, out.detach()


def domain_bounds(x: Tensor, low: float | None, high: float | None) -> tuple[Tensor, Tensor]:
    """``(low, high)`` broadcastable to ``x``: the given domain, else each sample's min / max.

    Returns tensors of shape ``[B, 1, ...]`` (per-sample fallback) or 0-d (given bound).
    """
    flat = x.detach().flatten(1)
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    lo = flat.amin(1).view(shape) if low is None else torch.tensor(float(low), dtype=x.dtype, device=x.device)
    hi = flat.amax(1).view(shape) if high is None else torch.tensor(float(high), dtype=x.dtype, device=x.device)
    return lo, hi


class BaseExplainer:
    """Base class: ``explainer(x, target=None) -> Tensor`` shaped like ``x``.

    Subclasses implement :meth:`attribute` on a detached batch ``x`` and a ``LongTensor[B]``
    ``target``; ``__call__`` resolves the target (default: the predicted class) and runs it
    under :func:`explaining`.
    """

    needs_fit: bool = False

    def __init__(self, model: nn.Module, *, low: float | None = None, high: float | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(self).__name__} needs a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.low = low
        self.high = high

    def __call__(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        with explaining(self.model):
            target = resolve_target(self.model, x, target)
            return self.attribute(x.detach(), target).detach()

    def attribute(self, x: Tensor, target: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"


@register("gradient")
class Gradient(BaseExplainer):
    """Vanilla gradient ``d f_c / d x`` (Simonyan et al. 2014)."""

    def attribute(self, x: Tensor, target: Tensor) -> Tensor:
        return input_gradient(self.model, x, target)[0]


@register("gradient_x_input")
class GradientXInput(BaseExplainer):
    """Gradient x Input ``x * d f_c / d x`` (Shrikumar et al. 2016)."""

    def attribute(self, x: Tensor, target: Tensor) -> Tensor:
        return x * input_gradient(self.model, x, target)[0]


def _quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Path positions ``alpha`` in [0, 1] and weights summing to one."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    k = np.arange(steps, dtype=np.float64)
    if method == "riemann_trapezoid":
        if steps == 1:
            return np.array([0.5]), np.array([1.0])
        alphas = np.linspace(0.0, 1.0, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
    elif method == "riemann_middle":
        alphas, weights = (k + 0.5) / steps, np.full(steps, 1.0 / steps)
    elif method == "riemann_right":
        alphas, weights = (k + 1) / steps, np.full(steps, 1.0 / steps)
    elif method == "riemann_left":
        alphas, weights = k / steps, np.full(steps, 1.0 / steps)
    elif method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(steps)
        alphas, weights = (nodes + 1) / 2, w / 2
    else:
        raise ValueError(
            f"unknown integration method {method!r}; one of riemann_trapezoid, riemann_middle, "
            "riemann_right, riemann_left, gausslegendre"
        )
    return alphas, weights


@register("integrated_gradients")
class IntegratedGradients(BaseExplainer):
    """Integrated Gradients (Sundararajan et al. 2017): ``(x - x0) * mean_alpha grad f_c(x0 + alpha (x - x0))``.

    Args:
        baseline: ``"zero"``; ``"black"`` (every feature at ``low``, the minimum of the data
            domain, so it moves with a shifted encoding; without ``low``: each sample's minimum);
            ``"uniform"`` (seeded uniform noise in ``[low, high]``; without them each sample's
            min/max); a number; or a tensor broadcastable to ``x`` (``x.shape`` or ``x.shape[1:]``).
        steps: gradient evaluations along the path (default 50).
        method: quadrature rule (``riemann_trapezoid`` default; also ``riemann_middle``,
            ``riemann_right``, ``riemann_left``, ``gausslegendre``); weights sum to one, so IG is
            exact on an affine model.
        batch_size: rows (samples x steps) per forward/backward pass, bounding memory.
        seed: seed of the ``uniform`` baseline.

    After each call, ``last_completeness_error`` (``Tensor[B]``) holds
    ``|sum(IG) - (f_c(x) - f_c(x0))| / |f_c(x) - f_c(x0)|`` and ``last_completeness_gap`` the
    signed absolute gap ``sum(IG) - (f_c(x) - f_c(x0))``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        baseline: str | float | Tensor = "zero",
        steps: int = 50,
        method: str = "gausslegendre",
        batch_size: int = 256,
        seed: int = 0,
        low: float | None = None,
        high: float | None = None,
    ) -> None:
        super().__init__(model, low=low, high=high)
        if isinstance(baseline, str) and baseline not in ("zero", "black", "uniform"):
            raise ValueError(f"unknown baseline {baseline!r}; one of 'zero', 'black', 'uniform', a number or a tensor")
        self.baseline = baseline
        self.steps = int(steps)
        self.method = method
        self.alphas, self.weights = _quadrature(method, self.steps)
        self.batch_size = max(1, int(batch_size))
        self.seed = seed
        self.last_completeness_error: Tensor | None = None
        self.last_completeness_gap: Tensor | None = None

    def reference(self, x: Tensor) -> Tensor:
        """The baseline ``x0`` for batch ``x``, shaped like ``x``."""
        b = self.baseline
        if isinstance(b, Tensor):
            return b.to(device=x.device, dtype=x.dtype).expand_as(x)
        if isinstance(b, (int, float)):
            return torch.full_like(x, float(b))
        if b == "zero":
            return torch.zeros_like(x)
        lo, hi = domain_bounds(x, self.low, self.high)
        if b == "black":
            return lo.expand_as(x).clone()
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        return lo + (hi - lo) * torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)

    def attribute(self, x: Tensor, target: Tensor) -> Tensor:
        x0 = self.reference(x)
        alphas = torch.as_tensor(self.alphas, dtype=x.dtype, device=x.device)
        weights = torch.as_tensor(self.weights, dtype=x.dtype, device=x.device)
        n, steps = x.shape[0], self.steps
        view = (-1,) + (1,) * (x.ndim - 1)
        total = torch.zeros_like(x)
        for start in range(0, n * steps, self.batch_size):
            rows = torch.arange(start, min(start + self.batch_size, n * steps), device=x.device)
            b, k = rows // steps, rows % steps
            xs = x0[b] + alphas[k].view(view) * (x[b] - x0[b])
            grad, _ = input_gradient(self.model, xs, target[b])
            total.index_add_(0, b, grad * weights[k].view(view))
        attr = (x - x0) * total

        # completeness: sum(IG) against f(x) - f(x0)
        with torch.no_grad():
            both = torch.cat([x, x0])
            t2 = torch.cat([target, target])
            f = torch.cat([
                _logits(self.model, both[i:i + self.batch_size]).gather(1, t2[i:i + self.batch_size, None])
                for i in range(0, 2 * n, self.batch_size)
            ]).squeeze(1)
            delta = f[:n] - f[n:]
            gap = attr.flatten(1).sum(1) - delta
            self.last_completeness_gap = gap
            self.last_completeness_error = gap.abs() / delta.abs().clamp_min(torch.finfo(x.dtype).tiny)
        return attr


def _accepts(factory: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


@register("smoothgrad")
class SmoothGrad(BaseExplainer):
    """SmoothGrad (Smilkov et al. 2017) of any method: the mean of ``base(x + noise)`` over ``n`` draws.

    Args:
        base: a registered method name (or ``"pkg.module:factory"``), or an explainer object.
        n: noise draws (default 50).
        noise_level: noise std as a fraction of the data range: ``noise_level * (high - low)``
            when the domain is given, else ``noise_level * (max - min)`` of each sample.
        squared: average ``base(...)**2`` (SmoothGrad-Squared) instead.
        seed: the noise is drawn from a ``torch.Generator`` on ``x``'s device seeded with
            ``seed`` at every call: the same call gives the same map (for the same batch and
            ``batch_size``).
        batch_size: noisy rows handed to the base method per call (bounds memory; the base
            method chunks further, e.g. IG's steps).
        base_params: the base method's parameters; unknown keyword arguments are forwarded
            to it too, as are ``low``/``high`` when it accepts them. So SmoothGrad of a method
            inherits that method's parameters.

    ``needs_fit`` and ``fit(loader)`` are forwarded to the base method (PatternNet/-Attribution).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        base: str | Callable[..., Tensor] = "gradient",
        n: int = 50,
        noise_level: float = 0.15,
        squared: bool = False,
        seed: int = 0,
        batch_size: int = 256,
        base_params: dict[str, Any] | None = None,
        low: float | None = None,
        high: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, low=low, high=high)
        params = {**dict(base_params or {}), **kwargs}
        if isinstance(base, str):
            factory = get_factory(base)
            for key, value in (("low", low), ("high", high)):
                if value is not None and _accepts(factory, key):
                    params.setdefault(key, value)
            self.base = factory(model, **params)
        elif callable(base):
            if params:
                raise ValueError(f"base is an explainer object; parameters {sorted(params)} cannot be applied to it")
            self.base = base
        else:
            raise TypeError(f"base must be a method name or an explainer, got {type(base).__name__}")
        self.base_name = base if isinstance(base, str) else type(base).__name__
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = int(n)
        self.noise_level = float(noise_level)
        self.squared = bool(squared)
        self.seed = seed
        self.batch_size = max(1, int(batch_size))

    @property
    def needs_fit(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.base, "needs_fit", False))

    def fit(self, loader: Any) -> SmoothGrad:
        """Fit the base method (only methods with ``needs_fit``)."""
        if not hasattr(self.base, "fit"):
            raise AttributeError(f"base method {self.base_name!r} has no fit()")
        self.base.fit(loader)
        return self

    def sigma(self, x: Tensor) -> Tensor:
        """Noise std, broadcastable to ``x``: 0-d for a given domain, else ``[B, 1, ...]``."""
        lo, hi = domain_bounds(x, self.low, self.high)
        return self.noise_level * (hi - lo)

    def attribute(self, x: Tensor, target: Tensor) -> Tensor:
        n_rows = x.shape[0]
        sigma = self.sigma(x)
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        per_call = max(1, self.batch_size // n_rows)
        total = torch.zeros_like(x)
        for start in range(0, self.n, per_call):
            k = min(per_call, self.n - start)
            noise = torch.randn((k, *x.shape), generator=gen, device=x.device, dtype=x.dtype)
            noisy = (x.unsqueeze(0) + sigma * noise).flatten(0, 1)
            maps = self.base(noisy, target.repeat(k)).view(k, *x.shape)
            total += (maps * maps if self.squared else maps).sum(0)
        return total / self.n

    def __repr__(self) -> str:
        return f"SmoothGrad({self.base!r}, n={self.n}, noise_level={self.noise_level})"
