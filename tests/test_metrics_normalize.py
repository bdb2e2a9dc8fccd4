"""metrics.normalize against a NumPy reference (per sample), batch_percentile against numpy.percentile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metrics


def _ref(m: np.ndarray, mode: str, q: float = 99.0) -> np.ndarray:
    """One sample ``C x H x W`` (or ``H x W``), with the documented zero-scale limit."""
    if mode == "none":
        return m
    if mode == "minmax":
        span = m.max() - m.min()
        return (m - m.min()) / span if span > 0 else np.zeros_like(m)
    if mode == "abs_max":  # the authors' MNIST notebooks: |a| / max |a|, no clip
        s = np.abs(m).sum(0) if m.ndim == 3 else np.abs(m)
        return s / s.max() if s.max() > 0 else np.zeros_like(s)
    if mode == "abs":
        s = np.abs(m).sum(0) if m.ndim == 3 else np.abs(m)
        span = np.percentile(s, q) - s.min()
        return np.clip((s - s.min()) / span, 0, 1) if span > 0 else (s > s.min()).astype(s.dtype)
    s = m.sum(0) if m.ndim == 3 else m
    span = np.percentile(np.abs(s), q)
    return np.clip(s / span, -1, 1) if span > 0 else np.sign(s)


def _maps(kind: str, shape, seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if kind == "sparse":
        x = x * (rng.random(shape) < 0.2)
    elif kind == "very_sparse":  # fewer than 1% nonzero: the 99th percentile is 0
        x = x * (rng.random(shape) < 0.004)
    elif kind == "constant":
        x = np.full(shape, 0.7)
    elif kind == "zero":  # an all-zero map (e.g. a dead ReLU net's): every mode gives zeros
        x = np.zeros(shape)
    return torch.from_numpy(x)


@pytest.mark.parametrize("mode", ["abs", "signed", "abs_max", "minmax", "none"])
@pytest.mark.parametrize("kind", ["normal", "sparse", "very_sparse", "constant", "zero"])
@pytest.mark.parametrize("shape", [(4, 3, 21, 17), (3, 30, 30)], ids=["4d", "3d"])
def test_matches_numpy_reference(mode, kind, shape):
    maps = _maps(kind, shape)
    out = metrics.normalize(maps, mode)
    ref = np.stack([_ref(m, mode) for m in maps.numpy()])
    assert out.shape == ref.shape and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-12)
    out32 = metrics.normalize(maps.float(), mode)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.double().numpy(), ref, rtol=0, atol=1e-5)


def test_other_percentile():
    maps = _maps("normal", (2, 3, 10, 10))
    ref = np.stack([_ref(m, "abs", 95.0) for m in maps.numpy()])
    np.testing.assert_allclose(metrics.normalize(maps, "abs", percentile=95.0).numpy(), ref, atol=1e-12)


def test_per_sample_never_batch_global():
    maps = _maps("normal", (5, 2, 12, 12), seed=1)
    for mode in ("abs", "signed", "minmax"):
        alone = metrics.normalize(maps[:1], mode)
        with_others = metrics.normalize(torch.cat([maps[:1], 1000 * maps[1:]]), mode)
        assert torch.equal(alone[0], with_others[0])


@pytest.mark.parametrize("n", [1, 2, 3, 100, 1001, 50176])
@pytest.mark.parametrize("q", [0.0, 1.0, 37.3, 50.0, 99.0, 99.9, 100.0])
def test_batch_percentile_is_numpy_percentile(n, q):
    x = _maps("sparse", (3, n), seed=n)
    np.testing.assert_array_equal(metrics.batch_percentile(x, q).numpy(), np.percentile(x.numpy(), q, axis=1))


def test_errors():
    with pytest.raises(ValueError, match="unknown normalization 'log'; accepted: abs, signed, abs_max, minmax, none"):
        metrics.normalize(torch.zeros(1, 4, 4), "log")
    with pytest.raises(ValueError, match="expected B x H x W or B x C x H x W"):
        metrics.normalize(torch.zeros(4, 4), "abs")
    bad = torch.zeros(2, 1, 4, 4)
    bad[1, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="normalize: inputs hold 1 NaN values"):
        metrics.normalize(bad, "abs")


@pytest.mark.gpu
def test_cuda_matches_cpu():
    maps = _maps("very_sparse", (3, 3, 40, 40), seed=2)
    for mode in ("abs", "signed", "minmax"):
        torch.testing.assert_close(metrics.normalize(maps.cuda(), mode).cpu(), metrics.normalize(maps, mode))
