"""Batched metrics vs per-pair loops of their references (scikit-image, SciPy), side by side in one run.

    python scripts/bench_metrics.py                   # CPU, full sizes, writes benchmarks/metrics.md
    python scripts/bench_metrics.py --quick           # fewer reference pairs (timed, then scaled)
    python scripts/bench_metrics.py --device cuda --append

Cases: 1,024 pairs of 28 x 28 maps and 256 pairs of 3 x 224 x 224 maps (uniform noise and a noisy copy),
float32 by default, the same arrays for both sides. Scored: SSIM (scikit-image defaults, and the sanity-checks
paper's Gaussian window), Spearman over all elements, and HOG similarity (Spearman of HOG features of the
channel-summed |map|; 4-pixel cells at 28 x 28, the paper's 16-pixel cells at 224 x 224). Ours: best of
``--repeats`` calls after a warm-up (CUDA synchronised). Reference: one pass of a Python loop over the pairs
(``--quick``: over the first ``--ref-pairs`` pairs, scaled to the batch). Each row also reports the largest
difference between the two sides' scores.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import skimage
import torch
from scipy.stats import spearmanr
from skimage.feature import hog
from skimage.metrics import structural_similarity

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (ROOT, HERE):  # run as a plain script from a checkout: the project and the scripts' helpers
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from _machine import describe  # noqa: E402

import metrics  # noqa: E402


def _ref_ssim(**kw) -> Callable[[np.ndarray, np.ndarray], float]:
    def score(x: np.ndarray, y: np.ndarray) -> float:
        return structural_similarity(x, y, data_range=1.0, channel_axis=0 if x.ndim == 3 else None, **kw)

    return score


def _ref_spearman(x: np.ndarray, y: np.ndarray) -> float:
    return spearmanr(x.ravel(), y.ravel()).statistic


def _ref_hog(cell: int) -> Callable[[np.ndarray, np.ndarray], float]:
    def score(x: np.ndarray, y: np.ndarray) -> float:
        if x.ndim == 3:
            x, y = np.abs(x).sum(0), np.abs(y).sum(0)
        return spearmanr(hog(x, pixels_per_cell=(cell, cell)), hog(y, pixels_per_cell=(cell, cell))).statistic

    return score


def _time_ours(fn: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up (allocations, CUDA kernels)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def _time_reference(score: Callable, a: np.ndarray, b: np.ndarray, pairs: int) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = np.array([score(a[i], b[i]) for i in range(pairs)])
    return (time.perf_counter() - start) * len(a) / pairs, out


def run(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for label, batch, shape, hog_cell in [("28x28", 1024, (28, 28), 4), ("3x224x224", 256, (3, 224, 224), 16)]:
        a = torch.rand(batch, *shape, generator=gen, dtype=torch.float64)
        b = (a + 0.3 * torch.randn(batch, *shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
        a, b = a.to(dtype), b.to(dtype)
        an, bn = a.numpy(), b.numpy()
        da, db = a.to(device), b.to(device)
        cell = (hog_cell, hog_cell)
        cases = [
            ("SSIM (skimage defaults: 7x7 uniform)", partial(metrics.ssim, da, db, data_range=1.0), _ref_ssim()),
            ("SSIM (paper: Gaussian sigma 1.5)", partial(metrics.ssim, da, db, data_range=1.0, gaussian_weights=True),
             _ref_ssim(gaussian_weights=True)),
            ("Spearman (all elements)", partial(metrics.spearman, da, db), _ref_spearman),
            (f"HOG similarity ({hog_cell}-px cells)", partial(metrics.hog_similarity, da, db, pixels_per_cell=cell),
             _ref_hog(hog_cell)),
        ]
        for name, ours_fn, ref_fn in cases:
            pairs = min(batch, args.ref_pairs) if args.quick else batch
            ours_s, ours = _time_ours(ours_fn, args.repeats, device)
            ref_s, ref = _time_reference(ref_fn, an, bn, pairs)
            diff = float(np.nanmax(np.abs(ours[:pairs].double().cpu().numpy() - ref)))
            row = dict(size=label, pairs=batch, metric=name, ours_ms=ours_s * 1e3, ref_ms=ref_s * 1e3,
                       ratio=ref_s / ours_s, ref_pairs=pairs, max_diff=diff)
            rows.append(row)
            print(f"{label:>10} {name:<38} ours {row['ours_ms']:9.1f} ms  reference {row['ref_ms']:9.1f} ms"
                  f"  x{row['ratio']:7.1f}  max|diff| {diff:.1e}", flush=True)
    return rows


def machine(args: argparse.Namespace) -> str:
    """The results section's machine lines (markdown bullets): device and dtype, CPU, library versions."""
    m = describe(args.device, {"scikit-image": skimage.__version__})
    gpu = f", GPU: {m.gpu}" if m.gpu else ""
    return (
        f"- device: {m.device}{gpu}; dtype {args.dtype}\n"
        f"- CPU: {m.cpu_model}; {m.cpu_count} CPUs, {m.usable_cpus} usable by this process, "
        f"torch intra-op threads {m.torch_threads}; load average at start {m.load_str('.1f', ', ')}\n"
        "- " + ", ".join(f"{lib} {v}" for lib, v in m.versions.items()) + f", Python {m.python}"
    )


def markdown(rows: list[dict], args: argparse.Namespace, header: str) -> str:
    mode = f"quick: reference timed on {args.ref_pairs} pairs, scaled" if args.quick else "full"
    lines = [
        f"## {args.device}, {args.dtype}, {mode} ({datetime.date.today().isoformat()})",
        "",
        header,
        "",
        "| maps | pairs | metric | batched (ms) | reference loop (ms) | speed-up | max abs diff |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['size']} | {r['pairs']} | {r['metric']} | {r['ours_ms']:.1f} | {r['ref_ms']:.1f} "
                     f"| {r['ratio']:.1f}x | {r['max_diff']:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--quick", action="store_true", help="time the reference on --ref-pairs pairs only")
    parser.add_argument("--ref-pairs", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "metrics.md")
    parser.add_argument("--append", action="store_true", help="add a section instead of rewriting the file")
    parser.add_argument("--note", default="", help="a remark written under the section's machine description")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    header = machine(args) + (f"\n- note: {args.note}" if args.note else "")
    print(header, flush=True)
    rows = run(args)
    section = markdown(rows, args, header)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and args.out.exists():
        args.out.write_text(args.out.read_text() + "\n" + section)
    else:
        title = "# Batched metrics vs per-pair reference loops\n\nWritten by `scripts/bench_metrics.py`.\n\n"
        args.out.write_text(title + section)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
