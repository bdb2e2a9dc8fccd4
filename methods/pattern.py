"""PatternNet and PatternAttribution (Kindermans et al., ICLR 2018, "Learning how to explain neural
networks: PatternNet and PatternAttribution"), hand-written (zennit has neither).

Both methods need data: every ``Linear``/``Conv2d`` layer gets a *pattern* ``A`` (shaped like its weight)
estimated from input/output statistics of that layer. ``fit(loader)`` makes ONE pass over the loader with
forward hooks and accumulates float64 sums (never running means); a ``Conv2d`` treats every output
position as a sample (its inputs are the ``F.unfold`` patches, padding included), processed in chunks of
at most ``chunk_elements`` float64 values.

For output unit ``k`` with weight row ``w`` and output ``y = w^T x + b`` the pattern is ``a = v / (w^T v)``
where, with ``E+`` the mean over the samples whose output is positive (``y > 0``):

* ``"linear"``      ``v = cov[x, y] = E[xy] - E[x] E[y]``
* ``"relu_paper"``  ``v = E+[xy] - E+[x] E[y]``    (the two-component estimator a+ as printed in the paper)
* ``"relu"``        ``v = E+[xy] - E+[x] E+[y]``   (``= cov+[x, y]``, the covariance in the positive regime)

The ReLU estimators apply to layers whose output reaches a ``ReLU`` before the next kernel layer through
layers that commute with it (``MaxPool2d``, ``Flatten``, ``Dropout``, ``Identity``); every other layer,
the logit layer in particular, uses ``"linear"`` as in the paper (no positive regime to model).

Default ``"relu"``. A bias-compensated input shift (``x -> x + m``, first bias ``b -> b - W m``) leaves every
layer's output, hence every ReLU/max-pool mask, unchanged. Covariances ignore the shift, so ``linear``
and ``relu`` give identical patterns and maps on a dense first layer (measured ~1e-14 in float64); a convolution
pools its patches over positions, which is exact for a constant shift up to the zero-padded border, while a shift
that varies over positions adds ``cov(m_p, y)`` to the pooled statistics (:mod:`bench.experiments.invariance`
gives the numbers). ``relu_paper`` moves the
first layer's ``v`` by ``m (E+[y] - E[y])``: PatternAttribution with the estimator as printed is NOT input
invariant, contrary to the unreliability paper's "by construction" claim. ``relu`` keeps the paper's
positive-regime model, is invariant, and is what iNNvestigate's reference ``ReluPositivePattern`` computes
(all moments masked to ``y > 0``); ``relu_paper`` is offered so the leaderboard can show the difference.

Backward (``explainer(x, target)``): the forward pass is the model's own; each kernel layer's backward is
replaced by the transposed operation with ``A`` (PatternNet) or ``W * A`` (PatternAttribution); ReLU
gating and max-pool routing come from autograd exactly as in the gradient. The output is seeded with the
target logit's value (zero for the other classes). "DTD with the PatternAttribution root point"
(``x0 = x - a w^T x``) is PatternAttribution.

Degenerate units (no positive sample, zero output variance, ``|w^T v|`` below ``tol`` times its scale, or a
non-finite value) get a zero pattern; ``n_degenerate`` counts them per layer.

Patterns depend on the weights: ``fit`` records a fingerprint of every parameter (float64 sums: plain,
absolute, of squares and of neighbour products, so permutations are caught too) and the
explainer refuses (``StalePatternsError``) to run once any of it changed, e.g. after a randomization; call
``fit(loader)`` again. Changes below ~1e-10 of a tensor's L1 norm are not detected.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.registry import BaseExplainer, explaining, register, target_logits
from methods.state import fingerprint

__all__ = [
    "ESTIMATORS",
    "NotFittedError",
    "PatternExplainer",
    "StalePatternsError",
    "pattern_attribution",
    "pattern_net",
]

ESTIMATORS = ("linear", "relu", "relu_paper")
_KERNEL = (nn.Linear, nn.Conv2d)
_PASS = (nn.Flatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)
_COMMUTES_WITH_RELU = (nn.MaxPool2d,) + _PASS
_SUPPORTED = _KERNEL + (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d) + _PASS
_SUPPORTED_TEXT = ("nn.Sequential (nested allowed) of Linear, Conv2d (groups=1), ReLU, MaxPool2d, AvgPool2d, "
                   "Flatten, Dropout/Dropout1d/2d/3d, Identity")
_FP_RTOL = 1e-10


class NotFittedError(RuntimeError):
    """The explainer was called before ``fit(loader)``."""


class StalePatternsError(RuntimeError):
    """The model changed since the patterns were fit."""


def _layer_sequence(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules in execution order; ``ValueError`` naming anything the backward cannot follow."""
    out: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def walk(prefix: str, mod: nn.Module) -> None:
        where = prefix or "model"
        if isinstance(mod, nn.Sequential):
            if type(mod).forward is not nn.Sequential.forward:
                raise ValueError(f"pattern methods: {where} ({type(mod).__name__}) overrides "
                                 f"Sequential.forward; supported: {_SUPPORTED_TEXT}")
            for name, child in mod.named_children():
                walk(f"{prefix}.{name}" if prefix else name, child)
            return
        if not isinstance(mod, _SUPPORTED):
            has = " (has parameters)" if any(True for _ in mod.parameters()) else ""
            shown = repr(mod) if len(repr(mod)) <= 120 else f"{type(mod).__name__}(...)"  # not a whole network
            raise ValueError(f"pattern methods do not support module {where}: {type(mod).__name__}{has} "
                             f"[{shown}]; supported: {_SUPPORTED_TEXT}")
        if isinstance(mod, nn.Conv2d) and mod.groups != 1:
            raise ValueError(f"pattern methods: {where} ({mod!r}) has groups={mod.groups}; only groups=1")
        if isinstance(mod, nn.MaxPool2d) and mod.return_indices:
            raise ValueError(f"pattern methods: {where} ({mod!r}) returns indices; not supported")
        if id(mod) in seen:
            raise ValueError(f"pattern methods: module {where} ({mod!r}) is used twice; not supported")
        seen.add(id(mod))
        out.append((prefix or type(mod).__name__, mod))

    walk("", model)
    if not any(isinstance(m, _KERNEL) for _, m in out):
        raise ValueError("pattern methods: the model has no Linear or Conv2d layer")
    return out


def _followed_by_relu(seq: list[tuple[str, nn.Module]], i: int) -> bool:
    """True if the output of ``seq[i]`` reaches a ReLU through layers that commute with it."""
    for _, m in seq[i + 1:]:
        if isinstance(m, nn.ReLU):
            return True
        if not isinstance(m, _COMMUTES_WITH_RELU):
            return False
    return False


def _rows(mod: nn.Module, x: Tensor, y: Tensor, chunk: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield float64 chunks ``(X[r, D], Y[r, K])``: one row per sample (Linear) or output position (Conv2d).

    ``D`` is ``in_features`` or ``C_in * kh * kw``, ordered like ``weight.reshape(K, -1)``.
    """
    if isinstance(mod, nn.Linear):
        X, Y = x.reshape(-1, mod.in_features), y.reshape(-1, mod.out_features)
        step = max(1, chunk // mod.in_features)
        for i in range(0, X.shape[0], step):
            yield X[i:i + step].double(), Y[i:i + step].double()
        return
    assert isinstance(mod, nn.Conv2d)
    mode = "constant" if mod.padding_mode == "zeros" else mod.padding_mode
    xp = F.pad(x, mod._reversed_padding_repeated_twice, mode=mode)  # any padding (incl. "same") and mode
    K, D, L = mod.out_channels, mod.weight[0].numel(), y.shape[-2] * y.shape[-1]
    step = max(1, chunk // (D * L))
    for i in range(0, x.shape[0], step):
        cols = F.unfold(xp[i:i + step], mod.kernel_size, dilation=mod.dilation, stride=mod.stride)  # b, D, L
        yield (cols.transpose(1, 2).reshape(-1, D).double(),
               y[i:i + step].reshape(-1, K, L).transpose(1, 2).reshape(-1, K).double())


class PatternExplainer(BaseExplainer):
    """PatternNet (``attribution=False``) or PatternAttribution (``attribution=True``).

    Args:
        model: an ``nn.Sequential`` (nested allowed) of Linear, Conv2d, ReLU, MaxPool2d, AvgPool2d, Flatten,
            Dropout, Identity; output ``B x classes``.
        estimator: ``"relu"`` (default; E+[y], input invariant), ``"relu_paper"`` (E[y] over all samples, as
            printed; not invariant to input shifts) or ``"linear"`` everywhere. See the module docstring.
        tol: a unit is degenerate (pattern 0) where ``|w^T v| <= tol * max(E[y^2], |w| |v|)`` (moments over
            the estimator's samples; ``w^T v`` is the output variance), where it has no positive sample, or
            where a value is not finite.
        chunk_elements: at most about this many float64 values per chunk of unfolded inputs during ``fit``.
        low, high: the data domain; accepted for the common signature, not used.

    After ``fit``: ``patterns`` (layer name -> Tensor shaped like the weight), ``n_degenerate`` (name -> int),
    ``layer_estimators`` (name -> estimator used), ``n_samples`` (name -> rows seen: samples or sample x
    position), ``stats`` (name -> float64 sums on the CPU: ``n, sy`` and ``sx, sxy, syy`` (linear) or
    ``npos, sxp, syp, syyp, sxyp`` (ReLU); ``sxy[d, k] = sum x_d y_k``, ``sxp[d, k] = sum_{y_k > 0} x_d``).
    """

    needs_fit = True

    def __init__(self, model: nn.Module, *, attribution: bool, estimator: str = "relu", tol: float = 1e-8,
                 chunk_elements: int = 2**24, low: float = 0.0, high: float = 1.0) -> None:
        super().__init__(model, low=low, high=high)
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if not tol >= 0:
            raise ValueError(f"tol must be >= 0, got {tol}")
        if chunk_elements < 1:
            raise ValueError(f"chunk_elements must be >= 1, got {chunk_elements}")
        self.attribution = attribution
        self.estimator = estimator
        self.tol = float(tol)
        self.chunk_elements = int(chunk_elements)
        self._seq = _layer_sequence(model)
        self._kernels = [(n, m) for n, m in self._seq if isinstance(m, _KERNEL)]
        self.layer_estimators: dict[str, str] = {
            n: (estimator if estimator != "linear" and _followed_by_relu(self._seq, i) else "linear")
            for i, (n, m) in enumerate(self._seq) if isinstance(m, _KERNEL)
        }
        self._patterns: dict[str, Tensor] | None = None
        self._fp: tuple[list[tuple[str, tuple[int, ...], torch.dtype]], Tensor] | None = None
        self._eff_cache: dict[tuple[torch.device, torch.dtype], dict[str, Tensor]] = {}
        self.n_degenerate: dict[str, int] = {}
        self.n_samples: dict[str, int] = {}
        self.stats: dict[str, dict[str, Any]] = {}

    @property
    def name(self) -> str:
        return "pattern_attribution" if self.attribution else "pattern_net"

    @property
    def fitted(self) -> bool:
        return self._patterns is not None

    @property
    def patterns(self) -> dict[str, Tensor]:
        """Layer name -> pattern ``A`` shaped like that layer's weight."""
        if self._patterns is None:
            raise NotFittedError(f"{self.name}: no patterns yet; call .fit(loader) first")
        return dict(self._patterns)

    def __repr__(self) -> str:
        return (f"PatternExplainer({self.name}, estimator={self.estimator!r}, tol={self.tol}, "
                f"fitted={self.fitted})")

    # ------------------------------------------------------------------ fit
    def fit(self, loader: Iterable[Any], *, max_batches: int | None = None) -> PatternExplainer:
        """Estimate the patterns in one pass over ``loader`` (batches ``x`` or ``(x, y, ...)``); returns self.

        May be called again (e.g. after the weights changed); each call starts from empty sums.
        """
        self._check_structure()
        param = next(self.model.parameters())
        stats: dict[str, dict[str, Any]] = {}
        for n, m in self._kernels:
            K, D = m.weight.shape[0], m.weight[0].numel()
            shapes = {"sx": (D,), "sxy": (D, K), "syy": (K,)} if self.layer_estimators[n] == "linear" else {
                "npos": (K,), "sxp": (D, K), "syp": (K,), "syyp": (K,), "sxyp": (D, K)}
            st: dict[str, Any] = {"n": 0, "sy": torch.zeros(K, dtype=torch.float64, device=param.device)}
            for k, s in shapes.items():
                st[k] = torch.zeros(s, dtype=torch.float64, device=param.device)
            stats[n] = st

        def hook(name: str, mod: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            st, linear = stats[name], self.layer_estimators[name] == "linear"
            for X, Y in _rows(mod, args[0].detach(), out.detach(), self.chunk_elements):
                st["n"] += X.shape[0]
                st["sy"] += Y.sum(0)
                if linear:
                    st["sx"] += X.sum(0)
                    st["syy"] += (Y * Y).sum(0)
                    st["sxy"] += X.T @ Y
                else:
                    M = (Y > 0).double()
                    YM = Y * M
                    st["npos"] += M.sum(0)
                    st["sxp"] += X.T @ M
                    st["syp"] += YM.sum(0)
                    st["syyp"] += (YM * YM).sum(0)
                    st["sxyp"] += X.T @ YM

        handles = []
        n_batches = 0
        with explaining(self.model), torch.no_grad():
            try:
                for n, m in self._kernels:
                    handles.append(m.register_forward_hook(lambda mod, a, o, _n=n: hook(_n, mod, a, o)))
                for batch in loader:
                    if max_batches is not None and n_batches >= max_batches:
                        break
                    x = batch[0] if isinstance(batch, (tuple, list)) and len(batch) else batch
                    if not isinstance(x, Tensor):
                        raise TypeError(f"{self.name}.fit: the loader must yield tensors or (x, y) tuples, "
                                        f"got {type(batch).__name__}")
                    x = x.to(device=param.device, dtype=param.dtype if x.is_floating_point() else None)
                    self.model(x)
                    n_batches += 1
            finally:
                for h in handles:
                    h.remove()
        if n_batches == 0:
            raise ValueError(f"{self.name}.fit: the loader yielded no batches")

        patterns, n_degenerate = {}, {}
        for n, m in self._kernels:
            W = m.weight.detach().reshape(m.weight.shape[0], -1).double()
            A, bad = _compute_pattern(W, stats[n], self.layer_estimators[n], self.tol)
            patterns[n] = A.reshape(m.weight.shape).to(m.weight.dtype)
            n_degenerate[n] = int(bad.sum())
        self.stats = {n: {k: (v.cpu() if isinstance(v, Tensor) else v) for k, v in st.items()}
                      for n, st in stats.items()}
        self.n_samples = {n: int(st["n"]) for n, st in stats.items()}
        self._set(patterns, n_degenerate)
        return self

    def load_patterns(self, patterns: Mapping[str, Tensor]) -> PatternExplainer:
        """Use given patterns (layer name -> Tensor shaped like its weight) for the CURRENT weights."""
        self._check_structure()
        names = [n for n, _ in self._kernels]
        if set(patterns) != set(names):
            raise ValueError(f"{self.name}: patterns for {sorted(patterns)}, expected {names}")
        out = {}
        for n, m in self._kernels:
            A = torch.as_tensor(patterns[n]).detach()
            if A.shape != m.weight.shape:
                raise ValueError(f"{self.name}: pattern {n} has shape {tuple(A.shape)}, "
                                 f"weight {tuple(m.weight.shape)}")
            out[n] = A.to(device=m.weight.device, dtype=m.weight.dtype).clone()
        self._set(out, {n: int((A.reshape(A.shape[0], -1) == 0).all(1).sum()) for n, A in out.items()})
        return self

    def _set(self, patterns: dict[str, Tensor], n_degenerate: dict[str, int]) -> None:
        self._patterns = patterns
        self.n_degenerate = n_degenerate
        self._eff_cache = {}
        self._fp = fingerprint(self.model, buffers=False)

    # ------------------------------------------------------------------ checks
    def _check_structure(self) -> None:
        seq = _layer_sequence(self.model)
        if [(n, id(m)) for n, m in seq] != [(n, id(m)) for n, m in self._seq]:
            raise StalePatternsError(f"{self.name}: the model's modules changed since the explainer was "
                                     "built; create a new explainer")

    def _check_fresh(self) -> None:
        if self._patterns is None or self._fp is None:
            raise NotFittedError(f"{self.name} needs data: call .fit(loader) before explaining "
                                 "(patterns are estimated from layer statistics)")
        self._check_structure()
        keys, fp = fingerprint(self.model, buffers=False)
        keys0, fp0 = self._fp
        if keys != keys0:
            changed = sorted(set(keys) ^ set(keys0))
            raise StalePatternsError(f"{self.name}: the model's parameters were replaced or reshaped since "
                                     f"fit ({changed[:4]}); call .fit(loader) again")
        scale = torch.stack([fp0[:, 1], fp0[:, 1], fp0[:, 2], fp0[:, 2]], 1)
        diff = (fp - fp0).abs()
        bad = ~(diff <= _FP_RTOL * scale).all(1)
        if bool(bad.any()):
            names = [keys[i][0] for i in torch.nonzero(bad).flatten().tolist()]
            rel = float((diff / scale.clamp(min=1e-300)).max())
            raise StalePatternsError(
                f"{self.name}: parameters {names} changed since fit (relative fingerprint change {rel:.3g}); "
                "patterns depend on the weights: call .fit(loader) again after changing the model "
                "(e.g. after a randomization)")

    # ------------------------------------------------------------------ explain
    def _effective(self, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
        """Backward kernels: ``A`` (PatternNet) or ``W * A`` (PatternAttribution), shaped like the weights."""
        key = (device, dtype)
        if key not in self._eff_cache:
            assert self._patterns is not None
            eff = {}
            for n, m in self._kernels:
                A = self._patterns[n].to(device=device, dtype=dtype)
                eff[n] = A * m.weight.detach().to(device=device, dtype=dtype) if self.attribution else A
            self._eff_cache = {key: eff}
        return self._eff_cache[key]

    def __call__(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        """Explain ``x[B, ...]`` for ``target`` (``LongTensor[B]``, int, or None = the predicted class).

        Returns a tensor shaped like ``x`` (its dtype and device): the pattern backward of the target logit
        seeded with its value. Raises ``NotFittedError`` before ``fit``, ``StalePatternsError`` after the
        weights changed.
        """
        self._check_fresh()
        return super().__call__(x, target)

    def attribute(self, x: Tensor, target: Tensor) -> Tensor:
        """The pattern backward for a resolved ``target[B]`` (runs inside ``explaining``)."""
        param = next(self.model.parameters())
        eff = self._effective(param.device, param.dtype)

        def surrogate(name: str, mod: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
            inp, A = args[0], eff[name]
            sur = F.linear(inp, A) if isinstance(mod, nn.Linear) else mod._conv_forward(inp, A, None)
            # forward value: exactly the layer's output; backward: the transposed operation with A
            return out.detach() + (sur - sur.detach())

        handles = [m.register_forward_hook(lambda mod, a, o, _n=n: surrogate(_n, mod, a, o))
                   for n, m in self._kernels]
        try:
            xg = x.detach().requires_grad_(True)
            logit = target_logits(self.model, xg, target)  # [B]
            (grad,) = torch.autograd.grad(logit, xg, logit.detach())
        finally:
            for h in handles:
                h.remove()
        return grad


def _compute_pattern(W: Tensor, st: Mapping[str, Any], estimator: str, tol: float) -> tuple[Tensor, Tensor]:
    """Patterns ``A[K, D]`` and the degenerate-unit mask ``[K]`` from weights ``W[K, D]`` and float64 sums."""
    n = max(int(st["n"]), 1)
    if estimator == "linear":
        V = st["sxy"] / n - torch.outer(st["sx"] / n, st["sy"] / n)  # D x K
        scale = st["syy"] / n
        count = torch.full_like(scale, float(st["n"]))
    else:
        count = st["npos"]
        c = count.clamp(min=1)
        Ey = st["syp"] / c if estimator == "relu" else st["sy"] / n
        V = st["sxyp"] / c - (st["sxp"] / c) * Ey
        scale = st["syyp"] / c
    V = V.T  # K x D
    den = (W * V).sum(1)
    ok = (count > 0) & torch.isfinite(den) & torch.isfinite(V).all(1)
    ok &= den.abs() > tol * torch.maximum(scale, W.norm(dim=1) * V.norm(dim=1))
    A = torch.where(ok[:, None], V / torch.where(ok, den, torch.ones_like(den))[:, None], torch.zeros_like(V))
    return A, ~ok


@register("pattern_net")
def pattern_net(model: nn.Module, *, estimator: str = "relu", tol: float = 1e-8, chunk_elements: int = 2**24,
                low: float = 0.0, high: float = 1.0) -> PatternExplainer:
    """PatternNet: the ``A``-backward of the target logit. Needs ``.fit(loader)``; ``low``/``high`` unused."""
    return PatternExplainer(model, attribution=False, estimator=estimator, tol=tol,
                            chunk_elements=chunk_elements, low=low, high=high)


@register("pattern_attribution")
def pattern_attribution(model: nn.Module, *, estimator: str = "relu", tol: float = 1e-8,
                        chunk_elements: int = 2**24, low: float = 0.0, high: float = 1.0) -> PatternExplainer:
    """PatternAttribution (= DTD with the PA root point): the ``W * A``-backward. Needs ``.fit(loader)``."""
    return PatternExplainer(model, attribution=True, estimator=estimator, tol=tol,
                            chunk_elements=chunk_elements, low=low, high=high)
