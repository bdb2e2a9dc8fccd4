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

Layers that run before the first parametrized layer must act element-wise affinely up to a reshape
(``Flatten``, ``Identity``, ``Dropout`` in eval mode, the model's own input normalization
``(x - mean) / std``): the transform that the first layer sees is measured with hooks and checked on two
different inputs, so a shift given in pixel space is absorbed exactly by a model that standardizes its input.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from methods.state import eval_mode, first_layer_input, replace_module

__all__ = ["Affine", "BiasMapConv1d", "BiasMapConv2d", "BiasMapConv3d", "affine_twin", "first_layer", "shifted_twin",
           "twin_error", "check_twin", "TwinPremiseError"]


class TwinPremiseError(RuntimeError):
    """The twin does not compute the same function as the original on the evaluated batch."""


class _BiasMap:
    """Mixin of a convolution whose bias is a per-position map ``C_out x *spatial_out`` (added after the
    convolution)."""

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


class BiasMapConv1d(_BiasMap, nn.Conv1d):
    """A ``Conv1d`` with a per-position bias map ``C_out x L_out``."""


class BiasMapConv2d(_BiasMap, nn.Conv2d):
    """A ``Conv2d`` with a per-position bias map ``C_out x H_out x W_out``."""


class BiasMapConv3d(_BiasMap, nn.Conv3d):
    """A ``Conv3d`` with a per-position bias map ``C_out x D_out x H_out x W_out``."""


_BIAS_MAP = {nn.Conv1d: BiasMapConv1d, nn.Conv2d: BiasMapConv2d, nn.Conv3d: BiasMapConv3d,
             BiasMapConv1d: BiasMapConv1d, BiasMapConv2d: BiasMapConv2d, BiasMapConv3d: BiasMapConv3d}


def _register_with_canonizers() -> None:
    # the bias map is a parameter that zennit's rules modify element-wise through ``forward``; the layer is
    # a plain convolution for LRP, so it needs no canonizer of its own
    from methods.canonizers import register_canonizer

    for cls in (BiasMapConv1d, BiasMapConv2d, BiasMapConv3d):
        register_canonizer(cls)(lambda module: [])


_register_with_canonizers()


def first_layer(model: nn.Module, example: Tensor) -> tuple[str, nn.Module]:
    """The first module with parameters that the input meets, in execution order: ``(qualified name, module)``."""
    name, mod, _ = first_layer_input(model, example)
    return name, mod


@dataclass(frozen=True)
class Affine:
    """The input transform ``x' = scale * x + shift`` (``scale > 0``), both one input's shape."""

    scale: Tensor
    shift: Tensor

    def apply(self, x: Tensor) -> Tensor:
        """``scale * x + shift`` for a batch ``x``."""
        return self.scale.to(x) * x + self.shift.to(x)

    @classmethod
    def of(cls, transform: Tensor | Affine, shape: tuple[int, ...], *, dtype: torch.dtype = torch.float32,
           device: torch.device | str = "cpu") -> Affine:
        """A shift ``m`` (a tensor) as ``Affine(1, m)``, or an :class:`Affine`, expanded to ``shape`` and cast.
        Raises ``ValueError`` for a scale that is not positive everywhere, or NaN."""
        t = transform if isinstance(transform, Affine) else cls(torch.ones(()), torch.as_tensor(transform))
        scale = torch.as_tensor(t.scale).to(device=device, dtype=dtype).expand(shape)
        shift = torch.as_tensor(t.shift).to(device=device, dtype=dtype).expand(shape)
        if not bool(torch.isfinite(scale).all() and torch.isfinite(shift).all()):
            raise ValueError("the transform holds NaN or infinite values; it must be finite everywhere")
        if not bool((scale > 0).all()):
            raise ValueError(f"the transform's scale must be > 0 everywhere, got min {float(scale.min()):g}")
        return cls(scale, shift)


def _transform_at_first_layer(model: nn.Module, t: Affine, example: Tensor) -> tuple[str, nn.Module, Affine]:
    """The first layer and the transform as its input sees it: the layers before it must act element-wise
    affinely, up to a reshape (``Flatten``, ``Identity``, ``Dropout`` in eval mode, a per-channel input
    normalization ``(x - mean) / std``), which is checked.

    With ``g`` the map from the input to the first layer's input, ``g(x) = a x + b`` element-wise: the transform
    ``x -> s x + m`` reaches the first layer as ``g -> s' g + m'`` with ``s' = (g(s) - g(0)) / (g(1) - g(0))`` and
    ``m' = g(m) - s' g(0)`` (``s' = s``, ``m' = (m + (s - 1) mean) / std`` for a normalization)."""
    x = torch.cat([example[:1], torch.rand_like(example[:1]) * 2 - 1]) if len(example) < 2 else example[:2]
    name, mod, seen = first_layer_input(model, x)
    _, _, moved = first_layer_input(model, t.apply(x))

    def g(v: Tensor) -> Tensor:
        return first_layer_input(model, v[None].expand_as(x[:1]).contiguous())[2]

    g0, g1 = g(torch.zeros_like(t.scale)), g(torch.ones_like(t.scale))
    unit = g1 - g0
    scale = torch.where(unit != 0, (g(t.scale) - g0) / torch.where(unit != 0, unit, torch.ones_like(unit)),
                        torch.ones_like(unit))
    shift = g(t.shift) - scale * g0
    expected = scale * seen + shift
    tol = 1e-5 * (float(moved.abs().max()) + 1e-12)
    if seen.shape[1:] != scale.shape[1:] or not torch.allclose(moved, expected, atol=tol, rtol=0):
        raise ValueError(
            f"the layers before {name!r} ({type(mod).__name__}) do not pass the input on element-wise affinely (up "
            "to a reshape): "
            f"the transform they deliver depends on the input by {float((moved - expected).abs().max()):.3g}; "
            "a twin needs the first parametrized layer to see s * x + m"
        )
    return name, mod, Affine(scale[0], shift[0])


def shifted_twin(model: nn.Module, shift: Tensor, *, example: Tensor | None = None) -> nn.Module:
    """A copy of ``model`` whose first layer absorbs ``shift``: ``twin(x + shift) == model(x)``
    (:func:`affine_twin` with scale 1)."""
    return affine_twin(model, shift, example=example)


@torch.no_grad()
def affine_twin(model: nn.Module, transform: Tensor | Affine, *, example: Tensor | None = None) -> nn.Module:
    """A copy of ``model`` whose first layer absorbs ``transform``: ``twin(s * x + m) == model(x)``.

    ``transform``: a shift ``m`` (one input's shape, or broadcastable: a scalar for a mean shift) or an
    :class:`Affine` ``(s, m)``, ``s > 0``. ``Linear``: ``W' = W / s`` (per input element), ``b' = b - W' m``.
    ``Conv1d``/``Conv2d``/``Conv3d``: ``W' = W / s`` with ``s`` constant within each input channel, and a
    per-position bias map ``b - conv'(m)`` (the layer's own padding, stride, dilation, groups). ``example``: a
    batch used to trace the first layer (default: zeros of the transform's shape). The model is never modified.
    Raises ``ValueError`` naming the layer for an unsupported first layer or a scale a convolution cannot absorb.
    """
    param = next(model.parameters())
    name, first = next((n, m) for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False)))
    if isinstance(first, nn.Embedding):
        raise ValueError(f"cannot build a twin: the first layer {name!r} is a {type(first).__name__}: token ids "
                         "cannot be shifted; test the embedding output (bench.core.embedding.embedded); supported "
                         "first layers: Linear, Conv1d, Conv2d, Conv3d")
    if example is None:
        shape = (transform.shift if isinstance(transform, Affine) else torch.as_tensor(transform)).shape
        if len(shape) == 0:
            raise ValueError("a scalar shift needs an `example` input to know the input shape")
        example = torch.zeros(1, *shape, dtype=param.dtype, device=param.device)
    example = example.to(device=param.device, dtype=param.dtype)
    t = Affine.of(transform, tuple(example.shape[1:]), dtype=param.dtype, device=param.device)
    with eval_mode(model):
        name, layer, seen = _transform_at_first_layer(model, t, example)

    twin = copy.deepcopy(model)
    old = twin.get_submodule(name)
    s, m = seen.scale, seen.shift
    if type(layer) is nn.Linear:
        new = nn.Linear(old.in_features, old.out_features, bias=True, device=param.device, dtype=old.weight.dtype)
        new.weight.copy_(old.weight / s.reshape(1, -1))
        b1 = old.bias if old.bias is not None else torch.zeros_like(new.bias)
        new.bias.copy_(b1 - new.weight @ m.reshape(-1))
    elif type(layer) in _BIAS_MAP:
        per_channel = s.reshape(s.shape[0], -1)
        if not torch.equal(per_channel, per_channel[:, :1].expand_as(per_channel)):
            raise ValueError(f"cannot build the twin: the first layer {name!r} is a {type(layer).__name__}, which "
                             "can absorb a scale that is constant within each input channel only")
        cls = _BIAS_MAP[type(layer)]
        new = cls(old.in_channels, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
                  dilation=old.dilation, groups=old.groups, bias=False, padding_mode=old.padding_mode,
                  device=param.device, dtype=old.weight.dtype)
        c_in = per_channel[:, 0]  # the scale of each input channel
        per_group, out_per_group = old.weight.shape[1], old.out_channels // old.groups
        channel = (torch.arange(old.out_channels, device=c_in.device) // out_per_group)[:, None] * per_group \
            + torch.arange(per_group, device=c_in.device)[None]  # weight[o, j] reads input channel channel[o, j]
        new.weight.copy_(old.weight / c_in[channel].reshape(*channel.shape, *([1] * (old.weight.dim() - 2))))
        comp = new._conv_forward(m[None], new.weight, None)[0]  # C_out x spatial_out, the layer's own padding
        if old.bias is None:
            b1 = torch.zeros_like(comp)
        elif old.bias.dim() == 1:
            b1 = old.bias.reshape(-1, *([1] * (comp.dim() - 1))).expand_as(comp)
        else:  # already a bias map (a twin of a twin)
            b1 = old.bias
        new.bias = nn.Parameter(b1 - comp)
    else:
        raise ValueError(
            f"cannot build a twin: the first layer {name!r} is a {type(layer).__name__}; "
            "supported first layers: Linear, Conv1d, Conv2d, Conv3d"
        )
    new.train(old.training)
    new.requires_grad_(old.weight.requires_grad)
    replace_module(twin, name, new)
    return twin


@torch.no_grad()
def twin_error(model: nn.Module, twin: nn.Module, x: Tensor, transform: Tensor | Affine) -> tuple[float, float]:
    """``(max |model(x) - twin(s * x + m)|, max |model(x)|)`` over the batch ``x`` (``transform``: a shift ``m`` or
    an :class:`Affine`); both models in eval mode."""
    t = Affine.of(transform, tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
    with eval_mode(model, twin):
        y1 = model(x)
        y2 = twin(t.apply(x))
    return float((y1 - y2).abs().max()), float(y1.abs().max())


def check_twin(
    model: nn.Module, twin: nn.Module, x: Tensor, transform: Tensor | Affine, *, rtol: float = 1e-4,
    float64: bool = False,
) -> float:
    """Prove the premise on ``x``: ``max|f1(x) - f2(s * x + m)| <= rtol * max|f1(x)|`` (``transform``: a shift or
    an :class:`Affine`); returns the relative error.

    ``float64=True`` checks copies of both networks in double precision. A twin built from a float32 model
    carries float32 rounding in its compensated bias (about 1e-7 relative); one built from a float64 model
    passes ``rtol=1e-10``.
    Raises :class:`TwinPremiseError` with the numbers otherwise.
    """
    if float64:
        model, twin, x = copy.deepcopy(model).double(), copy.deepcopy(twin).double(), x.double()
    err, scale = twin_error(model, twin, x, transform)
    rel = err / max(scale, 1e-30)
    if not rel <= rtol:
        raise TwinPremiseError(
            f"the twin does not reproduce the model on the evaluated batch: max |f1(x) - f2(s x + m)| = {err:.3g} "
            f"with logits up to {scale:.3g} (relative {rel:.3g} > tolerance {rtol:g})"
        )
    return rel

