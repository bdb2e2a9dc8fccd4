"""Model-randomization engine for the sanity checks of Adebayo et al. (2018).

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

Initialization (``init``)
-------------------------
Values are drawn on the CPU from a :class:`torch.Generator` seeded per owning module with
:func:`unit_seed` (SHA-256 of ``(seed, module name)``: the same in every process, different for every
layer, independent of mode and granularity, equal on CPU and GPU), then copied into place.

- ``"default"``: the layer's own PyTorch initializer (``reset_parameters`` semantics, not the timm
  family scheme): ``Linear``/``Conv*``/``ConvTranspose*``: weight kaiming-uniform(a=sqrt(5)), i.e.
  U(+-1/sqrt(fan_in)), bias U(+-1/sqrt(fan_in)); norm layers (BatchNorm, InstanceNorm, LayerNorm,
  GroupNorm, RMSNorm): weight 1, bias 0; ``Embedding``: N(0, 1); ``MultiheadAttention``: in-projection
  xavier-uniform, in-projection bias 0, ``bias_k``/``bias_v`` xavier-normal; any other leaf module
  with ``reset_parameters`` (e.g. timm ``LayerScale``): that method, run on a CPU copy under
  ``torch.manual_seed(unit seed)``. Everything else (``cls_token``, ``pos_embed``, parameters of
  custom modules without an initializer) is drawn from N(mean, std) of the trained tensor
  (std 0.02 when the trained std is 0 or undefined), which keeps its scale and destroys its structure.
- ``"normal[:std]"``: every parameter N(0, std), default std 0.01.
- ``"uniform[:a]"``: every parameter U(-a, a), default a 0.05.
- a callable ``init(name, buf, generator) -> None`` that fills ``buf`` (a CPU float copy of the
  trained tensor) in place.

Normalization statistics
------------------------
``reset_norm_stats=True`` (default, what ``BatchNorm.reset_parameters`` does): the running mean,
variance and batch count of every randomized ``_NormBase`` layer (BatchNorm, tracked InstanceNorm,
timm ``BatchNormAct2d``) become 0, 1 and 0, so a randomized BN normalizes with identity statistics in
eval mode. ``False`` keeps the trained statistics. At module granularity the statistics of
parameter-free layers (affine-free BatchNorm, timm ``FrozenBatchNorm2d``) belong to no unit and stay
trained; at block granularity an affine-free BatchNorm is reset with its block (``FrozenBatchNorm2d``,
not a ``_NormBase``, never is).

Premise checks
--------------
After every stage each parameter randomized in it must differ from its trained value (not
``torch.equal``, i.e. max abs difference > 0), else :class:`RuntimeError` with the unit, tensor and
numbers. When the iteration ends (or is closed early) a fingerprint of the trained model (per tensor:
sum and sum of squares) is compared with the one taken before it started: the trained model must be
unchanged, else :class:`RuntimeError` naming the changed tensors with both fingerprints.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "Unit",
    "units",
    "check_partition",
    "randomized",
    "unit_seed",
    "permuted_labels",
    "MODES",
]

MODES = ("cascading", "bottom_up", "independent")
InitFn = Callable[[str, Tensor, torch.Generator], None]

_LINEAR_LIKE = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
_NORMS = tuple(
    t
    for t in (
        nn.modules.batchnorm._NormBase,
        nn.LayerNorm,
        nn.GroupNorm,
        getattr(nn, "RMSNorm", None),
    )
    if t is not None
)
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


def _owner(qualname: str) -> str:
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
    modes = {m: m.training for m in model.modules()}
    device = next(iter(params.values())).device if params else torch.device("cpu")
    inputs = example if isinstance(example, tuple) else (example,)
    inputs = tuple(t.to(device) if isinstance(t, Tensor) else t for t in inputs)
    try:
        model.eval()
        with torch.no_grad(), _FirstUse(ids, clock, first):
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        for m, was in modes.items():
            m.training = was
    for n in params:  # parameters no torch op read directly: time of their owner's forward
        if n not in first and _owner(n) in called:
            first[n] = called[_owner(n)]
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
        o = _owner(n)
        u = by_owner.setdefault(o, Unit(name=o, modules=[o]))
        u.params.append((n, p))
    for n, b in model.named_buffers():
        if _owner(n) in by_owner:
            by_owner[_owner(n)].buffers.append((n, b))
    if "" in by_owner:
        by_owner[""].name = "+".join(n for n, _ in by_owner[""].params)
    return list(by_owner.values())


def _composite(module: nn.Module) -> bool:
    """Whether a submodule holds parameters (a block), as opposed to a single layer such as timm's
    ``BatchNormAct2d`` whose children (activation, dropout) hold none."""
    return any(next(c.parameters(), None) is not None for c in module.children())


def _block_roots(model: nn.Module) -> list[str]:
    roots = []
    for name, child in model.named_children():
        items = list(child.named_children()) if isinstance(child, _CONTAINERS) else []
        if items and any(_composite(c) for _, c in items):
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
        u.modules = sorted({_owner(n) for n in u.param_names})
    ordered = _order(list(groups.values()), first, reg)
    composite = {u.name: _composite(mods[u.name]) for u in ordered}
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


# ------------------------------------------------------------------------------------ initializers


def unit_seed(seed: int, name: str) -> int:
    """Deterministic 63-bit seed for ``(seed, name)``, the same in every process (SHA-256)."""
    digest = hashlib.sha256(f"{int(seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _draw(t: Tensor) -> Tensor:
    """A CPU float buffer holding a copy of ``t`` (float64 stays float64)."""
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    return t.detach().to("cpu", dtype, copy=True)


def _matched_normal(buf: Tensor, gen: torch.Generator) -> None:
    std = float(buf.std()) if buf.numel() > 1 else 0.0
    mean = float(buf.mean())
    if not math.isfinite(std) or std == 0.0:
        std = 0.02
    buf.normal_(mean, std, generator=gen)


def _init_default(module: nn.Module, mname: str, own: list[tuple[str, Tensor]], gen: torch.Generator) -> None:
    """Fill the buffers ``own`` (local name, CPU copy of the trained tensor) by the layer's own init."""
    bufs = dict(own)
    composite = _composite(module)
    if isinstance(module, _LINEAR_LIKE) and not composite and "weight" in bufs:
        w = bufs["weight"]
        nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=gen)
        if "bias" in bufs:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(w)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(bufs["bias"], -bound, bound, generator=gen)
        return
    if isinstance(module, _NORMS) and not composite:
        for n, b in own:
            b.fill_(1.0 if n == "weight" else 0.0)
        return
    if isinstance(module, nn.Embedding):
        for _, b in own:
            b.normal_(0.0, 1.0, generator=gen)
        if module.padding_idx is not None and "weight" in bufs:
            bufs["weight"][module.padding_idx].zero_()
        return
    if isinstance(module, nn.MultiheadAttention):
        for n, b in own:
            if n in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                nn.init.xavier_uniform_(b, generator=gen)
            elif n in ("bias_k", "bias_v"):
                nn.init.xavier_normal_(b, generator=gen)
            elif n == "in_proj_bias":
                b.zero_()
            else:
                _matched_normal(b, gen)
        return
    if not composite and callable(getattr(module, "reset_parameters", None)):
        clone = copy.deepcopy(module).to("cpu")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
            clone.reset_parameters()
        fresh = dict(clone.named_parameters(recurse=False))
        for n, b in own:
            b.copy_(fresh[n].detach())
        return
    for _, b in own:
        _matched_normal(b, gen)


def _parse_init(init: str | InitFn) -> Callable[[nn.Module, str, list, torch.Generator], None]:
    if callable(init):

        def custom(module, mname, own, gen):
            for n, b in own:
                init(f"{mname}.{n}" if mname else n, b, gen)

        return custom
    kind, _, arg = str(init).partition(":")
    if kind == "default" and not arg:
        return lambda module, mname, own, gen: _init_default(module, mname, own, gen)
    if kind in ("normal", "uniform"):
        scale = float(arg) if arg else (0.01 if kind == "normal" else 0.05)
        if not scale > 0:
            raise ValueError(f"init {init!r}: the scale must be > 0")

        def simple(module, mname, own, gen):
            for _, b in own:
                if kind == "normal":
                    b.normal_(0.0, scale, generator=gen)
                else:
                    b.uniform_(-scale, scale, generator=gen)

        return simple
    raise ValueError(f"init must be 'default', 'normal[:std]', 'uniform[:a]' or a callable, got {init!r}")


# -------------------------------------------------------------------------------------- randomized


@torch.no_grad()
def _randomize_unit(
    mods: dict[str, nn.Module], unit: Unit, init_fn, seed: int, reset_norm_stats: bool
) -> None:
    """Re-initialize ``unit``'s parameters in place (``mods``: the model's ``named_modules``)."""
    names = set(unit.param_names)
    for mname in unit.modules:
        module = mods[mname]
        prefix = f"{mname}." if mname else ""
        params = [(n, p) for n, p in module.named_parameters(recurse=False) if prefix + n in names]
        if not params:
            continue
        own = [(n, _draw(p)) for n, p in params]
        gen = torch.Generator().manual_seed(unit_seed(seed, mname))
        init_fn(module, mname, own, gen)
        for (_, p), (_, b) in zip(params, own, strict=True):
            p.copy_(b)
    if reset_norm_stats:
        for mname in dict.fromkeys(_owner(n) for n, _ in unit.buffers):
            module = mods[mname]
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.running_mean is not None:
                module.reset_running_stats()


@torch.no_grad()
def _premise(work: dict[str, Tensor], trained: dict[str, Tensor], unit: Unit, init) -> None:
    for n in unit.param_names:
        a, b = work[n].detach(), trained[n].detach()
        if a.numel() and not torch.equal(a, b):
            continue
        diff = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
        mean = float(b.double().mean()) if b.numel() else float("nan")
        raise RuntimeError(
            f"randomizing unit {unit.name!r} left parameter {n!r} (shape {tuple(a.shape)}) equal to its "
            f"trained value: max |randomized - trained| = {diff:.3g}, trained mean {mean:.4g}, init={init!r}"
        )


@torch.no_grad()
def _fingerprint(model: nn.Module) -> dict[str, tuple[float, float]]:
    """Per tensor: (sum, sum of squares), float32 (int64 for integer tensors such as batch counts)."""
    names, stats = [], []
    for n, t in list(model.named_parameters()) + list(model.named_buffers()):
        t = t.detach()
        v = t.float() if t.is_floating_point() or t.is_complex() else t.to(torch.int64)
        if t.is_complex():
            v = torch.view_as_real(t).float()
        names.append(n)
        stats.append(torch.stack([v.sum(), v.square().sum()]).double().cpu())
    if not names:
        return {}
    return dict(zip(names, map(tuple, torch.stack(stats).tolist()), strict=True))


def _check_untouched(model: nn.Module, before: dict[str, tuple[float, float]]) -> None:
    after = _fingerprint(model)

    def same(x, y) -> bool:  # NaN == NaN here: a NaN in the trained model is not a change
        if x is None or y is None:
            return False
        return all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(x, y, strict=True))

    changed = {n: (before.get(n), after.get(n)) for n in set(before) | set(after)}
    changed = {n: ba for n, ba in changed.items() if not same(*ba)}
    if changed:
        detail = ", ".join(
            f"{n}: (sum, sum of squares) {b} -> {a}" for n, (b, a) in sorted(changed.items())[:5]
        )
        raise RuntimeError(
            f"the trained model changed during randomization ({len(changed)} tensors): {detail}"
        )


def _select(order: list[Unit], stages: int | Sequence[str] | None) -> set[str]:
    names = [u.name for u in order]
    if stages is None:
        return set(names)
    if isinstance(stages, int):
        return set(names[:stages])
    unknown = [s for s in stages if s not in names]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; the stages are {names}")
    return set(stages)


def randomized(
    model: nn.Module,
    mode: str,
    *,
    example: Tensor | tuple,
    granularity: str = "module",
    seed: int = 0,
    init: str | InitFn = "default",
    stages: int | Sequence[str] | None = None,
    reset_norm_stats: bool = True,
    check: bool = True,
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(stage name, randomized model)`` for ``mode`` in :data:`MODES`.

    - ``"cascading"``: cumulative from the logits down (stage k: the last k executed units random);
    - ``"bottom_up"``: cumulative from the input up (stage k: the first k units random);
    - ``"independent"``: one unit random at a time, the others trained.

    ``model`` is never modified: it is deep-copied once and the copy is changed in place from stage
    to stage (independent mode restores each unit from a saved copy of that unit only). The yielded
    model is that copy, in eval mode: clone it to keep a stage. Stage names are unit names
    (:func:`units` with ``granularity`` and ``example``); ``stages`` keeps the first ``k`` stages
    (int) or the named ones (the cumulative modes still randomize every unit before a named stage).
    ``init``, ``reset_norm_stats`` and the premise checks (``check``): see the module docstring.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    init_fn = _parse_init(init)
    trained = dict(model.named_parameters())
    before = _fingerprint(model) if check else None
    work = copy.deepcopy(model)
    order = [u for u in units(work, granularity, example=example) if u.executed]
    work.eval()
    work_params = dict(work.named_parameters())
    mods = dict(work.named_modules())
    if mode == "cascading":
        order = order[::-1]
    keep = _select(order, stages)
    last = max((i for i, u in enumerate(order) if u.name in keep), default=-1)
    try:
        for unit in order[: last + 1]:
            saved = None
            if mode == "independent":
                if unit.name not in keep:
                    continue
                saved = [(t, t.detach().clone()) for _, t in unit.params + unit.buffers]
            _randomize_unit(mods, unit, init_fn, seed, reset_norm_stats)
            if check:
                _premise(work_params, trained, unit, init)
            if unit.name in keep:
                work.eval()
                yield unit.name, work
            if saved is not None:
                with torch.no_grad():
                    for t, s in saved:
                        t.copy_(s)
    except GeneratorExit:
        if check:
            _check_untouched(model, before)
        raise
    if check:
        _check_untouched(model, before)


# ---------------------------------------------------------------------------------- data randomization


def permuted_labels(y: Tensor, seed: int) -> Tensor:
    """Labels ``y`` (shape ``(N,)``) shuffled across samples by a permutation seeded with ``seed``.

    Same label counts, same device; the permutation is drawn on the CPU (device-independent).
    """
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(len(y), generator=gen).to(y.device)
    return y[perm]
