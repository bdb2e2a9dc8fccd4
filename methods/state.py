"""Module state helpers shared by the methods and the harness: modes restored as found, parameter fingerprints.

:func:`eval_mode` puts modules in eval mode and restores every submodule's ``training`` flag afterwards (also
when the body raises); :func:`frozen` does the same for ``requires_grad``. :func:`fingerprint` summarizes every
parameter (and buffer) in four float64 numbers, so that a change to a model can be detected without a copy of
it; :func:`changed` lists the tensors whose summaries differ.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["eval_mode", "frozen", "fingerprint", "changed", "first_layer_input", "replace_module", "FINGERPRINT_STATS"]

#: the columns of :func:`fingerprint`
FINGERPRINT_STATS = ("sum", "sum |t|", "sum t^2", "sum t_i t_i+1")


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Run the body with every module of ``modules`` in eval mode; restore each submodule's ``training`` flag."""
    flags = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Run the body with ``requires_grad=False`` on every parameter of ``modules``; restore each flag after."""
    flags = [(p, p.requires_grad) for module in modules for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@torch.no_grad()
def fingerprint(module: nn.Module, *, buffers: bool = True) -> tuple[list[tuple[str, tuple[int, ...], str]], Tensor]:
    """Identities and summaries of ``module``'s tensors (parameters, then buffers when ``buffers``).

    Returns ``(keys, stats)``: ``keys[i] = (name, shape, dtype name)``; ``stats``: float64 ``[N, 4]`` on the CPU,
    the columns of :data:`FINGERPRINT_STATS` computed in float64 whatever the tensor's dtype (a float64 model's
    small changes are seen; complex tensors as their real view, integer tensors such as batch counts exactly up
    to 2**53). The last column catches permutations that keep the sums.
    """
    named = list(module.named_parameters()) + (list(module.named_buffers()) if buffers else [])
    keys, rows = [], []
    for name, t in named:
        q = (torch.view_as_real(t.detach()) if t.is_complex() else t.detach()).reshape(-1).double()
        keys.append((name, tuple(t.shape), str(t.dtype)))
        rows.append(torch.stack([q.sum(), q.abs().sum(), (q * q).sum(), (q[1:] * q[:-1]).sum()]))
    return keys, (torch.stack(rows).cpu() if rows else torch.zeros(0, 4, dtype=torch.float64))


def changed(before: tuple[list, Tensor], after: tuple[list, Tensor]) -> list[str]:
    """Names of the tensors whose :func:`fingerprint` differs (exactly; NaN equals NaN), or that exist on one side
    only."""
    (keys0, s0), (keys1, s1) = before, after
    if keys0 != keys1:
        return sorted({k[0] for k in set(keys0) ^ set(keys1)})
    same = (s0 == s1) | (torch.isnan(s0) & torch.isnan(s1))
    return [keys0[i][0] for i in torch.nonzero(~same.all(1)).flatten().tolist()]


@torch.no_grad()
def first_layer_input(model: nn.Module, x: Tensor) -> tuple[str, nn.Module, Tensor]:
    """``(qualified name, module, input)`` of the first leaf module with parameters that the forward pass of the
    batch ``x`` runs (in execution order). Raises ``ValueError`` naming the model when the input reaches none."""
    seen: list[tuple[str, nn.Module, Tensor]] = []
    handles = [m.register_forward_pre_hook(lambda mod, args, name=n: seen.append((name, mod, args[0].detach()))
                                           if args and not seen else None)
               for n, m in model.named_modules()
               if not any(True for _ in m.children()) and any(True for _ in m.parameters(recurse=False))]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError(f"{type(model).__name__} has no parametrized layer that the input reaches")
    return seen[0]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at the qualified ``name`` (``"features.3"``) of ``model`` by ``new``, in place."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
