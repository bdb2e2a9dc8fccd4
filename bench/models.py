"""Reference models by name, and seeded SGD training with a checkpoint cache.

``create_model("paper_mlp" | "small_cnn" | "timm:<name>", input_shape, num_classes)``.
Adding a model is one function decorated with :func:`register_model`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from bench.data import Dataset

__all__ = [
    "register_model",
    "create_model",
    "model_names",
    "TrainConfig",
    "train",
    "evaluate",
    "load_or_train",
    "cache_dir",
]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Register ``fn(input_shape, num_classes, **kw) -> nn.Module`` under ``name``."""

    def deco(fn):
        _MODELS[name] = fn
        return fn

    return deco


def model_names() -> list[str]:
    """Registered names; any ``timm:<name>`` is accepted too."""
    return sorted(_MODELS) + ["timm:<name>"]


@register_model("paper_mlp")
def paper_mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 1024, depth: int = 3) -> nn.Module:
    """Kindermans et al.'s network 1: ``prod(input_shape) -> 3 x 1024 (ReLU) -> num_classes``."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register_model("small_cnn")
def small_cnn(
    input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, int] = (16, 32), hidden: int = 128
) -> nn.Module:
    """Two 3x3 convolutions with zero padding, each followed by ReLU and 2x2 max-pooling, then two dense layers."""
    c, h, w = input_shape
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(c, c1, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * (h // 4) * (w // 4), hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def _timm_model(name: str, input_shape: tuple[int, ...], num_classes: int, pretrained: bool = False, **kw) -> nn.Module:
    import timm

    if name not in timm.list_models(pretrained=False):
        raise ValueError(f"unknown timm model {name!r} (see timm.list_models())")
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=input_shape[0], **kw)
    except Exception as err:  # network errors surface as many exception types
        if not pretrained:
            raise
        raise RuntimeError(
            f"timm could not load pretrained weights for {name!r} ({type(err).__name__}: {err}). Pretrained weights "
            "need a network connection to the Hugging Face hub or a filled HF cache; use pretrained=false to start "
            "from random weights and train on the configured data instead."
        ) from err


def create_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, *, pretrained: bool = False, **kw
) -> nn.Module:
    """Build a model by name. ``input_shape``: ``(C, H, W)`` of one image."""
    if name.startswith("timm:"):
        return _timm_model(name[len("timm:"):], tuple(input_shape), num_classes, pretrained=pretrained, **kw)
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; accepted: {', '.join(model_names())}")
    if pretrained:
        raise ValueError(f"model {name!r} has no pretrained weights; train it (pretrained=false)")
    return _MODELS[name](tuple(input_shape), num_classes, **kw)


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainConfig:
    """Plain minibatch SGD, as in the paper (no momentum, no weight decay by default)."""

    epochs: int = 10
    lr: float = 0.2
    batch_size: int = 32
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0


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
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        pred = model(x[i : i + batch_size].to(device)).argmax(1).cpu()
        correct += int((pred == y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(x), 1)


def train(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig = TrainConfig(),
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
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("SALBENCH_CACHE"):
        return Path(os.environ["SALBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "saliency-bench" / "checkpoints"


def _cache_key(model_name: str, model_kw: dict, data: Dataset, cfg: TrainConfig, extra: str = "") -> str:
    spec = {
        "model": model_name,
        "model_kw": model_kw,
        "data": [data.name, data.encoding, data.fingerprint()],
        "train": asdict(cfg),
        "extra": extra,
        "torch": torch.__version__.split("+")[0],
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_or_train(
    model_name: str,
    data: Dataset,
    cfg: TrainConfig = TrainConfig(),
    *,
    model_kw: dict | None = None,
    labels: torch.Tensor | None = None,
    cache: str | os.PathLike | None = None,
    use_cache: bool = True,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[nn.Module, dict]:
    """Create ``model_name``, then load its cached checkpoint or train it and cache the result.

    The cache key hashes the model name and arguments, the data (name, encoding, content), the
    training settings, the seed and ``labels``. Returns ``(model in eval mode, info)`` where
    ``info`` holds the accuracies, ``"cached": bool`` and ``"path"``.
    """
    model_kw = dict(model_kw or {})
    model = create_model(model_name, data.input_shape, data.num_classes, **model_kw)
    extra = "" if labels is None else hashlib.sha256(labels.numpy().tobytes()).hexdigest()[:16]
    key = _cache_key(model_name, model_kw, data, cfg, extra)
    path = cache_dir(cache) / f"{model_name.replace(':', '_')}-{key}.pt"
    if use_cache and path.exists():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(blob["state_dict"])
        model.to(device).eval()
        return model, {**blob["info"], "cached": True, "path": str(path)}
    info = train(model, data, cfg, labels=labels, device=device, progress=progress)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"state_dict": state, "info": info}, tmp)
        os.replace(tmp, path)
    return model, {**info, "cached": False, "path": str(path)}
