"""Batched SSIM, numerically the same as ``skimage.metrics.structural_similarity``.

Per map pair scikit-image filters five maps (x, y, x², y², xy) with a uniform or Gaussian window (scipy's
``reflect`` border), combines them into the SSIM map and averages it after cropping ``(win_size-1)//2``
pixels on each side. Here all pairs of a chunk are filtered at once, and with fewer passes: only the kept
centres are computed (reflect padding only where the Gaussian is wider than the crop), x² and y² are
filtered as one map (only ``vx + vy`` enters the formula), the constants are added before filtering
(the weights sum to 1) and the box window is a sum of power-of-two widths. Chunks bound memory
(``CHUNK_ELEMENTS``); on CPUs they are sized to stay in cache.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from metrics import _flat
from metrics._checks import check_pair

TRUNCATE = 3.5
"""scikit-image's Gaussian truncation: 11 taps at the default ``sigma=1.5`` (Wang et al. 2004)."""

CHUNK_ELEMENTS = {"cpu": 1 << 19}
"""Elements of the 4-map stack processed at once, per device type (others: 1 << 26): memory stays bounded."""

FILTER = {"cpu": "flat"}
"""Window filtering per device type: ``flat`` (whole-buffer shifts, cache-sized chunks: fastest on CPUs)
or ``conv`` (two 1-D convolutions, valid outputs only: fastest on GPUs; the default for other devices)."""


def ssim(
    a: Tensor,
    b: Tensor,
    *,
    data_range: float | Tensor,
    win_size: int | None = None,
    gaussian_weights: bool = False,
    sigma: float = 1.5,
    use_sample_covariance: bool = True,
    K1: float = 0.01,
    K2: float = 0.03,
) -> Tensor:
    """Mean structural similarity of each pair, as scikit-image computes it.

    ``a``, ``b``: ``B x H x W`` (one channel) or ``B x C x H x W`` (each channel scored and the
    channel scores averaged, as ``structural_similarity(..., channel_axis=0)`` does per sample).
    Parameters mean what they mean in scikit-image: ``data_range`` is the value range of the maps
    (a float, or a ``Tensor[B]`` for one range per pair); ``win_size=None`` means 7, or with
    ``gaussian_weights`` the Gaussian's own width ``2*int(3.5*sigma + 0.5) + 1``; the SSIM map is
    cropped by ``(win_size-1)//2`` on each side before the mean. Each 2-D map is filtered as a 2-D
    image (reflect padding only where the Gaussian is wider than the crop).

    Returns ``Tensor[B]`` in the input dtype (float32 or float64; integers become float32), on the
    input's device. Raises ``ValueError`` for NaN inputs, mismatched shapes, an even ``win_size`` or
    images smaller than the window (as scikit-image does).
    """
    a, b = check_pair(a, b, "ssim", ndims=(3, 4))
    if a.ndim == 3:
        a, b = a.unsqueeze(1), b.unsqueeze(1)
    if K1 < 0:
        raise ValueError(f"ssim: K1 must be positive, got {K1}")
    if K2 < 0:
        raise ValueError(f"ssim: K2 must be positive, got {K2}")
    if sigma < 0:
        raise ValueError(f"ssim: sigma must be positive, got {sigma}")
    radius = int(TRUNCATE * sigma + 0.5)
    if win_size is None:
        win_size = 2 * radius + 1 if gaussian_weights else 7
    batch, channels, height, width = a.shape
    if height < win_size or width < win_size:
        raise ValueError(
            f"ssim: win_size {win_size} exceeds the image extent {height} x {width}; use images of at least "
            f"{win_size} x {win_size} or an odd win_size <= {min(height, width)}"
        )
    if win_size % 2 != 1:
        raise ValueError(f"ssim: win_size must be odd, got {win_size}")

    n_points = win_size**2
    cov_norm = n_points / (n_points - 1) if use_sample_covariance else 1.0  # ZeroDivisionError as skimage
    if isinstance(data_range, Tensor):  # SSIM(x/R, y/R; 1) == SSIM(x, y; R): one range per pair
        scale = data_range.to(a.dtype).reshape(-1, 1, 1, 1)
        if scale.shape[0] != batch:
            raise ValueError(f"ssim: data_range has {scale.shape[0]} values for a batch of {batch}")
        a, b, data_range = a / scale, b / scale, 1.0
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2

    pad = (win_size - 1) // 2
    if gaussian_weights:
        taps = _flat.gaussian_taps(sigma, radius)
        radius = (len(taps) - 1) // 2
    else:
        taps, radius = None, pad
    extra = max(radius - pad, 0)  # reflect padding needed for the kept centres
    first = max(pad - radius, 0)  # first kept row/column of the valid filter output
    kept_h, kept_w = height - 2 * pad, width - 2 * pad

    x = a.reshape(-1, height, width)
    y = b.reshape(-1, height, width)
    if extra:
        rows = _flat.reflect_index(height, extra, a.device)
        cols = _flat.reflect_index(width, extra, a.device)
        x = x.index_select(1, rows).index_select(2, cols)
        y = y.index_select(1, rows).index_select(2, cols)

    plan = _Plan(taps, 2 * radius + 1, 1.0 / n_points, first, kept_h, kept_w,
                 (c1 / 2, c1, c2 / (2 * cov_norm), c2 / cov_norm))
    total, per_map = x.shape[0], x.shape[1] * x.shape[2]
    if total == 0:
        return a.new_empty(batch)
    chunk = max(1, min(total, CHUNK_ELEMENTS.get(a.device.type, 1 << 26) // (4 * per_map)))
    if FILTER.get(a.device.type, "conv") == "flat":
        tail = (plan.k - 1) * (x.shape[2] + 1)
        workspace = _flat.Workspace(x, 4 * (chunk * per_map + tail))
        parts = [_sums_flat(x[i : i + chunk], y[i : i + chunk], plan, workspace) for i in range(0, total, chunk)]
    else:
        parts = [_sums_conv(x[i : i + chunk], y[i : i + chunk], plan) for i in range(0, total, chunk)]
    return torch.cat(parts).view(batch, channels).mean(dim=1) * (4.0 / (kept_h * kept_w))


class _Plan(NamedTuple):
    taps: list[float] | None  # None: the uniform (box) window
    k: int  # filter width
    inv_np: float  # 1 / win_size**2
    first: int  # first kept row/column of the valid filter output
    kept_h: int
    kept_w: int
    consts: tuple[float, float, float, float]  # C1/2, C1, C2/(2 cov), C2/cov


def _fill_stack(maps: Tensor, x: Tensor, y: Tensor, scale: float, plan: _Plan) -> None:
    """``maps[4, n, h, w]`` <- ``s x``, ``s y``, ``s (x^2 + y^2 + C2/cov + C1)``, ``s (x y + C2/(2 cov))``.

    The window weights sum to 1, so constants added before filtering come out unchanged (and save passes
    after it); ``scale`` folds the box window's ``1/NP`` into the stack.
    """
    _, c1, c2_half, c2_scaled = plan.consts
    torch.mul(x, scale, out=maps[0])
    torch.mul(y, scale, out=maps[1])
    torch.addcmul(_scalar(scale * (c2_scaled + c1), x), maps[0], x, out=maps[2])
    maps[2].addcmul_(maps[1], y)
    torch.addcmul(_scalar(scale * c2_half, x), maps[0], y, out=maps[3])


def _ssim_map(mx: Tensor, my: Tensor, mss_c: Tensor, mxy_c: Tensor, plan: _Plan, out: Tensor) -> Tensor:
    """``S / 4`` from the filtered stack (in place on ``mss_c``, ``mxy_c`` and ``out``, all one shape).

    ``S = 4 (P + C1/2)(mxy - P + C2/(2 cov)) / ((Q + C1)(mss - Q + C2/cov))``, ``P = mx my``,
    ``Q = mx^2 + my^2``: scikit-image's ``(2 ux uy + C1)(2 vxy + C2) / ((ux^2 + uy^2 + C1)(vx + vy + C2))``.
    """
    c1_half, c1, _, _ = plan.consts
    a1 = torch.addcmul(_scalar(c1_half, mx), mx, my, out=out[0])
    b1 = torch.addcmul(_scalar(c1, mx), mx, mx, out=out[1])
    b1.addcmul_(my, my)
    a2 = mxy_c.addcmul_(mx, my, value=-1)
    b2 = mss_c.sub_(b1)
    return a1.mul_(a2).div_(b1.mul_(b2))


def _scalar(value: float, like: Tensor) -> Tensor:
    return torch.full((), value, dtype=like.dtype, device=like.device)


def _sums_flat(x: Tensor, y: Tensor, plan: _Plan, ws: _flat.Workspace) -> Tensor:
    """Sum of ``S/4`` over the kept region of each map pair ``x[n, Hp, Wp]``, by whole-buffer shifts."""
    n, hp, wp = x.shape
    m = n * hp * wp
    tail = (plan.k - 1) * (wp + 1)  # zeros after each map so that every filtered map keeps length m
    stack = ws[0][: 4 * (m + tail)].view(4, m + tail)
    stack[:, m:].zero_()
    _fill_stack(stack[:, :m].view(4, n, hp, wp), x, y, plan.inv_np if plan.taps is None else 1.0, plan)
    flat = stack.view(-1)
    if plan.taps is None:
        scratch = range(2, 2 + max(plan.k.bit_length() - 1, 0))
        rows = _flat.box_sum(flat, plan.k, 1, ws[1], [ws[i] for i in scratch])
        filtered = _flat.box_sum(rows, plan.k, wp, ws[0], [ws[i] for i in scratch])
    else:
        rows = _flat.weighted_sum(flat, plan.taps, 1, ws[1])
        filtered = _flat.weighted_sum(rows, plan.taps, wp, ws[0])
    mx, my, mss_c, mxy_c = filtered.as_strided((4, m), (m + tail, 1)).unbind(0)
    s = _ssim_map(mx, my, mss_c, mxy_c, plan, ws[1][: 2 * m].view(2, m)).view(n, hp, wp)
    return s[:, plan.first : plan.first + plan.kept_h, plan.first : plan.first + plan.kept_w].sum(dim=(1, 2))


def _sums_conv(x: Tensor, y: Tensor, plan: _Plan) -> Tensor:
    """As :func:`_sums_flat`, filtering with two 1-D convolutions (valid outputs only; GPUs)."""
    n, hp, wp = x.shape
    stack = x.new_empty(4, n, hp, wp)
    _fill_stack(stack, x, y, 1.0, plan)
    taps = torch.tensor(plan.taps or [1.0 / plan.k] * plan.k, dtype=x.dtype, device=x.device)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # TF32 would cost 3 digits
        filtered = F.conv2d(stack.view(4 * n, 1, hp, wp), taps.view(1, 1, 1, -1))
        filtered = F.conv2d(filtered, taps.view(1, 1, -1, 1))
    crop = filtered.view(4, n, *filtered.shape[-2:])[
        :, :, plan.first : plan.first + plan.kept_h, plan.first : plan.first + plan.kept_w
    ]
    mx, my, mss_c, mxy_c = crop.unbind(0)
    s = _ssim_map(mx, my, mss_c, mxy_c, plan, torch.empty_like(crop[:2]))
    return s.sum(dim=(1, 2))
