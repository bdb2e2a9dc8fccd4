"""Bias-compensated twins: ``shifted_twin(model, m)`` computes ``twin(x + m) == model(x)`` for every ``x``.

Kindermans et al.'s construction: the first layer that the input meets absorbs the shift in its bias,
so the two networks have identical weights and identical activations after that layer; only their
inputs differ.

* ``Linear``: ``b2 = b1 - W m``.
* ``Conv2d``: the compensation ``conv(m)`` depends on the position (zero padding sees the shift only
  partly at the borders, and ``m`` need not be constant), so the twin's first layer is a
  :class:`BiasMapConv2d`: a ``Conv2d`` subclass whose bias is a ``C_out x H_out x W_out`` map
  ``b1[c] - conv(m)[c, i, j]``, computed with the layer's own padding, stride, dilation and groups. It
  is exact everywhere, for any ``m``, but only for inputs of ``m``'s spatial size.

Both replacements stay instances of the original layer type and keep the compensation inside
``bias``, so zennit's rules treat them as the same layer (their parameter modifiers act on the bias
map element-wise) and LRP denominators are identical in both networks.

Layers that run before the first parametrized layer must pass a shift through unchanged up to a
reshape (``Flatten``, ``Identity``, ``Dropout`` in eval mode ...): the shift that the first layer sees
is measured with hooks on two different inputs and must not depend on the input.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from methods.state import eval_mode, replace_module

__all__ = ["BiasMapConv2d", "first_layer", "shifted_twin", "twin_error", "check_twin", "TwinPremiseError"]


class TwinPremiseError(RuntimeError):
    """The twin does not compute the same function as the original on the evaluated batch."""


class BiasMapConv2d(nn.Conv2d):
    """A ``Conv2d`` whose bias is a per-position map ``C_out x H_out x W_out`` (added after the convolution)."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002  (nn.Module's own argument name)
        out = self._conv_forward(input, self.weight, None)
        if self.bias is None:
            return out
        if out.shape[1:] != self.bias.shape:
            raise ValueError(
                f"this twin's first layer was built for outputs of shape {tuple(self.bias.shape)} "
                f"(inputs of the shift's size); got {tuple(out.shape[1:])}"
            )
        return out + self.bias


def _register_with_canonizers() -> None:
    # the bias map is a parameter that zennit's rules modify element-wise through ``forward``; the layer is
    # a plain convolution for LRP, so it needs no canonizer of its own
    from methods.canonizers import register_canonizer

    register_canonizer(BiasMapConv2d)(lambda module: [])


_register_with_canonizers()


def _leaf_order(model: nn.Module, example: Tensor) -> list[tuple[str, nn.Module, Tensor]]:
    """Leaf modules in execution order with the input each one received on ``example``."""
    seen: list[tuple[str, nn.Module, Tensor]] = []
    handles = []
    for name, mod in model.named_modules():
        if len(list(mod.children())) == 0:
            handles.append(mod.register_forward_pre_hook(
                lambda m, args, name=name: seen.append((name, m, args[0].detach())) if args else None
            ))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return seen


def first_layer(model: nn.Module, example: Tensor) -> tuple[str, nn.Module]:
    """The first module with parameters that the input meets, in execution order: ``(qualified name, module)``."""
    for name, mod, _ in _leaf_order(model, example):
        if any(True for _ in mod.parameters(recurse=False)):
            return name, mod
    raise ValueError(f"{type(model).__name__} has no parametrized layer that the input reaches")


def _shift_at_first_layer(model: nn.Module, shift: Tensor, example: Tensor) -> tuple[str, nn.Module, Tensor]:
    """The first layer and the shift as its input sees it (one sample's shape)."""
    x = torch.cat([example[:1], torch.rand_like(example[:1]) * 2 - 1]) if len(example) < 2 else example[:2]
    a = [(n, m, t) for n, m, t in _leaf_order(model, x) if any(True for _ in m.parameters(recurse=False))]
    b = [(n, m, t) for n, m, t in _leaf_order(model, x + shift) if any(True for _ in m.parameters(recurse=False))]
    if not a:
        raise ValueError(f"{type(model).__name__} has no parametrized layer that the input reaches")
    name, mod, ta = a[0]
    tb = b[0][2]
    delta = tb - ta
    scale = float(shift.abs().max()) + 1e-12
    if not torch.allclose(delta[0], delta[1], atol=1e-5 * scale, rtol=0):
        raise ValueError(
            f"the layers before {name!r} ({type(mod).__name__}) do not pass a shift through unchanged "
            f"(the shift they deliver depends on the input by {float((delta[0] - delta[1]).abs().max()):.3g}); "
            "a twin needs the first parametrized layer to see x + m"
        )
    return name, mod, delta[:1].mean(0)


@torch.no_grad()
def shifted_twin(model: nn.Module, shift: Tensor, *, example: Tensor | None = None) -> nn.Module:
    """A copy of ``model`` whose first layer absorbs ``shift``: ``twin(x + shift) == model(x)``.

    ``shift``: one input's shape (``C x H x W``) or broadcastable to it (a scalar for a mean shift).
    ``example``: a batch of inputs used to trace the first layer (default: zeros shaped like ``shift``,
    which then must have the full input shape). The original model is never modified.
    """
    param = next(model.parameters())
    if example is None:
        if shift.dim() == 0:
            raise ValueError("a scalar shift needs an `example` input to know the input shape")
        example = torch.zeros(1, *shift.shape, dtype=param.dtype, device=param.device)
    example = example.to(device=param.device, dtype=param.dtype)
    shift = torch.as_tensor(shift, dtype=param.dtype, device=param.device).expand(example.shape[1:])
    with eval_mode(model):
        name, layer, delta = _shift_at_first_layer(model, shift, example)

    twin = copy.deepcopy(model)
    old = twin.get_submodule(name)
    if type(layer) is nn.Linear:
        new = nn.Linear(old.in_features, old.out_features, bias=True, device=param.device, dtype=old.weight.dtype)
        new.weight.copy_(old.weight)
        b1 = old.bias if old.bias is not None else torch.zeros_like(new.bias)
        new.bias.copy_(b1 - old.weight @ delta.reshape(-1))
    elif type(layer) in (nn.Conv2d, BiasMapConv2d):
        new = BiasMapConv2d(
            old.in_channels, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
            dilation=old.dilation, groups=old.groups, bias=False, padding_mode=old.padding_mode,
            device=param.device, dtype=old.weight.dtype,
        )
        new.weight.copy_(old.weight)
        comp = old._conv_forward(delta[None], old.weight, None)[0]  # C_out x H_out x W_out, the layer's own padding
        if old.bias is None:
            b1 = torch.zeros_like(comp)
        elif old.bias.dim() == 1:
            b1 = old.bias[:, None, None].expand_as(comp)
        else:  # already a bias map (a twin of a twin)
            b1 = old.bias
        new.bias = nn.Parameter(b1 - comp)
    else:
        raise ValueError(
            f"cannot build a shifted twin: the first layer {name!r} is a {type(layer).__name__}; "
            "supported first layers: Linear, Conv2d"
        )
    new.train(old.training)
    new.requires_grad_(old.weight.requires_grad)
    replace_module(twin, name, new)
    return twin


@torch.no_grad()
def twin_error(model: nn.Module, twin: nn.Module, x: Tensor, shift: Tensor) -> tuple[float, float]:
    """``(max |model(x) - twin(x + shift)|, max |model(x)|)`` over the batch ``x``; both models in eval mode."""
    with eval_mode(model, twin):
        y1 = model(x)
        y2 = twin(x + shift.to(x))
    return float((y1 - y2).abs().max()), float(y1.abs().max())


def check_twin(
    model: nn.Module, twin: nn.Module, x: Tensor, shift: Tensor, *, rtol: float = 1e-4, float64: bool = False
) -> float:
    """Prove the premise on ``x``: ``max|f1(x) - f2(x + m)| <= rtol * max|f1(x)|``; returns the relative error.

    ``float64=True`` checks copies of both networks in double precision. A twin built from a float32 model
    carries float32 rounding in its compensated bias (about 1e-7 relative); one built from a float64 model
    passes ``rtol=1e-10``.
    Raises :class:`TwinPremiseError` with the numbers otherwise.
    """
    if float64:
        model, twin, x, shift = copy.deepcopy(model).double(), copy.deepcopy(twin).double(), x.double(), shift.double()
    err, scale = twin_error(model, twin, x, shift)
    rel = err / max(scale, 1e-30)
    if not rel <= rtol:
        raise TwinPremiseError(
            f"the twin does not reproduce the model on the evaluated batch: max |f1(x) - f2(x + m)| = {err:.3g} "
            f"with logits up to {scale:.3g} (relative {rel:.3g} > tolerance {rtol:g})"
        )
    return rel

