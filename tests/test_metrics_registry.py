"""The metric registry: names, defaults, bound parameters, errors."""

from __future__ import annotations

import pytest
import torch

import metrics


def test_names_and_scorers():
    assert metrics.names() == ["hog", "pearson", "spearman", "spearman_abs", "ssim", "topk"]
    a = torch.rand(3, 2, 48, 48, dtype=torch.float64)
    b = torch.rand(3, 2, 48, 48, dtype=torch.float64)
    for name in metrics.names():
        scores = metrics.get(name)(a, b)
        assert scores.shape == (3,) and scores.dtype == torch.float64, name
        assert torch.allclose(metrics.get(name)(a, a), torch.ones(3, dtype=torch.float64)), name


def test_defaults_and_bound_parameters():
    a, b = torch.rand(2, 16, 16), torch.rand(2, 16, 16)
    assert torch.equal(metrics.get("ssim")(a, b), metrics.ssim(a, b, data_range=1.0))
    assert torch.equal(metrics.get("ssim")(a, b, data_range=2.0), metrics.ssim(a, b, data_range=2.0))
    paper = metrics.get("ssim", gaussian_weights=True, data_range=2.0)
    assert torch.equal(paper(a, b), metrics.ssim(a, b, data_range=2.0, gaussian_weights=True))
    assert torch.equal(metrics.get("topk")(a, b), metrics.topk_intersection(a, b, 0.1))
    assert torch.equal(metrics.get("topk", k=5)(a, b), metrics.topk_intersection(a, b, 5))
    assert torch.equal(metrics.get("spearman_abs")(a - 0.5, b), metrics.spearman((a - 0.5).abs(), b))


def test_register_and_errors():
    with pytest.raises(ValueError, match="unknown metric 'iou'; accepted: hog, pearson"):
        metrics.get("iou")
    with pytest.raises(ValueError, match="'ssim' is already registered"):
        metrics.register("ssim", metrics.ssim)
