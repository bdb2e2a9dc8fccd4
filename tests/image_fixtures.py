"""Image folders generated on the fly (tests of :func:`bench.core.image_folder.image_folder`): a few small
PNG/JPEG files per class with a class-dependent pattern, written under a test's ``tmp_path``.

A plain module of helpers rather than conftest fixtures, so that a test states the folder it needs:
``make_image_folder(tmp_path / "pets", splits=("train", "val"))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["make_image_folder", "pattern", "CLASSES"]

#: the default classes; the sorted names give the labels 0, 1
CLASSES = ("circles", "stripes")


def pattern(label: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """``uint8[H, W, 3]``: class 0 a reddish image with a bright disc, class 1 a bluish image with vertical
    stripes; a random offset and mild noise per image. Learnable by a small MLP within a few steps."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    if label % 2 == 0:
        cy, cx = height / 2 + rng.uniform(-2, 2), width / 2 + rng.uniform(-2, 2)
        shape = ((yy - cy) ** 2 + (xx - cx) ** 2 < (min(height, width) / 3) ** 2).astype(np.float64)
        colour = np.array([0.9, 0.3, 0.2])
    else:
        shape = (((xx + rng.integers(0, 4)) // 2) % 2).astype(np.float64)
        colour = np.array([0.2, 0.4, 0.9])
    img = 0.15 + 0.7 * shape[..., None] * colour + rng.normal(0, 0.03, (height, width, 3))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def make_image_folder(
    root: Path,
    *,
    splits: Sequence[str] | None = ("train", "val"),
    classes: Sequence[str] = CLASSES,
    per_class: int = 12,
    size: tuple[int, int] | Sequence[tuple[int, int]] = (16, 16),
    ext: str = ".png",
    seed: int = 0,
) -> Path:
    """Write ``per_class`` images of each class into ``root/<split>/<class>/`` (or ``root/<class>/`` when
    ``splits`` is ``None``) and return ``root``.

    ``size``: ``(H, W)`` of every image, or a list of sizes used in turn (mixed sizes); ``ext``: ``.png`` (lossless)
    or ``.jpg``/``.jpeg`` (any case). Seeded: the same arguments write the same files.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [size] if isinstance(size[0], int) else list(size)  # type: ignore[index]
    for split in splits or [None]:
        for label, name in enumerate(classes):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                h, w = sizes[i % len(sizes)]
                Image.fromarray(pattern(label, h, w, rng)).save(folder / f"img_{i:03d}{ext}")
    return root
