"""Re-initialization of units for the sanity checks of Adebayo et al. (2018): :func:`randomized`.

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
numbers. When the iteration ends (or is closed early) a fingerprint of the trained model
(:func:`methods.state.fingerprint`: four float64 sums per tensor, whatever its dtype) is compared with the one
taken before it started: the trained model must be unchanged, else :class:`RuntimeError` naming the changed
tensors and their sums.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from bench.randomization.units import Unit, is_composite, owner, units
from methods.state import changed, fingerprint

__all__ = ["randomized", "unit_seed", "MODES", "InitFn"]

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
    composite = is_composite(module)
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
        for mname in dict.fromkeys(owner(n) for n, _ in unit.buffers):
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


def _check_untouched(model: nn.Module, before: tuple[list, Tensor]) -> None:
    after = fingerprint(model)
    names = changed(before, after)
    if names:
        index = {k[0]: i for i, k in enumerate(after[0])}
        detail = ", ".join(f"{n}: sum {float(before[1][index[n], 0]):.6g} -> {float(after[1][index[n], 0]):.6g}"
                           for n in names[:5] if n in index)
        raise RuntimeError(f"the trained model changed during randomization ({len(names)} tensors): {detail}")


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
    verify_trained: bool = True,
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
    ``init``, ``reset_norm_stats`` and the premise checks (``check``): see the module docstring;
    ``verify_trained=False`` leaves the trained model's fingerprint check to a caller that makes its own over a
    longer span (the model-randomization experiment).
    Raises ``ValueError`` for an unknown mode, init or stage, ``RuntimeError`` when a premise fails.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    init_fn = _parse_init(init)
    trained = dict(model.named_parameters())
    before = fingerprint(model) if check and verify_trained else None
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
        if before is not None:
            _check_untouched(model, before)
        raise
    if before is not None:
        _check_untouched(model, before)
