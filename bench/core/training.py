"""Seeded SGD training of the reference models, with a checkpoint cache.

:func:`load_or_train` creates a model (:func:`bench.core.models.create_model`), then loads its cached checkpoint
or trains it (:func:`train`) and caches the result under :func:`cache_dir`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional  # noqa: UP035  (OmegaConf reads this dataclass as the `train` config group)

import torch
from torch import nn

from bench._io import atomic_write, cache_root
from bench.core.data import Dataset
from bench.core.models import create_model
from methods.state import eval_mode

__all__ = ["TrainConfig", "train", "evaluate", "load_or_train", "cache_dir"]


@dataclass
class TrainConfig:
    """Plain minibatch SGD, as in the paper (no momentum, no weight decay by default); also the ``train`` config
    group. ``cache_dir`` (default :func:`cache_dir`) and ``use_cache`` say where checkpoints are kept; they are
    not part of a checkpoint's key."""

    epochs: int = 10
    lr: float = 0.2
    batch_size: int = 32
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    cache_dir: Optional[str] = None  # noqa: UP045
    use_cache: bool = True

    def recipe(self) -> dict:
        """The fields that determine the trained weights (the checkpoint key)."""
        return dict(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, momentum=self.momentum,
                    weight_decay=self.weight_decay, seed=self.seed)


def _seeded_init(model: nn.Module, seed: int) -> None:
    """Re-initialise every parameterised module with its own initializer under ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000, device: str | torch.device = "cpu"
) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in [0, 1]; the model's mode is restored."""
    correct = 0
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            pred = model(x[i : i + batch_size].to(device)).argmax(1).cpu()
            correct += int((pred == y[i : i + batch_size]).sum())
    return correct / max(len(x), 1)


def train(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig | None = None,
    *,
    labels: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> dict:
    """Train ``model`` in place with seeded SGD on ``data``'s training split.

    ``labels`` replaces the training labels (the data-randomization test trains on permuted labels).
    Returns ``{"train_acc", "test_acc", "epochs", "loss"}``; the model is left in eval mode.
    """
    from tqdm.auto import tqdm

    cfg = cfg or TrainConfig()
    y_train = data.y_train if labels is None else labels
    _seeded_init(model, cfg.seed)
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(data.x_train)
    loss = float("nan")
    bar = tqdm(range(cfg.epochs), desc="train", disable=not progress, leave=False)
    for _ in bar:
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            xb, yb = data.x_train[idx].to(device), y_train[idx].to(device)
            opt.zero_grad(set_to_none=True)
            batch_loss = nn.functional.cross_entropy(model(xb), yb)
            batch_loss.backward()
            opt.step()
            total += float(batch_loss.detach()) * len(idx)
        loss = total / n
        bar.set_postfix(loss=f"{loss:.4f}")
    model.eval()
    return {
        "train_acc": evaluate(model, data.x_train, y_train, device=device),
        "test_acc": evaluate(model, data.x_test, data.y_test, device=device),
        "epochs": cfg.epochs,
        "loss": loss,
    }


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Checkpoint folder: ``root``, else ``$SALBENCH_CACHE``, else ``~/.cache/saliency-bench/checkpoints``."""
    return cache_root("checkpoints", root, "SALBENCH_CACHE")


def _cache_key(model_name: str, model_kw: dict, data: Dataset, cfg: TrainConfig, extra: str = "") -> str:
    spec = {
        "model": model_name,
        "model_kw": model_kw,
        "data": [data.name, data.encoding, data.fingerprint()],
        "train": cfg.recipe(),
        "extra": extra,
        "torch": torch.__version__.split("+")[0],
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_or_train(
    model_name: str,
    data: Dataset,
    cfg: TrainConfig | None = None,
    *,
    model_kw: dict | None = None,
    labels: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[nn.Module, dict]:
    """Create ``model_name``, then load its cached checkpoint or train it and cache the result.

    ``cfg`` (default :class:`TrainConfig`): the recipe, and where checkpoints are cached (``cfg.cache_dir``,
    ``cfg.use_cache``). The cache key hashes the model name and arguments, the data (name, encoding, content),
    the recipe (:meth:`TrainConfig.recipe`) and ``labels``. Returns ``(model in eval mode, info)`` where
    ``info`` holds the accuracies, ``"cached": bool`` and ``"path"``.
    """
    cfg = cfg or TrainConfig()
    model_kw = dict(model_kw or {})
    model = create_model(model_name, data.input_shape, data.num_classes, **model_kw)
    extra = "" if labels is None else hashlib.sha256(labels.numpy().tobytes()).hexdigest()[:16]
    key = _cache_key(model_name, model_kw, data, cfg, extra)
    path = cache_dir(cfg.cache_dir) / f"{model_name.replace(':', '_')}-{key}.pt"
    if cfg.use_cache and path.exists():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(blob["state_dict"])
        model.to(device).eval()
        return model, {**blob["info"], "cached": True, "path": str(path)}
    info = train(model, data, cfg, labels=labels, device=device, progress=progress)
    if cfg.use_cache:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        atomic_write(path, lambda tmp: torch.save({"state_dict": state, "info": info}, tmp))
    return model, {**info, "cached": False, "path": str(path)}
