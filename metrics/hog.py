"""HOG features exactly as ``skimage.feature.hog`` (2-D image, ``feature_vector=True``), batched in torch.

Gradients by central differences (zero at the border rows/columns), orientation in [0, 180) degrees,
magnitude-weighted histograms over cells (pixels outside the last full cell ignored, each cell's sum
divided by its area), blocks of ``cells_per_block`` cells normalized with ``block_norm``. Gradients and
histograms are computed in float64, so orientation bins agree exactly; scikit-image sums each cell in a
32-bit C float, so features agree to about 1e-8 (measured), not to float64 precision.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metrics._checks import check_finite, check_pair
from metrics.rank import spearman

__all__ = ["hog_features", "hog_similarity"]

_NORMS = ("L1", "L1-sqrt", "L2", "L2-Hys")


def _normalize_blocks(blocks: Tensor, method: str) -> Tensor:
    eps = 1e-5
    dims = (-3, -2, -1)
    if method == "L1":
        return blocks / (blocks.abs().sum(dims, keepdim=True) + eps)
    if method == "L1-sqrt":
        return torch.sqrt(blocks / (blocks.abs().sum(dims, keepdim=True) + eps))
    if method == "L2":
        return blocks / torch.sqrt((blocks**2).sum(dims, keepdim=True) + eps**2)
    if method == "L2-Hys":
        out = blocks / torch.sqrt((blocks**2).sum(dims, keepdim=True) + eps**2)
        out = out.clamp(max=0.2)
        return out / torch.sqrt((out**2).sum(dims, keepdim=True) + eps**2)
    raise ValueError(f"hog: unknown block_norm {method!r}; accepted: {', '.join(_NORMS)}")


def hog_features(
    images: Tensor,
    orientations: int = 9,
    pixels_per_cell: tuple[int, int] = (16, 16),
    cells_per_block: tuple[int, int] = (3, 3),
    block_norm: str = "L2-Hys",
) -> Tensor:
    """HOG descriptors of ``images[B, H, W]`` -> ``Tensor[B, F]`` (the input's float dtype)."""
    if images.ndim != 3:
        raise ValueError(f"hog: expected grey images B x H x W, got {tuple(images.shape)}")
    check_finite("hog", images)
    if block_norm not in _NORMS:
        raise ValueError(f"hog: unknown block_norm {block_norm!r}; accepted: {', '.join(_NORMS)}")
    out_dtype = images.dtype if images.is_floating_point() else torch.float64
    img = images.to(torch.float64)
    bsz, h, w = img.shape
    cr, cc = pixels_per_cell
    br, bc = cells_per_block
    ncr, ncc = h // cr, w // cc
    nbr, nbc = ncr - br + 1, ncc - bc + 1
    if nbr < 1 or nbc < 1:
        raise ValueError(
            f"hog: an image of {h} x {w} pixels is smaller than one block ({br} x {bc} cells of {cr} x {cc} "
            f"pixels = {br * cr} x {bc * cc}); use larger images or smaller pixels_per_cell"
        )
    g_row = torch.zeros_like(img)
    g_col = torch.zeros_like(img)
    g_row[:, 1:-1, :] = img[:, 2:, :] - img[:, :-2, :]
    g_col[:, :, 1:-1] = img[:, :, 2:] - img[:, :, :-2]
    mag = torch.hypot(g_col, g_row)
    ori = torch.remainder(torch.rad2deg(torch.atan2(g_row, g_col)), 180.0)
    per = 180.0 / orientations
    thresholds = torch.tensor([per * (i + 1) for i in range(orientations)], dtype=torch.float64, device=img.device)
    bins = (ori[..., None] >= thresholds).sum(-1).clamp(max=orientations - 1)  # bin i: per*i <= o < per*(i+1)
    onehot = torch.zeros(bsz, h, w, orientations, dtype=torch.float64, device=img.device)
    onehot.scatter_(-1, bins[..., None], mag[..., None])
    onehot = onehot[:, : ncr * cr, : ncc * cc]
    hist = onehot.view(bsz, ncr, cr, ncc, cc, orientations).sum((2, 4)) / (cr * cc)  # B x ncr x ncc x O
    blocks = hist.unfold(1, br, 1).unfold(2, bc, 1)  # B x nbr x nbc x O x br x bc
    blocks = blocks.permute(0, 1, 2, 4, 5, 3)  # B x nbr x nbc x br x bc x O (scikit-image's order)
    return _normalize_blocks(blocks, block_norm).reshape(bsz, -1).to(out_dtype)


def hog_similarity(
    a: Tensor,
    b: Tensor,
    orientations: int = 9,
    pixels_per_cell: tuple[int, int] = (16, 16),
    cells_per_block: tuple[int, int] = (3, 3),
    block_norm: str = "L2-Hys",
) -> Tensor:
    """Spearman correlation of the HOG features of two batches of maps -> ``Tensor[B]``.

    ``B x H x W`` maps are used as they are; ``B x C x H x W`` maps are first reduced to the sum of
    ``|value|`` over channels.
    """
    check_pair("hog_similarity", a, b, min_dim=3)
    if a.ndim == 4:
        a, b = a.abs().sum(1), b.abs().sum(1)
    fa = hog_features(a, orientations, pixels_per_cell, cells_per_block, block_norm)
    fb = hog_features(b, orientations, pixels_per_cell, cells_per_block, block_norm)
    return spearman(fa, fb)


