"""The method registry and the explainer contract.

``create(name, model, **params)`` returns an explainer: a callable
``explain(x, target=None) -> Tensor`` shaped like ``x`` (``[B, ...]``), computed for the whole
batch at once. ``target`` is a ``LongTensor[B]`` of class indices, an ``int`` for every sample,
or ``None`` for the predicted class. Methods that need data expose ``needs_fit = True`` and
``fit(loader)``.

Every explainer accepts the domain keywords ``low`` / ``high`` (the min / max of the data
domain, default 0.0 / 1.0), so a harness can pass the domain to every method; methods that do
not use the domain ignore it. :func:`create` drops them for a factory that does not declare
them (a user's own method need not care).

Adding a method is one module with a factory decorated by :func:`register`; a user's own
factory is named by its import path (``"package.module:factory"``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from numbers import Integral
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from methods.state import eval_mode, frozen

__all__ = [
    "DOMAIN_KEYS",
    "BaseExplainer",
    "Explainer",
    "check_finite",
    "check_logits",
    "NonFiniteError",
    "NotApplicable",
    "create",
    "explaining",
    "get_factory",
    "names",
    "register",
    "resolve_target",
    "target_logits",
]

DOMAIN_KEYS = ("low", "high")


@runtime_checkable
class Explainer(Protocol):
    def __call__(self, x: Tensor, target: Tensor | int | None = None) -> Tensor: ...


Factory = Callable[..., Explainer]
_REGISTRY: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    """Register ``factory(model, **params) -> Explainer`` under ``name``."""

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"method {name!r} is already registered ({_REGISTRY[name]!r})")
        _REGISTRY[name] = factory
        return factory

    return deco


def names() -> list[str]:
    """Sorted names of every registered method."""
    return sorted(_REGISTRY)


#: library prefixes resolved before the generic import path: ``"captum:<Class>"``, ``"cam:<Class>"``,
#: ``"zennit:<Composite>"`` -> ``methods.adapters.<module>.factory(<Class>)`` (:mod:`methods.adapters`)
LIBRARY_PREFIXES = {"captum": "captum", "cam": "cam", "zennit": "zennit"}


def get_factory(name: str) -> Factory:
    """The factory registered as ``name``; for a reserved library prefix (:data:`LIBRARY_PREFIXES`:
    ``"captum:<Class>"``, ``"cam:<Class>"``, ``"zennit:<Composite>"``) the adapter's factory of that class (a clear
    error naming the optional extra when the library is missing); else imported from ``"pkg.module:attr"`` /
    ``"pkg.module.attr"``."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    prefix, sep, rest = name.partition(":")
    if sep and prefix in LIBRARY_PREFIXES:
        adapter = importlib.import_module(f"methods.adapters.{LIBRARY_PREFIXES[prefix]}")
        return adapter.factory(rest)
    if "." in name or ":" in name:
        mod, _, attr = name.replace(":", ".").rpartition(".")
        try:
            return getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"cannot import method factory {name!r}: {err}") from err
    raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(names())}")


def accepts(factory: Callable[..., Any], key: str) -> bool:
    """Whether ``factory`` takes the keyword ``key`` (explicitly or through ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return True
    return key in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def create(name: str, model: nn.Module, **params: Any) -> Explainer:
    """Build the explainer ``name`` for ``model``; ``params`` are the method's keyword arguments.

    ``low`` / ``high`` are dropped for a factory that does not take them.
    """
    factory = get_factory(name)
    for key in DOMAIN_KEYS:
        if key in params and not accepts(factory, key):
            del params[key]
    return factory(model, **params)


def resolve_target(model: nn.Module, x: Tensor, target: Tensor | int | None) -> Tensor:
    """Return a ``LongTensor[B]`` of class indices on ``x.device`` (``None``: the predicted class)."""
    if target is None:
        with torch.no_grad():
            return model(x).argmax(dim=1)
    if isinstance(target, Integral):
        return torch.full((x.shape[0],), int(target), dtype=torch.long, device=x.device)
    target = torch.as_tensor(target, device=x.device)
    if target.is_floating_point() or target.is_complex():
        raise TypeError(f"target must hold class indices (integers), got dtype {target.dtype}")
    target = target.long().reshape(-1)
    if target.numel() == 1 and x.shape[0] != 1:
        target = target.expand(x.shape[0])
    if target.shape[0] != x.shape[0]:
        raise ValueError(f"target has {target.shape[0]} entries for a batch of {x.shape[0]}")
    return target


def check_logits(model: nn.Module, out: Tensor, target: Tensor) -> None:
    """Raise ``ValueError`` unless ``out`` is ``[B, classes]`` and every target is a valid class."""
    if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != target.shape[0]:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{type(model).__name__} returned {shape}; expected logits [B, classes]")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= out.shape[1]):
        raise ValueError(f"target {target.tolist()} out of range for {out.shape[1]} classes")


class NonFiniteError(ValueError):
    """A tensor that must be finite (inputs, a shift, logits, maps) holds NaN or infinite values."""


class NotApplicable(ValueError):
    """The method does not apply to this model (Grad-CAM on a network with no conv layer and no attention block): a
    property of the (method, model) pair, not a failure. The harness records it as not applicable, with this
    message, and computes no rows for the method; the job stays ok."""


def check_finite(t: Tensor, what: str, hint: str = "") -> None:
    """Raise :class:`NonFiniteError` naming ``what``, the counts of NaN and infinite values and the first samples
    (along dim 0) that hold them, unless every value of ``t`` is finite. ``hint`` is appended to the message."""
    if not t.is_floating_point() and not t.is_complex():
        return
    ok = torch.isfinite(t)
    if bool(ok.all()):
        return
    n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
    where = ""
    if t.ndim >= 1:
        rows = (~ok).reshape(t.shape[0], -1).any(1).nonzero().flatten().tolist()
        where = f" (samples {rows[:10]}{' ...' if len(rows) > 10 else ''})"
    raise NonFiniteError(f"{what} hold(s) {n_nan} NaN and {n_inf} infinite values{where}{hint}")


def target_logits(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """``f_target(x)``: shape ``[B]``, after :func:`check_logits`."""
    out = model(x)
    check_logits(model, out, target)
    return out.gather(1, target[:, None]).squeeze(1)


@contextmanager
def explaining(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode with frozen parameters and autograd on; restore all of it after.

    Each module's ``training`` flag and each parameter's ``requires_grad`` are restored as found,
    also when the body raises. Eval mode makes maps deterministic (no dropout) and keeps
    BatchNorm's running statistics untouched.
    """
    with eval_mode(model), frozen(model), torch.inference_mode(False), torch.enable_grad():
        yield model


class BaseExplainer:
    """Base class: ``explainer(x, target=None) -> Tensor`` shaped like ``x``.

    Subclasses implement :meth:`attribute` on a detached batch ``x`` and a ``LongTensor[B]``
    ``target``; ``__call__`` runs it under :func:`explaining` after resolving the target
    (default: the predicted class). ``low`` / ``high``: the data domain (default [0, 1]).
    """

    needs_fit: bool = False

    #: whether ``low`` / ``high`` may be tensors shaped like one input (per-element bounds), not only numbers
    accepts_pixel_bounds: bool = False

    def __init__(self, model: nn.Module, *, low: float | Tensor = 0.0, high: float | Tensor = 1.0) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(self).__name__} needs a torch.nn.Module, got {type(model).__name__}")
        tensors = isinstance(low, Tensor) and low.numel() > 1 or isinstance(high, Tensor) and high.numel() > 1
        if tensors and not self.accepts_pixel_bounds:
            raise ValueError(f"{type(self).__name__} takes the data domain as two numbers, got tensor bounds")
        lo_t, hi_t = torch.as_tensor(low, dtype=torch.float64), torch.as_tensor(high, dtype=torch.float64)
        if not bool((lo_t < hi_t).all()):
            raise ValueError(f"the data domain needs low < high everywhere, got low={low}, high={high}")
        self.model = model
        self.low = low.detach() if tensors and isinstance(low, Tensor) else float(low)
        self.high = high.detach() if tensors and isinstance(high, Tensor) else float(high)

    def __call__(self, x: Tensor, target: Tensor | int | None = None) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim < 2:
            raise ValueError(f"x must be a batch [B, ...], got {getattr(x, 'shape', type(x).__name__)}")
        check_finite(x, f"the input of {self!r}")
        with explaining(self.model):
            target = resolve_target(self.model, x, target)
            maps = self.attribute(x.detach(), target).detach()
        if not bool(torch.isfinite(maps).all()):
            with torch.no_grad(), eval_mode(self.model):
                check_finite(self.model(x), f"the logits of {type(self.model).__name__} on the input of {self!r}",
                             ": the model, not the method, produces them")
            check_finite(maps, f"the maps of {self!r}", " for finite inputs and finite logits")
        return maps

    def attribute(self, x: Tensor, target: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"
