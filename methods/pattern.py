"""PatternNet and PatternAttribution (Kindermans et al., ICLR 2018, "Learning how to explain neural
networks: PatternNet and PatternAttribution").

Both methods need data: every ``Linear``/``Conv2d`` layer gets a *pattern* ``A`` (shaped like its weight)
estimated from input/output statistics of that layer over a data set. ``fit(loader)`` makes ONE pass
over the loader with forward hooks and accumulates float64 sums (never running means); a ``Conv2d``
treats every output position as a sample (its inputs are the ``F.unfold`` patches, zero or other
padding included), processed in chunks of at most ``chunk_elements`` float64 values.

For output unit ``k`` with weight row ``w`` the pattern is ``a = v / (w^T v)`` where, with E+ the mean
over samples whose output ``y = w^T x + b`` is positive:

* ``"linear"``      v = cov[x, y] = E[xy] - E[x] E[y]
* ``"relu_paper"``  v = E+[xy] - E+[x] E[y]          (the paper's two-component estimator a+)
* ``"relu"``        v = E+[xy] - E+[x] E+[y]         (= cov+[x, y], the covariance over the positive regime)

The ReLU estimators are used for layers whose output reaches a ``ReLU`` before the next kernel layer
(max-pool, flatten, dropout in between are allowed); every other layer, in particular the logit
layer, uses ``"linear"`` as in the paper (no non-linearity follows it, so there is no positive regime
to model). ``estimator="linear"`` uses the linear estimator everywhere.

Default ``"relu"``. A bias-compensated input shift (x -> x + m, first bias b -> b - W m) leaves every
layer's output, and thus every mask, unchanged; then ``linear`` and ``relu`` are exactly invariant
(covariances ignore constant shifts), but ``relu_paper`` changes by ``m (E+[y] - E[y])`` in the first
layer, so PatternAttribution with the paper's estimator is NOT input invariant (contrary to the
unreliability paper's claim that PA is invariant "by construction"). ``relu`` keeps the paper's
positive-regime modelling and the invariance the benchmark tests; ``relu_paper`` is offered to show
the difference.

Backward (``explainer(x, target)``): the forward pass is the model's own; each kernel layer's backward
is replaced by the transposed operation with ``A`` (PatternNet) or ``W * A`` (PatternAttribution);
ReLU gating and max-pool routing come from autograd exactly as in the gradient. The output is seeded
with the target logit's value (zero for the other classes). "DTD with the PatternAttribution root
point" (x0 = x - a w^T x) is PatternAttribution.

Patterns depend on the weights: the explainer keeps a copy of the parameters it was fit on and
refuses (``StalePatternsError``) to explain once they changed (e.g. after a randomization); call
``fit(loader)`` again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.registry import register, resolve_target

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
_SUPPORTED = _KERNEL + (nn.ReLU, nn.MaxPool2d) + _PASS
_SUPPORTED_TEXT = (
    "nn.Sequential (nested allowed) of Linear, Conv2d (groups=1), ReLU, MaxPool2d, Flatten, "
    "Dropout/Dropout1d/2d/3d, Identity"
)


class NotFittedError(RuntimeError):
    """The explainer was called before ``fit(loader)``."""


class StalePatternsError(RuntimeError):
    """The model changed since the patterns were fit."""


def _layer_sequence(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules in execution order; ValueError for anything the backward cannot follow."""
    out: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()

    def walk(prefix: str, mod: nn.Module) -> None:
        if isinstance(mod, nn.Sequential):
            if type(mod).forward is not nn.Sequential.forward:
                raise ValueError(f"pattern methods: {prefix or 'model'} ({type(mod).__name__}) overrides "
                                 f"Sequential.forward; supported: {_SUPPORTED_TEXT}")
            for name, child in mod.named_children():
                walk(f"{prefix}.{name}" if prefix else name, child)
            return
        if not isinstance(mod, _SUPPORTED):
            raise ValueError(f"pattern methods do not support module {prefix or 'model'} ({mod!r}); "
                             f"supported: {_SUPPORTED_TEXT}")
        if isinstance(mod, nn.Conv2d) and mod.groups != 1:
            raise ValueError(f"pattern methods: {prefix} ({mod!r}) has groups={mod.groups}; only groups=1")
        if isinstance(mod, nn.MaxPool2d) and mod.return_indices:
            raise ValueError(f"pattern methods: {prefix} ({mod!r}) returns indices; not supported")
        if id(mod) in seen:
            raise ValueError(f"pattern methods: module {prefix} ({mod!r}) is used twice; not supported")
        seen.add(id(mod))
        out.append((prefix or type(mod).__name__, mod))

    walk("", model)
    if not any(isinstance(m, _KERNEL) for _, m in out):
        raise ValueError("pattern methods: the model has no Linear or Conv2d layer")
    return out


def _followed_by_relu(seq: list[tuple[str, nn.Module]], i: int) -> bool:
    """True if the output of ``seq[i]`` reaches a ReLU before the next kernel layer."""
    for _, m in seq[i + 1:]:
        if isinstance(m, nn.ReLU):
            return True
        if isinstance(m, _KERNEL):
            return False
    return False


def _rows(mod: nn.Module, x: Tensor, y: Tensor, chunk: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield float64 ``(X[r, D], Y[r, K])`` chunks: one row per sample (Linear) or output position (Conv2d).

    ``D`` is ``in_features`` or ``C_in * kh * kw`` (ordered like ``weight.reshape(K, -1)``).
    """
    if isinstance(mod, nn.Linear):
        X, Y = x.reshape(-1, mod.in_features), y.reshape(-1, mod.out_features)
        step = max(1, chunk // mod.in_features)
        for i in range(0, X.shape[0], step):
            yield X[i:i + step].double(), Y[i:i + step].double()
        return
    assert isinstance(mod, nn.Conv2d)
    mode = "constant" if mod.padding_mode == "zeros" else mod.padding_mode
    xp = F.pad(x, mod._reversed_padding_repeated_twice, mode=mode)  # handles padding="same" and modes
    K, D, L = mod.out_channels, mod.weight[0].numel(), y.shape[-2] * y.shape[-1]
    step = max(1, chunk // (D * L))
    for i in range(0, x.shape[0], step):
        cols = F.unfold(xp[i:i + step], mod.kernel_size, dilation=mod.dilation, stride=mod.stride)
        yield cols.transpose(1, 2).reshape(-1, D).double(), y[i:i + step].reshape(-1, K, L).transpose(
            1, 2).reshape(-1, K).double()


class PatternExplainer:
    """PatternNet (``attribution=False``) or PatternAttribution (``attribution=True``).

    Args:
        model: an ``nn.Sequential`` (nested allowed) of Linear, Conv2d, ReLU, MaxPool2d, Flatten,
            Dropout, Identity; output ``B x classes``.
        estimator: ``"relu"`` (default, E+[y]; input invariant), ``"relu_paper"`` (E[y] over all samples,
            as printed in the paper; not invariant to input shifts) or ``"linear"``. See module docstring.
        tol: a unit's pattern is set to 0 where ``|w^T v| <= tol * |w| * |v|`` (a near-zero denominator
            relative to the vectors' norms; also dead units with no positive sample). Counted in
            ``n_zeroed``.
        chunk_elements: at most this many float64 values per chunk of unfolded inputs during ``fit``.

    After ``fit``: ``patterns`` (name -> Tensor shaped like the weight), ``n_zeroed`` (name -> int),
    ``estimators`` (name -> estimator used), ``n_samples`` (name -> rows seen), ``stats`` (name -> the
    float64 sums on CPU: ``n, sy`` and ``sx, sxy`` (linear) or ``npos, sxp, syp, sxyp`` (ReLU), where
    ``sxy[d, k] = sum x_d y_k``).
    """

    needs_fit = True

    def __init__(self, model: nn.Module, *, attribution: bool, estimator: str = "relu", tol: float = 1e-6,
                 chunk_elements: int = 2**24) -> None:
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if not tol >= 0:
            raise ValueError(f"tol must be >= 0, got {tol}")
        self.model = model
        self.attribution = attribution
        self.estimator = estimator
        self.tol = float(tol)
        self.chunk_elements = int(chunk_elements)
        self._seq = _layer_sequence(model)
        self._kernels = [(n, m) for n, m in self._seq if isinstance(m, _KERNEL)]
        self.estimators: dict[str, str] = {
            n: (estimator if estimator != "linear" and _followed_by_relu(self._seq, i) else "linear")
            for i, (n, m) in enumerate(self._seq) if isinstance(m, _KERNEL)
        }
        self._patterns: dict[str, Tensor] | None = None
        self._snapshot: dict[str, Tensor] = {}
        self._eff_cache: dict[tuple[torch.device, torch.dtype], dict[str, Tensor]] = {}
        self.n_zeroed: dict[str, int] = {}
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
        if self._patterns is None:
            raise NotFittedError(f"{self.name}: no patterns yet; call .fit(loader) first")
        return dict(self._patterns)

    def __repr__(self) -> str:
        return (f"PatternExplainer({self.name}, estimator={self.estimator!r}, tol={self.tol}, "
                f"fitted={self.fitted})")

    # ------------------------------------------------------------------ fit
    @torch.no_grad()
    def fit(self, loader: Iterable[Any], *, max_batches: int | None = None) -> PatternExplainer:
        """Estimate the patterns in one pass over ``loader`` (batches ``x`` or ``(x, y, ...)``)."""
        self._check_structure()
        param = next(self.model.parameters())
        stats: dict[str, dict[str, Any]] = {}
        for n, m in self._kernels:
            K, D = m.weight.shape[0], m.weight[0].numel()
            z = {"n": 0, "sy": torch.zeros(K, dtype=torch.float64, device=param.device)}
            keys = ("sx", "sxy") if self.estimators[n] == "linear" else ("npos", "sxp", "syp", "sxyp")
            for key in keys:
                shape = (D, K) if key in ("sxy", "sxp", "sxyp") else (D,) if key == "sx" else (K,)
                z[key] = torch.zeros(shape, dtype=torch.float64, device=param.device)
            stats[n] = z

        def hook(name: str, mod: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            st, linear = stats[name], self.estimators[name] == "linear"
            for X, Y in _rows(mod, args[0].detach(), out.detach(), self.chunk_elements):
                st["n"] += X.shape[0]
                st["sy"] += Y.sum(0)
                if linear:
                    st["sx"] += X.sum(0)
                    st["sxy"] += X.T @ Y
                else:
                    M = (Y > 0).double()
                    YM = Y * M
                    st["npos"] += M.sum(0)
                    st["sxp"] += X.T @ M
                    st["syp"] += YM.sum(0)
                    st["sxyp"] += X.T @ YM

        was_training = self.model.training
        handles = []
        n_batches = 0
        try:
            self.model.eval()
            for n, m in self._kernels:
                handles.append(m.register_forward_hook(lambda mod, a, o, _n=n: hook(_n, mod, a, o)))
            for batch in loader:
                if max_batches is not None and n_batches >= max_batches:
                    break
                x = batch if isinstance(batch, Tensor) else batch[0] if isinstance(batch, (tuple, list)) else None
                if not isinstance(x, Tensor):
                    raise TypeError(f"{self.name}.fit: loader must yield tensors or (x, y) tuples, "
                                    f"got {type(batch).__name__}")
                x = x.to(device=param.device, dtype=param.dtype if x.is_floating_point() else None)
                self.model(x)
                n_batches += 1
        finally:
            for h in handles:
                h.remove()
            self.model.train(was_training)
        if n_batches == 0:
            raise ValueError(f"{self.name}.fit: the loader yielded no batches")

        patterns, n_zeroed = {}, {}
        for n, m in self._kernels:
            A, zeroed = _compute_pattern(m.weight.detach().reshape(m.weight.shape[0], -1).double(),
                                         stats[n], self.estimators[n], self.tol)
            patterns[n] = A.reshape(m.weight.shape).to(m.weight.dtype)
            n_zeroed[n] = int(zeroed.sum())
        self.stats = {n: {k: (v.cpu() if isinstance(v, Tensor) else v) for k, v in st.items()}
                      for n, st in stats.items()}
        self.n_samples = {n: int(st["n"]) for n, st in stats.items()}
        self._set(patterns, n_zeroed)
        return self

    def load_patterns(self, patterns: Mapping[str, Tensor]) -> PatternExplainer:
        """Use given patterns (name -> Tensor shaped like that layer's weight) for the CURRENT weights."""
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

    def _set(self, patterns: dict[str, Tensor], n_zeroed: dict[str, int]) -> None:
        self._patterns = patterns
        self.n_zeroed = n_zeroed
        self._eff_cache = {}
        self._snapshot = {k: p.detach().clone() for k, p in self.model.named_parameters()}

    # ------------------------------------------------------------------ checks
    def _check_structure(self) -> None:
        seq = _layer_sequence(self.model)
        if [(n, id(m)) for n, m in seq] != [(n, id(m)) for n, m in self._seq]:
            raise StalePatternsError(f"{self.name}: the model's modules changed since the explainer was "
                                     "built; create a new explainer")

    def _check_fresh(self) -> None:
        if self._patterns is None:
            raise NotFittedError(f"{self.name} needs data: call .fit(loader) before explaining "
                                 "(patterns are estimated from the layer statistics)")
        self._check_structure()
        params = dict(self.model.named_parameters())
        if set(params) != set(self._snapshot):
            raise StalePatternsError(f"{self.name}: the model's parameters changed; call .fit(loader) again")
        for k, p in params.items():
            ref = self._snapshot[k]
            if ref.device != p.device or ref.dtype != p.dtype:
                ref = self._snapshot[k] = ref.to(device=p.device, dtype=p.dtype)
            if ref.shape != p.shape or not torch.equal(ref, p.detach()):
                diff = (p.detach() - ref).abs().max().item() if ref.shape == p.shape else float("nan")
                raise StalePatternsError(
                    f"{self.name}: parameter {k!r} changed since fit (max |change| {diff:.3g}); patterns "
                    "depend on the weights: call .fit(loader) again after changing the model "
                    "(e.g. after a randomization)")

    # ------------------------------------------------------------------ explain
    def _effective(self, device: torch.device, dtype: torch.dtype) -> dict[str, Tensor]:
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
        """Explain ``x`` (``B x ...``) for ``target`` (``LongTensor[B]``, int, or None = predicted class).

        Returns a tensor shaped like ``x``: the pattern backward of the target logit seeded with its value.
        """
        self._check_fresh()
        model = self.model
        param = next(model.parameters())
        eff = self._effective(param.device, param.dtype)

        def surrogate(name: str, mod: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
            inp, A = args[0], eff[name]
            sur = F.linear(inp, A) if isinstance(mod, nn.Linear) else mod._conv_forward(inp, A, None)
            # forward value: exactly the layer's output; backward: the transposed op with A
            return out.detach() + (sur - sur.detach())

        was_training = model.training
        handles = []
        try:
            model.eval()
            for n, m in self._kernels:
                handles.append(m.register_forward_hook(lambda mod, a, o, _n=n: surrogate(_n, mod, a, o)))
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                logits = model(xg)
                if logits.ndim != 2:
                    raise ValueError(f"{self.name}: model output must be B x classes, got "
                                     f"{tuple(logits.shape)}")
                t = logits.detach().argmax(1) if target is None else resolve_target(model, x, target)
                t = t.to(logits.device).reshape(-1, 1)
                seed = torch.zeros_like(logits).scatter_(1, t, logits.detach().gather(1, t))
                (grad,) = torch.autograd.grad(logits, xg, seed)
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        return grad.detach()


def _compute_pattern(W: Tensor, st: Mapping[str, Any], estimator: str, tol: float) -> tuple[Tensor, Tensor]:
    """Patterns ``A[K, D]`` and the zeroed-unit mask ``[K]`` from the sums ``st`` (float64)."""
    n = max(int(st["n"]), 1)
    if estimator == "linear":
        V = st["sxy"] / n - torch.outer(st["sx"] / n, st["sy"] / n)  # D x K
    else:
        npos = st["npos"]
        c = npos.clamp(min=1)
        Ey = st["syp"] / c if estimator == "relu" else st["sy"] / n
        V = st["sxyp"] / c - (st["sxp"] / c) * Ey
        V = V * (npos > 0)
    V = V.T  # K x D
    den = (W * V).sum(1)
    ok = den.abs() > tol * W.norm(dim=1) * V.norm(dim=1)
    ok &= torch.isfinite(den)
    A = torch.where(ok[:, None], V / torch.where(ok, den, torch.ones_like(den))[:, None], torch.zeros_like(V))
    return A, ~ok


@register("pattern_net")
def pattern_net(model: nn.Module, *, estimator: str = "relu", tol: float = 1e-6,
                chunk_elements: int = 2**24) -> PatternExplainer:
    """PatternNet: the signal ``A^T``-backward of the target logit. Needs ``.fit(loader)``."""
    return PatternExplainer(model, attribution=False, estimator=estimator, tol=tol,
                            chunk_elements=chunk_elements)


@register("pattern_attribution")
def pattern_attribution(model: nn.Module, *, estimator: str = "relu", tol: float = 1e-6,
                        chunk_elements: int = 2**24) -> PatternExplainer:
    """PatternAttribution (= DTD with the PA root point): ``(W * A)^T``-backward. Needs ``.fit(loader)``."""
    return PatternExplainer(model, attribution=True, estimator=estimator, tol=tol,
                            chunk_elements=chunk_elements)
