"""Input validation shared by the metrics: shapes, dtypes, NaN counts."""

from __future__ import annotations

import torch
from torch import Tensor


def float_dtype(*tensors: Tensor) -> torch.dtype:
    """The promoted dtype of ``tensors``: float64 stays, everything else computes in float32."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_nan(metric: str, **tensors: Tensor) -> None:
    """Raise ``ValueError`` naming ``metric`` and the NaN count if any tensor holds NaN.

    Screens with one sum per tensor (NaN propagates through a sum) and counts exactly only when a
    sum is not finite; one host-device synchronisation per call, none per sample.
    """
    sums = torch.stack([t.sum() for t in tensors.values()])
    if bool(torch.isfinite(sums).all()):
        return
    counts = {name: int(torch.isnan(t).sum()) for name, t in tensors.items()}
    if not any(counts.values()):
        return
    detail = ", ".join(f"{name}: {n}" for name, n in counts.items())
    raise ValueError(
        f"{metric}: inputs hold {sum(counts.values())} NaN values ({detail}); a NaN map has no score"
    )


def check_pair(
    a: Tensor, b: Tensor, metric: str, ndims: tuple[int, ...] | None = None, min_ndim: int = 2
) -> tuple[Tensor, Tensor]:
    """Validate a batch of map pairs and cast both to one floating dtype.

    ``a`` and ``b``: ``B x ...`` tensors of the same shape on the same device. Returns the pair in
    the promoted floating dtype. Raises ``ValueError`` for a shape mismatch (naming both shapes),
    an unsupported number of dimensions, or NaN inputs (naming the count).
    """
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise TypeError(f"{metric}: expected two torch.Tensor, got {type(a).__name__} and {type(b).__name__}")
    if a.shape != b.shape:
        raise ValueError(
            f"{metric}: the two batches differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}"
        )
    if ndims is not None and a.ndim not in ndims:
        wanted = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{metric}: expected {wanted} input (batch first), got shape {tuple(a.shape)}")
    if a.ndim < min_ndim:
        raise ValueError(
            f"{metric}: expected at least {min_ndim}-D input (batch first), got shape {tuple(a.shape)}"
        )
    dtype = float_dtype(a, b)
    a, b = a.to(dtype), b.to(dtype)
    check_nan(metric, a=a, b=b)
    return a, b


def count_nan(scores: Tensor) -> int:
    """Number of NaN scores (undefined cases such as constant maps); synchronises once."""
    return int(torch.isnan(scores).sum())
