"""Units of a model (the "layers" of the sanity-checks paper) in execution order: :func:`units`.

A model is cut into **units** (the "layers" of the paper), listed in execution order from the input to
the logits, and :func:`randomized` re-initializes them one stage at a time::

    for stage, model_k in randomized(model, "cascading", example=x[:1]):
        maps[stage] = explain(model_k, x, y)          # model_k: the same object at every stage

Units
-----
``granularity="module"``: one unit per module that directly registers parameters, holding exactly
those parameters (``recurse=False``) and that module's buffers. Every ``Linear``/``Conv``/norm layer
is a unit; parameters held by a non-leaf module (timm ViT ``cls_token``/``pos_embed`` on the model
itself, ``nn.MultiheadAttention.in_proj_*``) form the unit of their owning module. The unit is named
after the module's qualified name; the root module's own parameters are named by joining their
names (``"cls_token+pos_embed"``). Tied parameters belong to the first name ``named_parameters`` gives.

``granularity="block"``: the top-level children of the model; a top-level ``Sequential``/
``ModuleList``/``ModuleDict`` whose items include a block is replaced by its items (ResNet ``layer1``
-> ``layer1.0``, ``layer1.1``; ViT ``blocks`` -> ``blocks.0``, ...; ConvNeXt ``stages`` -> ``stages.0``,
...). A *block* is a module with a parametrized submodule; a *single layer* is one whose children, if
any, hold no parameters (``Linear``, timm ``BatchNormAct2d``). If the model has at least one block,
each maximal run of consecutive single-layer units (in execution order) is merged into one unit
(ResNet ``conv1+bn1`` and ``fc``, ViT ``norm+head``, EfficientNet ``conv_head+bn2+classifier``); a
model made only of single layers (``paper_mlp``, ``small_cnn``) keeps one unit per layer, as in module
granularity. The root's own parameters join the unit executed just before their first use (ViT:
``patch_embed+cls_token+pos_embed``), or the first unit when they are used before any (their own
unexecuted unit when never used). A block unit holds every buffer under its modules.

Execution order
---------------
One forward pass of ``example`` (eval mode, no grad) is traced with a forward pre-hook on every module
and a :class:`~torch.overrides.TorchFunctionMode` that records the first torch operation reading each
parameter (attribute reads such as ``.dtype`` do not count). A unit's position is the first use of any
of its parameters; a parameter no operation reads directly falls back to its owner's pre-hook time;
ties go to registration order. Units never used in the pass (e.g. torchvision Inception v3's auxiliary
head in eval mode) get ``executed=False``, are listed last in registration order and are not stages of
:func:`randomized` (randomizing them cannot change the output).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from methods.state import eval_mode

__all__ = ["Unit", "units", "check_partition", "is_composite", "owner"]

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass
class Unit:
    """A group of parameters randomized together.

    ``params``/``buffers``: ``(qualified name, tensor)`` of the model the unit was built from;
    ``modules``: qualified names of the modules that own them (``""`` = the root);
    ``executed``: whether the traced forward pass used any of its parameters.
    """

    name: str
    params: list[tuple[str, nn.Parameter]] = field(default_factory=list)
    buffers: list[tuple[str, Tensor]] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    executed: bool = True

    @property
    def param_names(self) -> list[str]:
        return [n for n, _ in self.params]

    def numel(self) -> int:
        return sum(p.numel() for _, p in self.params)


# ------------------------------------------------------------------------------------------ tracing


class _FirstUse(TorchFunctionMode):
    """Records the event index of the first torch operation that reads each watched tensor."""

    def __init__(self, ids: dict[int, str], clock: list[int], first: dict[str, int]):
        super().__init__()
        self.ids, self.clock, self.first = ids, clock, first

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") != "__get__":  # attribute reads (.dtype, .shape) are no use
            self.clock[0] += 1
            for t in tree_flatten((args, kwargs))[0]:
                name = self.ids.get(id(t)) if isinstance(t, Tensor) else None
                if name is not None and name not in self.first:
                    self.first[name] = self.clock[0]
        return func(*args, **kwargs)


def owner(qualname: str) -> str:
    """The qualified name of the module that holds ``qualname`` (``"fc.weight"`` -> ``"fc"``)."""
    return qualname.rpartition(".")[0]


def _trace(model: nn.Module, example: Tensor | tuple) -> dict[str, int]:
    """First-use event index per parameter name (absent: never used) of one forward pass."""
    params = dict(model.named_parameters())
    ids = {id(p): n for n, p in params.items()}
    clock, first, called = [0], {}, {}
    handles = []
    for mname, mod in model.named_modules():

        def pre_hook(_m, _inp, mname=mname):
            clock[0] += 1
            called.setdefault(mname, clock[0])

        handles.append(mod.register_forward_pre_hook(pre_hook))
    device = next(iter(params.values())).device if params else torch.device("cpu")
    inputs = example if isinstance(example, tuple) else (example,)
    inputs = tuple(t.to(device) if isinstance(t, Tensor) else t for t in inputs)
    try:
        with eval_mode(model), torch.no_grad(), _FirstUse(ids, clock, first):
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    for n in params:  # parameters no torch op read directly: time of their owner's forward
        if n not in first and owner(n) in called:
            first[n] = called[owner(n)]
    return first


# ------------------------------------------------------------------------------------------- units


def _order(groups: list[Unit], first: dict[str, int], reg: dict[str, int]) -> list[Unit]:
    """Sort by first use (ties and unexecuted units: registration order, unexecuted last)."""
    inf = math.inf

    def key(u: Unit):
        t = min((first.get(n, inf) for n in u.param_names), default=inf)
        return (t == inf, t, min(reg[n] for n in u.param_names))

    out = sorted(groups, key=key)
    for u in out:
        u.executed = any(n in first for n in u.param_names)
    return out


def _module_units(model: nn.Module) -> list[Unit]:
    by_owner: dict[str, Unit] = {}
    for n, p in model.named_parameters():
        o = owner(n)
        u = by_owner.setdefault(o, Unit(name=o, modules=[o]))
        u.params.append((n, p))
    for n, b in model.named_buffers():
        if owner(n) in by_owner:
            by_owner[owner(n)].buffers.append((n, b))
    if "" in by_owner:
        by_owner[""].name = "+".join(n for n, _ in by_owner[""].params)
    return list(by_owner.values())


def is_composite(module: nn.Module) -> bool:
    """Whether a submodule holds parameters (a block), as opposed to a single layer such as timm's
    ``BatchNormAct2d`` whose children (activation, dropout) hold none."""
    return any(next(c.parameters(), None) is not None for c in module.children())


def _block_roots(model: nn.Module) -> list[str]:
    roots = []
    for name, child in model.named_children():
        items = list(child.named_children()) if isinstance(child, _CONTAINERS) else []
        if items and any(is_composite(c) for _, c in items):
            roots += [f"{name}.{n}" for n, _ in items]
        else:
            roots.append(name)
    return roots


def _block_units(model: nn.Module, first: dict[str, int], reg: dict[str, int]) -> list[Unit]:
    mods = dict(model.named_modules())
    roots = _block_roots(model)

    def root_of(n: str) -> str:
        return next((r for r in roots if n.startswith(r + ".")), "")

    groups: dict[str, Unit] = {}
    for n, p in model.named_parameters():
        groups.setdefault(root_of(n), Unit(name=root_of(n))).params.append((n, p))
    bufs: dict[str, list[tuple[str, Tensor]]] = {}
    for n, b in model.named_buffers():
        bufs.setdefault(root_of(n), []).append((n, b))
    for r, u in groups.items():
        u.buffers = bufs.get(r, []) if r else []
    root_params = groups.pop("", None)
    for u in groups.values():
        u.modules = sorted({owner(n) for n in u.param_names})
    ordered = _order(list(groups.values()), first, reg)
    composite = {u.name: is_composite(mods[u.name]) for u in ordered}
    if any(composite.values()):  # merge runs of consecutive executed single layers (stem, head)
        merged: list[tuple[Unit, bool]] = []
        for u in ordered:
            single = u.executed and not composite[u.name]
            if merged and single and merged[-1][1]:
                prev = merged[-1][0]
                prev.name += "+" + u.name
                prev.params += u.params
                prev.modules += u.modules
                prev.buffers += u.buffers
            else:
                merged.append((u, single))
        ordered = [u for u, _ in merged]
    if root_params is not None:
        root_params.modules = [""]
        root_params.buffers = [(n, b) for n, b in bufs.get("", []) if "." not in n]
        t = _unit_time(root_params, first)
        host = None
        if t < math.inf:  # join the unit executed just before the first use (or the first unit)
            before = [u for u in ordered if u.executed and _unit_time(u, first) < t]
            host = before[-1] if before else next((u for u in ordered if u.executed), None)
        if host is None:
            root_params.name = "+".join(root_params.param_names)
            root_params.executed = t < math.inf
            pos = len(ordered) if not root_params.executed else 0
            ordered.insert(pos, root_params)
        else:
            host.name += "+" + "+".join(root_params.param_names)
            host.params += root_params.params
            host.buffers += root_params.buffers
            host.modules += [""]
    return ordered


def _unit_time(u: Unit, first: dict[str, int]) -> float:
    return min((first.get(n, math.inf) for n in u.param_names), default=math.inf)


def units(model: nn.Module, granularity: str = "module", *, example: Tensor | tuple) -> list[Unit]:
    """Partition ``model``'s parameters into units in execution order (see the module docstring).

    ``example``: an input batch (e.g. ``x[:1]``, shape ``(1, C, H, W)``) or a tuple of inputs, moved to
    the model's device; one forward pass in eval mode without grad. The model's train/eval flags are
    restored and nothing else changes.
    """
    if granularity not in ("module", "block"):
        raise ValueError(f"granularity must be 'module' or 'block', got {granularity!r}")
    first = _trace(model, example)
    reg = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    if granularity == "module":
        return _order(_module_units(model), first, reg)
    return _block_units(model, first, reg)


def check_partition(model: nn.Module, unit_list: Sequence[Unit]) -> None:
    """Raise ``ValueError`` unless every parameter of ``model`` is in exactly one unit.

    Names the missing, duplicated and foreign (not this model's tensor) parameters.
    """
    params = dict(model.named_parameters())
    seen: dict[str, list[str]] = {}
    foreign = []
    for u in unit_list:
        for n, p in u.params:
            seen.setdefault(n, []).append(u.name)
            if params.get(n) is not p:
                foreign.append(n)
    missing = [n for n in params if n not in seen]
    dup = {n: us for n, us in seen.items() if len(us) > 1}
    if missing or dup or foreign:
        raise ValueError(
            f"units do not partition the model's {len(params)} parameters: missing {missing}, "
            f"in several units {dup}, not parameters of this model {foreign}"
        )
