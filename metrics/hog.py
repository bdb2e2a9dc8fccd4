"""HOG features as ``skimage.feature.hog`` computes them (2-D image, ``feature_vector=True``), batched.

Gradients by central differences (zero on the border rows/columns), unsigned orientation
``rad2deg(atan2(g_row, g_col)) % 180`` binned with scikit-image's edges (bin ``i`` holds
``[180 i / O, 180 (i+1) / O)``, edges rounded to float32 as its C code does), magnitude-weighted
histograms over ``pixels_per_cell`` cells (pixels beyond the last full cell ignored, each cell's sum
divided by its area), and overlapping blocks of ``cells_per_block`` cells normalised with
``block_norm``. Magnitudes, histograms and blocks are computed in the input dtype; orientations in
float64 (where the device has it) as scikit-image casts the gradients before ``arctan2``, so float32
maps fall in the same bins as scikit-image's. Features agree to ~1e-7 (scikit-image sums each cell in
a 32-bit C float).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metrics._checks import check_nan, check_pair, float_dtype
from metrics.rank import spearman

__all__ = ["hog_features", "hog_similarity"]

BLOCK_NORMS = ("L1", "L1-sqrt", "L2", "L2-Hys")
CHUNK_ELEMENTS = {"cpu": 1 << 22}
"""Pixels x (orientations + 1) binned at once, per device type; others: 1 << 27."""

HISTOGRAM = {"cpu": "index_add"}
"""Cell histograms per device type: ``index_add`` (one accumulation pass; CPU) or ``onehot`` (a scatter
then sums over cells: no atomics, so deterministic on GPUs; the default for other devices)."""


def _normalize_blocks(blocks: Tensor, method: str, eps: float = 1e-5) -> Tensor:
    """``blocks[..., br, bc, O]`` normalised per block as ``skimage.feature._hog._hog_normalize_block``."""
    dims = (-3, -2, -1)
    if method == "L1":
        return blocks / (blocks.abs().sum(dims, keepdim=True) + eps)
    if method == "L1-sqrt":
        return torch.sqrt(blocks / (blocks.abs().sum(dims, keepdim=True) + eps))
    out = blocks / torch.sqrt((blocks * blocks).sum(dims, keepdim=True) + eps**2)
    if method == "L2-Hys":
        out = out.clamp(max=0.2)
        out = out / torch.sqrt((out * out).sum(dims, keepdim=True) + eps**2)
    return out


def _orientation_bins(angle: Tensor, orientations: int) -> Tensor:
    """scikit-image's bin of each angle in [0, 180] (``orientations``: no bin), as int32.

    Bin ``i`` holds ``e_i <= angle < e_(i+1)`` with ``e_i = float32(float32(180 / O) * i)`` (its C code);
    a floor estimate is corrected by one comparison with each neighbouring edge.
    """
    step = torch.tensor(180.0 / orientations, dtype=torch.float32)
    edges = step * torch.arange(orientations + 1, dtype=torch.float32)
    edges = torch.cat([edges, torch.tensor([float("inf")])]).to(angle.device, angle.dtype)
    guess = (angle * (orientations / 180.0)).floor_().clamp_(0, orientations - 1).to(torch.int32)
    flat = guess.view(-1)
    below = angle < edges[:-1].index_select(0, flat).view_as(angle)
    above = angle >= edges[1:].index_select(0, flat).view_as(angle)
    return guess.sub_(below.to(torch.int32)).add_(above.to(torch.int32))


def _cell_histograms(images: Tensor, orientations: int, cell: tuple[int, int], cells: tuple[int, int]) -> Tensor:
    """Orientation histograms ``[n, ncr, ncc, O]`` of ``images[n, H, W]`` (each cell's mean magnitude)."""
    n = images.shape[0]
    (cr, cc), (ncr, ncc) = cell, cells
    g_row = torch.zeros_like(images)
    g_col = torch.zeros_like(images)
    torch.sub(images[:, 2:], images[:, :-2], out=g_row[:, 1:-1])
    torch.sub(images[:, :, 2:], images[:, :, :-2], out=g_col[:, :, 1:-1])
    g_row, g_col = g_row[:, : ncr * cr, : ncc * cc], g_col[:, : ncr * cr, : ncc * cc]
    magnitude = torch.hypot(g_col, g_row)
    if images.device.type != "mps":  # orientation bins from float64 angles, as scikit-image casts first
        g_row, g_col = g_row.double(), g_col.double()
    angle = torch.remainder(torch.atan2(g_row, g_col) * (180.0 / math.pi), 180.0)
    bins = _orientation_bins(angle, orientations)  # slot O collects the angles that fall in no bin
    slots = orientations + 1
    if HISTOGRAM.get(images.device.type, "onehot") == "index_add":
        dev = images.device
        cell_row = torch.arange(ncr * cr, device=dev, dtype=torch.int32) // cr
        cell_col = torch.arange(ncc * cc, device=dev, dtype=torch.int32) // cc
        sample = torch.arange(n, device=dev, dtype=torch.int32) * ncr
        offset = ((sample[:, None, None] + cell_row[None, :, None]) * ncc + cell_col) * slots
        hist = images.new_zeros(n * ncr * ncc * slots)
        hist.index_add_(0, bins.add_(offset).view(-1), magnitude.reshape(-1))
        hist = hist.view(n, ncr, ncc, slots)[..., :orientations]
    else:  # deterministic on GPUs (no atomics): scatter one-hot, then sum over cells
        onehot = images.new_zeros(n, slots, ncr * cr, ncc * cc)
        onehot.scatter_(1, bins.unsqueeze(1).long(), magnitude.unsqueeze(1))
        hist = onehot[:, :orientations].reshape(n, orientations, ncr, cr, ncc, cc).sum(dim=(5, 3))
        hist = hist.permute(0, 2, 3, 1)
    return hist / (cr * cc)


def hog_features(
    maps: Tensor,
    orientations: int = 9,
    pixels_per_cell: tuple[int, int] = (16, 16),
    cells_per_block: tuple[int, int] = (3, 3),
    block_norm: str = "L2-Hys",
) -> Tensor:
    """HOG descriptors of ``maps[B, H, W]`` -> ``Tensor[B, F]`` (float64 kept, other dtypes in float32).

    ``F = n_blocks_row * n_blocks_col * cells_per_block[0] * cells_per_block[1] * orientations`` in
    scikit-image's order. Defaults are the sanity-checks paper's (16-pixel cells, 3x3 blocks, L2-Hys;
    scikit-image's own default cell is 8 pixels); an image smaller than one block raises ``ValueError``
    naming its size and the minimum.
    """
    if maps.ndim != 3:
        raise ValueError(f"hog: expected grey maps B x H x W, got shape {tuple(maps.shape)}")
    if block_norm not in BLOCK_NORMS:
        raise ValueError(f"hog: unknown block_norm {block_norm!r}; accepted: {', '.join(BLOCK_NORMS)}")
    maps = maps.to(float_dtype(maps))
    check_nan("hog", maps=maps)
    batch, h, w = maps.shape
    (cr, cc), (br, bc) = pixels_per_cell, cells_per_block
    ncr, ncc = h // cr, w // cc
    if ncr < br or ncc < bc:
        raise ValueError(
            f"hog: an image of {h} x {w} pixels is smaller than one block ({br} x {bc} cells of {cr} x {cc} "
            f"pixels = {br * cr} x {bc * cc}); use larger images or smaller pixels_per_cell"
        )
    if batch == 0:
        return maps.new_empty(0, (ncr - br + 1) * (ncc - bc + 1) * br * bc * orientations)
    chunk = max(1, CHUNK_ELEMENTS.get(maps.device.type, 1 << 27) // (h * w * (orientations + 1)))
    hist = torch.cat(
        [
            _cell_histograms(maps[i : i + chunk], orientations, (cr, cc), (ncr, ncc))
            for i in range(0, batch, chunk)
        ]
    )
    blocks = hist.unfold(1, br, 1).unfold(2, bc, 1)  # B x nbr x nbc x O x br x bc
    blocks = blocks.permute(0, 1, 2, 4, 5, 3)  # B x nbr x nbc x br x bc x O (scikit-image's order)
    return _normalize_blocks(blocks, block_norm).reshape(batch, -1)


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
    ``|value|`` over channels (the paper's grayscale map). Identical feature vectors give 1; a map
    with no gradient anywhere gives constant features and so NaN.
    """
    a, b = check_pair(a, b, "hog_similarity", ndims=(3, 4))
    if a.ndim == 4:
        a, b = a.abs().sum(1), b.abs().sum(1)
    fa, fb = (hog_features(m, orientations, pixels_per_cell, cells_per_block, block_norm) for m in (a, b))
    return spearman(fa, fb)
