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

from methods.state import replace_module

__all__ = ["TieStableMaxPool2d", "stable_ties", "default_rtol"]


def default_rtol(dtype: torch.dtype) -> float:
    """1,000 machine epsilons of ``dtype``: about 2e-13 in float64 and 1e-4 in float32."""
    return 1000.0 * torch.finfo(dtype).eps


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _window_views(xp: Tensor, kernel, stride, dilation, out_hw) -> list[Tensor]:
    """One strided view of ``xp`` per window position (in row-major window order), each ``N x C x Ho x Wo``."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_hw
    return [xp[..., i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw]
            for i in range(kh) for j in range(kw)]


class _StableMaxPool(torch.autograd.Function):
    # A loop over the k x k window positions (not over samples) on strided views: memory stays at the size of
    # the output, where an unfold would copy the input k x k times.
    @staticmethod
    def forward(ctx, x: Tensor, kernel, stride, padding, dilation, rtol: float) -> Tensor:
        n = x.shape[0]
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
        xp = F.pad(x, (pw, pw, ph, ph), value=float("-inf")) if ph or pw else x
        hp, wp = xp.shape[-2:]
        out_hw = ((hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1)
        out = F.max_pool2d(x, kernel, stride, padding, dilation)
        atol = rtol * x.detach().abs().reshape(n, -1).amax(1).view(n, 1, 1, 1)
        floor = out - atol
        first = torch.full(out.shape, -1, dtype=torch.int16 if kh * kw < 2**15 else torch.int64, device=x.device)
        for k, view in enumerate(_window_views(xp, kernel, stride, dilation, out_hw)):
            first.masked_fill_((first < 0) & (view >= floor), k)  # the first position that is (nearly) the max
        ctx.save_for_backward(first)
        ctx.geometry = (tuple(x.shape), (hp, wp), kernel, stride, padding, dilation, out_hw)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        (first,) = ctx.saved_tensors
        shape, (hp, wp), kernel, stride, (ph, pw), dilation, out_hw = ctx.geometry
        gp = torch.zeros(*shape[:2], hp, wp, dtype=grad_out.dtype, device=grad_out.device)
        zero = grad_out.new_zeros(())
        for k, view in enumerate(_window_views(gp, kernel, stride, dilation, out_hw)):
            view.add_(torch.where(first == k, grad_out, zero))
        return gp[..., ph : ph + shape[2], pw : pw + shape[3]], None, None, None, None, None


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
        replace_module(model, name, new)
        replaced.append(name)
    return replaced


def _register_with_canonizers() -> None:
    # for LRP a max-pool passes relevance to its winner through the gradient; this one only fixes which
    # winner, so it needs no canonizer of its own
    from methods.canonizers import register_canonizer

    register_canonizer(TieStableMaxPool2d)(lambda module: [])


_register_with_canonizers()
