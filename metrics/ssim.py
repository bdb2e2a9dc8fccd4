"""SSIM exactly as ``skimage.metrics.structural_similarity``, batched in torch.

Same parameters and defaults: a uniform ``win_size`` (default 7) window, or with ``gaussian_weights`` a
Gaussian of ``sigma`` truncated at 3.5 sigma (``win_size`` then defaults to its width), sample covariance
normalization ``NP / (NP - 1)``, constants ``(K1 R)^2`` and ``(K2 R)^2``, filters with scipy's ``reflect``
boundary, and the mean over the image cropped by ``(win_size - 1) // 2`` on each side. Multi-channel
inputs are scored per channel and averaged, as scikit-image does with ``channel_axis``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from metrics._checks import check_pair

__all__ = ["ssim"]

_TRUNCATE = 3.5


def _symmetric_index(n: int, radius: int, device: torch.device) -> Tensor:
    """Indices of scipy's ``reflect`` (half-sample symmetric) extension of ``n`` samples by ``radius``."""
    i = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _filter(x: Tensor, kernel: Tensor) -> Tensor:
    """Separable correlation of ``x[N, H, W]`` with the 1-D ``kernel`` along H and W (scipy ``reflect`` border)."""
    r = (len(kernel) - 1) // 2
    n, h, w = x.shape
    x = x[:, _symmetric_index(h, r, x.device)][:, :, _symmetric_index(w, r, x.device)]
    k = kernel.to(x)
    x = F.conv2d(x[:, None], k.view(1, 1, -1, 1))
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return x[:, 0]


def _kernel(gaussian: bool, win_size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    if gaussian:
        radius = int(_TRUNCATE * sigma + 0.5)
        t = torch.arange(-radius, radius + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        return (k / k.sum()).to(dtype=dtype, device=device)
    return torch.full((win_size,), 1.0 / win_size, dtype=dtype, device=device)


def ssim(
    a: Tensor,
    b: Tensor,
    *,
    data_range: float,
    win_size: int | None = None,
    gaussian_weights: bool = False,
    sigma: float = 1.5,
    use_sample_covariance: bool = True,
    K1: float = 0.01,  # noqa: N803  (scikit-image's names)
    K2: float = 0.03,  # noqa: N803
) -> Tensor:
    """Mean SSIM per sample pair: ``a``, ``b`` of shape ``B x H x W`` or ``B x C x H x W`` -> ``Tensor[B]``."""
    check_pair("ssim", a, b, min_dim=3)
    if a.ndim not in (3, 4):
        raise ValueError(f"ssim: expected B x H x W or B x C x H x W, got {tuple(a.shape)}")
    if K1 < 0 or K2 < 0:
        raise ValueError(f"ssim: K1 and K2 must be positive, got K1={K1}, K2={K2}")
    if sigma < 0:
        raise ValueError(f"ssim: sigma must be positive, got {sigma}")
    if data_range is None or not data_range > 0:
        raise ValueError(f"ssim: data_range must be a positive number (max - min of the maps), got {data_range}")
    if win_size is None:
        win_size = 2 * int(_TRUNCATE * sigma + 0.5) + 1 if gaussian_weights else 7
    h, w = a.shape[-2:]
    if win_size > min(h, w):
        raise ValueError(
            f"ssim: win_size {win_size} exceeds the image extent {h} x {w}; use images of at least "
            f"{win_size} x {win_size} or a smaller odd win_size"
        )
    if win_size % 2 != 1:
        raise ValueError(f"ssim: win_size must be odd, got {win_size}")
    dtype = a.dtype if a.is_floating_point() else torch.float64
    x = a.to(dtype).reshape(-1, h, w)
    y = b.to(dtype).reshape(-1, h, w)
    k = _kernel(gaussian_weights, win_size, sigma, dtype, a.device)
    n = x.shape[0]
    stats = _filter(torch.cat([x, y, x * x, y * y, x * y]), k)
    ux, uy, uxx, uyy, uxy = stats.split(n)
    np_ = win_size**2
    cov_norm = np_ / (np_ - 1) if use_sample_covariance else 1.0
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2
    s = s[:, pad : h - pad, pad : w - pad].mean((1, 2))
    return s.reshape(a.shape[0], -1).mean(1) if a.ndim == 4 else s


