"""Gradient-based saliency: Gradient, Gradient x Input, Integrated Gradients, SmoothGrad (and its SmoothGrad-Squared
and VarGrad statistics).

Every explainer is ``explain(x, target=None) -> Tensor`` shaped like ``x`` (``[B, ...]``),
computed for the whole batch at once (IG steps and SmoothGrad draws are stacked into the batch
dimension, in chunks of at most ``chunk`` rows). ``low`` / ``high`` are the bounds of the data
domain (default 0.0 / 1.0; the shifted domain for a shifted encoding); the IG ``black`` /
``uniform`` baselines and SmoothGrad's ``noise_scale="domain"`` use them.

Random draws (IG ``uniform``, SmoothGrad / VarGrad noise) come from a CPU ``torch.Generator`` seeded with
``seed`` at every call and are moved to ``x``'s device, so a map is the same on CPU and CUDA, from
call to call and for any ``chunk``; it depends on the batch's shape (sample ``i``'s noise is the
``i``-th slice of a draw shaped like the batch).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from methods.registry import BaseExplainer, accepts, get_factory, register, target_logits

__all__ = [
    "Gradient",
    "GradientXInput",
    "IntegratedGradients",
    "SmoothGrad",
    "SmoothGradSquared",
    "VarGrad",
    "input_gradient",
    "quadrature",
]


def input_gradient(model: nn.Module, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``(d f_target / d x, f_target(x))`` for a batch: shapes ``x.shape`` and ``[B]``."""
    x = x.detach().clone().requires_grad_(True)
    out = target_logits(model, x, target)
    (grad,) = torch.autograd.grad(out.sum(), x)
    return grad, out.detach()


def _randn(shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
    return torch.randn(shape, generator=gen, dtype=like.dtype).to(like.device)


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


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Path positions ``alpha`` in [0, 1] and weights summing to one: two arrays ``[steps]``."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    k = np.arange(steps, dtype=np.float64)
    if method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1) / 2, w / 2
    if method == "riemann_trapezoid":
        if steps == 1:
            return np.array([0.5]), np.array([1.0])
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, steps), weights
    offsets = {"riemann_middle": 0.5, "riemann_right": 1.0, "riemann_left": 0.0}
    if method not in offsets:
        raise ValueError(
            f"unknown integration method {method!r}; one of gausslegendre, riemann_trapezoid, "
            "riemann_middle, riemann_right, riemann_left"
        )
    return (k + offsets[method]) / steps, np.full(steps, 1.0 / steps)


@register("integrated_gradients")
class IntegratedGradients(BaseExplainer):
    """Integrated Gradients (Sundararajan et al. 2017): ``(x - x0) * int_0^1 grad f_c(x0 + a (x - x0)) da``.

    Args:
        baseline: ``"zero"``; ``"black"`` (every feature at ``low``, the minimum of the data
            domain, which moves with a shifted encoding); ``"uniform"`` (uniform noise in
            ``[low, high]``, seeded); a number; or a tensor broadcastable to ``x``.
        steps: gradient evaluations along the path (default 50).
        method: quadrature rule; ``gausslegendre`` (default, as captum), ``riemann_trapezoid``,
            ``riemann_middle``, ``riemann_right``, ``riemann_left``. Weights sum to one, so IG is
            exact on an affine model.
        chunk: rows (samples x steps) per forward/backward pass, bounding memory.
        seed: seed of the ``uniform`` baseline.

    After each call ``last_completeness_error`` (``Tensor[B]``) holds the relative error
    ``|sum(IG) - (f_c(x) - f_c(x0))| / |f_c(x) - f_c(x0)|`` and ``last_completeness_gap`` the
    signed gap ``sum(IG) - (f_c(x) - f_c(x0))``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        baseline: str | float | Tensor = "zero",
        steps: int = 50,
        method: str = "gausslegendre",
        chunk: int = 256,
        seed: int = 0,
        low: float = 0.0,
        high: float = 1.0,
    ) -> None:
        super().__init__(model, low=low, high=high)
        if isinstance(baseline, str) and baseline not in ("zero", "black", "uniform"):
            raise ValueError(
                f"unknown baseline {baseline!r}; one of 'zero', 'black', 'uniform', a number or a tensor"
            )
        self.baseline = baseline
        self.steps = int(steps)
        self.method = method
        self.alphas, self.weights = quadrature(method, self.steps)
        self.chunk = max(1, int(chunk))
        self.seed = int(seed)
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
        if b == "black":
            return torch.full_like(x, self.low)
        gen = torch.Generator().manual_seed(self.seed)
        noise = torch.rand(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        return self.low + (self.high - self.low) * noise

    def attribute(self, x: Tensor, target: Tensor) -> Tensor:
        x0 = self.reference(x)
        alphas = torch.as_tensor(self.alphas, dtype=x.dtype, device=x.device)
        weights = torch.as_tensor(self.weights, dtype=x.dtype, device=x.device)
        n, steps = x.shape[0], self.steps
        view = (-1,) + (1,) * (x.ndim - 1)
        total = torch.zeros_like(x)
        for start in range(0, n * steps, self.chunk):  # chunks of the stacked (sample, step) rows
            rows = torch.arange(start, min(start + self.chunk, n * steps), device=x.device)
            b, k = rows // steps, rows % steps
            xs = x0[b] + alphas[k].view(view) * (x[b] - x0[b])
            grad, _ = input_gradient(self.model, xs, target[b])
            total.index_add_(0, b, grad * weights[k].view(view))
        attr = (x - x0) * total
        self._completeness(x, x0, target, attr)
        return attr

    @torch.no_grad()
    def _completeness(self, x: Tensor, x0: Tensor, target: Tensor, attr: Tensor) -> None:
        both, t2 = torch.cat([x, x0]), torch.cat([target, target])
        f = torch.cat([
            target_logits(self.model, both[i : i + self.chunk], t2[i : i + self.chunk])
            for i in range(0, both.shape[0], self.chunk)
        ])
        delta = f[: x.shape[0]] - f[x.shape[0] :]
        gap = attr.flatten(1).sum(1) - delta
        self.last_completeness_gap = gap
        self.last_completeness_error = gap.abs() / delta.abs().clamp_min(torch.finfo(x.dtype).tiny)


@register("smoothgrad")
class SmoothGrad(BaseExplainer):
    """SmoothGrad (Smilkov et al. 2017) of any method: the mean of ``base(x + noise)`` over ``n`` draws.

    Args:
        base: a registered method name (or ``"pkg.module:factory"``), or an explainer object.
        n: noise draws (default 50).
        noise_level: noise std as a fraction of a range, ``sigma = noise_level * range``.
        noise_scale: which range: ``"data"`` (default, as the paper: ``max(x_i) - min(x_i)`` of
            each sample) or ``"domain"`` (``high - low``). Both are invariant under a constant
            input shift; ``"domain"`` also under any shift that keeps the domain's width.
        sigma: an absolute noise std; overrides ``noise_level``/``noise_scale`` when given. A number,
            or a tensor broadcastable to one input (``C x H x W``; the same for every sample) for a
            per-element std: the noise of element ``j`` is ``sigma[j]`` times the same standard-normal
            draw. The input-invariance harness gives the twin of a transform ``x' = s x + m`` the
            reference's ``sigma`` times ``s``, so that the twin's noisy inputs are exactly the
            reference's pushed through the transform.
        squared: average ``base(...) ** 2`` (SmoothGrad-Squared, Hooker et al. 2019) instead; registered as
            ``smoothgrad_squared``.
        variance: the variance of ``base(...)`` over the draws instead of its mean (VarGrad, Adebayo et al. 2018):
            ``mean_i (m_i - mean_j m_j) ** 2`` (divided by ``n``, as captum's NoiseTunnel ``vargrad``), accumulated
            one draw at a time (Welford), so a map that does not change with the noise gives exactly 0 and the result
            does not depend on ``chunk``; registered as ``vargrad``. At most one of ``squared`` / ``variance``.
        seed: seeds the noise at every call (CPU generator; same noise on every device).
        chunk: noisy rows handed to the base method per call (bounds memory).
        base_params / other keywords: the base method's parameters, so SmoothGrad of a method
            inherits that method's parameters; ``low`` / ``high`` go to the base too.

    ``needs_fit`` and ``fit(loader)`` are forwarded to the base (PatternNet/-Attribution).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        base: str | Callable[..., Tensor] = "gradient",
        n: int = 50,
        noise_level: float = 0.15,
        noise_scale: str = "data",
        sigma: float | Tensor | None = None,
        squared: bool = False,
        variance: bool = False,
        seed: int = 0,
        chunk: int = 256,
        base_params: dict[str, Any] | None = None,
        low: float = 0.0,
        high: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, low=low, high=high)
        if int(n) < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if noise_scale not in ("data", "domain"):
            raise ValueError(f"noise_scale must be 'data' or 'domain', got {noise_scale!r}")
        if noise_level < 0:
            raise ValueError(f"noise_level must be >= 0, got {noise_level}")
        if squared and variance:
            raise ValueError("squared (SmoothGrad-Squared) and variance (VarGrad) are two statistics: pick one")
        params = {**dict(base_params or {}), **kwargs}
        if isinstance(base, str):
            if base in _NOISE_METHODS:
                raise ValueError(f"{base} as the base of {self._name(squared, variance)}: pick another base method")
            factory = get_factory(base)
            for key, value in (("low", low), ("high", high)):
                if accepts(factory, key):
                    params.setdefault(key, value)
            self.base = factory(model, **params)
        elif callable(base):
            if params:
                raise ValueError(
                    f"base is an explainer object; parameters {sorted(params)} cannot be applied to it"
                )
            self.base = base
        else:
            raise TypeError(f"base must be a method name or an explainer, got {type(base).__name__}")
        self.base_name = base if isinstance(base, str) else type(base).__name__
        self.n = int(n)
        self.noise_level = float(noise_level)
        self.noise_scale = noise_scale
        self.fixed_sigma: float | Tensor | None = (
            None if sigma is None else sigma.detach() if isinstance(sigma, Tensor) else float(sigma)
        )
        if self.fixed_sigma is not None and not bool(torch.as_tensor(self.fixed_sigma).ge(0).all()):
            raise ValueError(f"sigma must be >= 0 everywhere (and not NaN), got {sigma}")
        self.squared = bool(squared)
        self.variance = bool(variance)
        self.seed = int(seed)
        self.chunk = max(1, int(chunk))

    @property
    def needs_fit(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.base, "needs_fit", False))

    def fit(self, loader: Any, **kwargs: Any) -> SmoothGrad:
        """Fit the base method on ``loader`` (methods with ``needs_fit``); returns ``self``."""
        if not hasattr(self.base, "fit"):
            raise AttributeError(f"base method {self.base_name!r} has no fit()")
        self.base.fit(loader, **kwargs)
        return self

    def sigma(self, x: Tensor) -> Tensor:
        """Noise std broadcastable to ``x``: ``[B, 1, ...]`` (``"data"``), 0-d (``"domain"``, a number ``sigma``)
        or ``sigma``'s shape (a tensor ``sigma``). Raises ``ValueError`` for a tensor ``sigma`` that does not
        broadcast to one input of ``x``."""
        if isinstance(self.fixed_sigma, Tensor):
            shape = tuple(x.shape[1:])
            try:
                fits = torch.broadcast_shapes(self.fixed_sigma.shape, shape) == shape
            except RuntimeError:
                fits = False
            if not fits:
                raise ValueError(f"sigma of shape {tuple(self.fixed_sigma.shape)} does not broadcast to one input "
                                 f"{shape}")
            return self.fixed_sigma.to(dtype=x.dtype, device=x.device)
        if self.fixed_sigma is not None:
            return torch.tensor(self.fixed_sigma, dtype=x.dtype, device=x.device)
        if self.noise_scale == "domain":
            return torch.tensor(self.noise_level * (self.high - self.low), dtype=x.dtype, device=x.device)
        flat = x.flatten(1)
        spread = flat.amax(1) - flat.amin(1)
        return (self.noise_level * spread).view((-1,) + (1,) * (x.ndim - 1))

    def attribute(self, x: Tensor, target: Tensor) -> Tensor:
        sigma = self.sigma(x)
        gen = torch.Generator().manual_seed(self.seed)
        per_call = max(1, self.chunk // x.shape[0])  # draws per base call; rows = draws x batch
        total = torch.zeros_like(x)  # the sum of the maps (of their squares); for the variance: the running mean
        spread = torch.zeros_like(x) if self.variance else None  # the sum of squared deviations (Welford's M2)
        drawn = 0
        for start in range(0, self.n, per_call):
            k = min(per_call, self.n - start)
            noise = torch.stack([_randn(x.shape, gen, x) for _ in range(k)])  # one draw at a time: chunk-free
            noisy = (x + sigma * noise).flatten(0, 1)  # [k * B, ...], draw-major
            maps = self.base(noisy, target.repeat(k)).view(k, *x.shape)
            if spread is not None:
                for m in maps:  # Welford, one draw at a time: no cancellation, exactly 0 for a constant map
                    drawn += 1
                    delta = m - total
                    total += delta / drawn
                    spread += delta * (m - total)
            else:
                total += (maps * maps if self.squared else maps).sum(0)
        return spread / self.n if spread is not None else total / self.n

    @staticmethod
    def _name(squared: bool, variance: bool) -> str:
        return "VarGrad" if variance else "SmoothGradSquared" if squared else "SmoothGrad"

    def __repr__(self) -> str:
        return (
            f"{self._name(self.squared, self.variance)}({self.base!r}, n={self.n}, noise_level={self.noise_level}, "
            f"noise_scale={self.noise_scale!r})"
        )


#: the noise-averaging methods, which cannot be one another's base
_NOISE_METHODS = ("smoothgrad", "smoothgrad_squared", "vargrad")


#: SmoothGrad-Squared (Hooker et al. 2019, "A Benchmark for Interpretability Methods in Deep Neural Networks"): the
#: mean of ``base(x + noise) ** 2`` over ``n`` draws, i.e. :class:`SmoothGrad` with ``squared=True`` (its noise
#: convention and parameters: ``noise_level`` 0.15 of each input's range, seeded). A partial keeps SmoothGrad's
#: signature, which the harness reads (``n`` for the cost model, ``sigma`` for the input-invariance twins).
SmoothGradSquared = register("smoothgrad_squared")(functools.partial(SmoothGrad, squared=True))

#: VarGrad (Adebayo et al. 2018, "Local explanation methods for deep neural networks lack sensitivity to parameter
#: values"): the variance of ``base(x + noise)`` over ``n`` draws, i.e. :class:`SmoothGrad` with ``variance=True``
#: (same noise convention and parameters).
VarGrad = register("vargrad")(functools.partial(SmoothGrad, variance=True))
