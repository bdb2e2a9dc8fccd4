"""Max-pooling with a tie-break that floating-point noise cannot flip.

A max-pool window whose inputs tie (the flat background of a digit after a convolution and a ReLU: every
position holds the same bias) has no unique gradient: autograd routes it to the first maximum. A shifted
twin computes the same values through other floating-point operations (``conv(x + m) + (b - conv(m))``
instead of ``conv(x) + b``), so its tied values differ in the last bits and the gradient goes to another
window position. The maps then differ by one-pixel moves of the gradient: an artifact of rounding at a
point where the function is not differentiable, not a property of the saliency method.

:class:`TieStableMaxPool2d` computes the same forward value as :class:`torch.nn.MaxPool2d` and routes the
gradient to the *first* window position within ``atol`` of the window's maximum, where ``atol`` is ``rtol``
times the largest magnitude of the layer's input in the same sample. For exact ties this is what PyTorch
does already; for ties broken by rounding noise it is the same choice in both networks. The input-invariance
experiment applies it to the model and its twin alike (``tie_break``, on by default); turn it off to see
the raw effect (measured on ``small_cnn`` under the adversarial shift: Gradient SSIM 0.990 instead of 1.0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["TieStableMaxPool2d", "stable_ties", "default_rtol"]


def default_rtol(dtype: torch.dtype) -> float:
    """1,000 machine epsilons of ``dtype``: about 2e-13 in float64 and 1e-4 in float32."""
    return 1000.0 * torch.finfo(dtype).eps


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class _StableMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, kernel, stride, padding, dilation, rtol: float) -> Tensor:
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
        xp = F.pad(x, (pw, pw, ph, ph), value=float("-inf")) if ph or pw else x
        hp, wp = xp.shape[-2:]
        cols = F.unfold(xp.reshape(n * c, 1, hp, wp), (kh, kw), dilation=(dh, dw), stride=(sh, sw))
        out = cols.amax(1, keepdim=True)  # (N*C, 1, L)
        scale = x.detach().abs().reshape(n, -1).amax(1).repeat_interleave(c).view(n * c, 1, 1)
        near = cols >= out - rtol * scale
        first = near.to(torch.uint8).argmax(1, keepdim=True)  # the first position that is (nearly) the max
        ho = (hp - dh * (kh - 1) - 1) // sh + 1
        wo = (wp - dw * (kw - 1) - 1) // sw + 1
        ctx.save_for_backward(first)
        ctx.geometry = (n, c, hp, wp, h, w, kh * kw, (kh, kw), (sh, sw), (ph, pw), (dh, dw))
        return out.view(n, c, ho, wo)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        (first,) = ctx.saved_tensors
        n, c, hp, wp, h, w, kk, kernel, stride, padding, dilation = ctx.geometry
        g = grad_out.reshape(n * c, 1, -1)
        cols = torch.zeros(n * c, kk, g.shape[-1], dtype=g.dtype, device=g.device).scatter_(1, first, g)
        gx = F.fold(cols, (hp, wp), kernel, dilation=dilation, stride=stride)
        ph, pw = padding
        gx = gx[..., ph : ph + h, pw : pw + w]
        return gx.reshape(n, c, h, w), None, None, None, None, None


class TieStableMaxPool2d(nn.MaxPool2d):
    """:class:`torch.nn.MaxPool2d` (same forward) whose gradient goes to the first window position within
    ``rtol * max|input of the sample|`` of the maximum. Input ``N x C x H x W``; ``ceil_mode`` and
    ``return_indices`` are not supported (:func:`stable_ties` leaves such layers alone)."""

    def __init__(self, *args, rtol: float = 1e-12, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.ceil_mode or self.return_indices:
            raise ValueError("TieStableMaxPool2d supports ceil_mode=False and return_indices=False only")
        self.rtol = rtol

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"TieStableMaxPool2d takes N x C x H x W input, got shape {tuple(x.shape)}")
        stride = self.stride if self.stride is not None else self.kernel_size
        return _StableMaxPool.apply(x, _pair(self.kernel_size), _pair(stride), _pair(self.padding),
                                    _pair(self.dilation), self.rtol)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", rtol={self.rtol:g}"


def stable_ties(model: nn.Module, rtol: float | None = None) -> list[str]:
    """Replace, in place, every plain :class:`torch.nn.MaxPool2d` of ``model`` by a
    :class:`TieStableMaxPool2d` with the same geometry; returns the names of the replaced modules.
    ``rtol`` defaults to :func:`default_rtol` of the model's first parameter's dtype. Pooling done by
    functional calls inside ``forward`` is out of reach of module replacement and stays as it is."""
    if rtol is None:
        p = next(model.parameters(), None)
        rtol = default_rtol(p.dtype if p is not None else torch.get_default_dtype())
    replaced = []
    for name, module in list(model.named_modules()):
        if type(module) is not nn.MaxPool2d or module.ceil_mode or module.return_indices:
            continue
        new = TieStableMaxPool2d(module.kernel_size, module.stride, module.padding, module.dilation, rtol=rtol)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        replaced.append(name)
    return replaced


def _register_with_canonizers() -> None:
    # for LRP a max-pool passes relevance to its winner through the gradient; this one only fixes which
    # winner, so it needs no canonizer of its own
    from methods.canonizers import register_canonizer

    register_canonizer(TieStableMaxPool2d)(lambda module: [])


_register_with_canonizers()
