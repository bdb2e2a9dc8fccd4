"""Seeded SGD training of the reference models, with a checkpoint cache and a model-quality guard.

:func:`load_or_train` creates a model (:func:`bench.core.models.create_model`), then loads its cached checkpoint
or trains it (:func:`train`) and caches the result under :func:`cache_dir`. A cached checkpoint is validated on
load (readable, the weights' content hash equals the one stored at save time, all weights finite); one that fails
is named in a warning and retrained over. A model whose test accuracy is not clearly above chance is refused
(:func:`check_quality`, :class:`ModelQualityError`): a saliency test of an untrained model says nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional  # noqa: UP035  (OmegaConf reads this dataclass as the `train` config group)

import torch
from torch import nn

from bench._io import DiskFullError, atomic_write, cache_root, remove_stale_temps
from bench.core.data import Dataset
from bench.core.models import create_model, with_source_hash
from methods.state import eval_mode

__all__ = ["TrainConfig", "train", "evaluate", "load_or_train", "load_weights", "cache_dir", "check_quality",
           "chance_level", "default_min_test_acc", "ModelQualityError", "weights_hash", "checkpoint_path"]

log = logging.getLogger(__name__)

#: the optimizers :func:`train` knows
OPTIMIZERS = ("sgd", "adam")
#: the default quality bar lies this fraction of the way from chance to perfect accuracy
QUALITY_MARGIN = 0.25


class ModelQualityError(ValueError):
    """The model's test accuracy is not clearly above chance (or its weights are not finite)."""


@dataclass
class TrainConfig:
    """Plain minibatch SGD, as in the paper (no momentum, no weight decay by default; ``optimizer="adam"`` for
    Adam with ``lr``, ``weight_decay`` and PyTorch's default betas, as the sanity-checks authors trained); also the
    ``train`` config group. ``cache_dir`` (default :func:`cache_dir`) and ``use_cache`` say where checkpoints are
    kept; they are not part of a checkpoint's key. ``min_test_acc``: the test accuracy a model must reach to be
    benchmarked (``None``: :func:`default_min_test_acc` of the data, chance plus a quarter of the way to 1; ``0``
    turns the guard off)."""

    epochs: int = 10
    lr: float = 0.2
    batch_size: int = 32
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    cache_dir: Optional[str] = None  # noqa: UP045
    use_cache: bool = True
    min_test_acc: Optional[float] = None  # noqa: UP045
    optimizer: str = "sgd"

    def check(self) -> None:
        """Raise ``ValueError`` naming the key, its value and the accepted range for a setting out of range
        (``epochs`` >= 0, ``lr`` > 0, ``batch_size`` >= 1, ``momentum`` in [0, 1), ``weight_decay`` >= 0,
        ``min_test_acc`` in [0, 1] or None); called before any training."""
        checks = [("epochs", self.epochs, self.epochs >= 0, ">= 0"), ("lr", self.lr, self.lr > 0, "> 0"),
                  ("batch_size", self.batch_size, self.batch_size >= 1, ">= 1"),
                  ("momentum", self.momentum, 0 <= self.momentum < 1, "[0, 1)"),
                  ("weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0"),
                  ("min_test_acc", self.min_test_acc, self.min_test_acc is None or 0 <= self.min_test_acc <= 1,
                   "[0, 1], or null for the data set's default")]
        checks.append(("optimizer", self.optimizer, self.optimizer in OPTIMIZERS, ", ".join(OPTIMIZERS)))
        for name, value, ok, accepted in checks:
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise ValueError(f"train.{name}={value!r} is out of range; accepted: {accepted}")

    def recipe(self) -> dict:
        """The fields that determine the trained weights (the checkpoint key)."""
        recipe = dict(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, momentum=self.momentum,
                      weight_decay=self.weight_decay, seed=self.seed)
        if self.optimizer != "sgd":  # SGD's keys stay those of the checkpoints cached before the field existed
            recipe["optimizer"] = self.optimizer
        return recipe


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
    if cfg.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
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


def chance_level(y: torch.Tensor, num_classes: int) -> float:
    """Accuracy of always predicting the most frequent class of ``y`` (``1 / num_classes`` for an empty ``y``)."""
    if len(y) == 0:
        return 1.0 / num_classes
    return float(torch.bincount(y.long(), minlength=num_classes).max()) / len(y)


def default_min_test_acc(data: Dataset) -> float:
    """The default quality bar: chance (:func:`chance_level` of the test labels) plus :data:`QUALITY_MARGIN` of
    the way to 1 (0.325 on ten balanced classes, 0.72 on the breast-cancer table)."""
    chance = chance_level(data.y_test, data.num_classes)
    return chance + QUALITY_MARGIN * (1.0 - chance)


def check_quality(model_name: str, data: Dataset, info: dict, min_test_acc: float | None = None) -> float:
    """Refuse a model that is not clearly better than chance; returns the bar that was applied.

    ``info``: holds ``test_acc`` (and ``loss``, ``path`` when known). ``min_test_acc``: the bar (``None``:
    :func:`default_min_test_acc`; ``0`` or less: no check). Raises :class:`ModelQualityError` naming the
    accuracy, chance, the bar and how to override it."""
    chance = chance_level(data.y_test, data.num_classes)
    bar = default_min_test_acc(data) if min_test_acc is None else float(min_test_acc)
    if bar <= 0 or len(data.y_test) == 0:
        return bar
    acc = float(info.get("test_acc", float("nan")))
    if acc >= bar:
        return bar
    loss = info.get("loss")
    diverged = f"; the training loss is {loss} (diverged: lower train.lr)" if loss is not None and not \
        math.isfinite(float(loss)) else ""
    raise ModelQualityError(
        f"{model_name} reaches test accuracy {acc:.4f} on {data.name} ({len(data.y_test)} test samples), not "
        f"clearly above chance {chance:.4f} (required >= {bar:.4f}){diverged}: its maps would not explain a "
        f"trained model. Train it longer (train.epochs=...), or accept it with train.min_test_acc={acc:.2f} "
        "(0 turns the check off). The checkpoint is kept: " + str(info.get("path", "not cached"))
    )


def weights_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes (a checkpoint's content, stored beside it)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _read_checkpoint(path: Path, model: nn.Module) -> tuple[dict | None, str]:
    """Load and validate a cached checkpoint into ``model``: ``(info, "")`` or ``(None, why it is unusable)``."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        state, info = blob["state_dict"], dict(blob["info"])
    except Exception as err:  # noqa: BLE001  (truncated, not a checkpoint, ...: named and retrained)
        return None, f"unreadable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    stored = info.get("weights_sha256")
    if stored is None:
        return None, "no content hash is stored with it (written by an older version, or edited): not trusted"
    if stored != weights_hash(state):
        return None, "its weights do not match the content hash stored with them (modified or damaged)"
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        return None, f"non-finite weights in {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}"
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        return None, f"it does not fit the model ({str(err).splitlines()[0]})"
    return info, ""


def load_weights(
    model_name: str,
    data: Dataset,
    cfg: TrainConfig | None = None,
    *,
    model_kw: dict | None = None,
    checkpoint: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict]:
    """A model with given weights, evaluated and not trained: a local ``checkpoint``
    (:func:`bench.core.models.load_checkpoint`), or timm's pretrained weights (``model_kw["pretrained"]``).

    The accuracy on ``data``'s test split is measured and the quality bar applies (``cfg.min_test_acc``). Returns
    ``(model in eval mode, info)`` with ``test_acc``, ``train_acc`` (NaN without a training split), ``cached``
    (False), ``given`` (True), ``path`` (the checkpoint, or ``"pretrained"``) and ``min_test_acc``. Raises
    ``FileNotFoundError`` / :class:`~bench.core.models.CheckpointError` for a checkpoint that cannot be loaded
    (naming keys) and :class:`ModelQualityError`."""
    from bench.core.models import load_checkpoint

    cfg = cfg or TrainConfig()
    cfg.check()
    model = create_model(model_name, data.input_shape, data.num_classes, **dict(model_kw or {}))
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    model.to(device).eval()
    info = {"test_acc": evaluate(model, data.x_test, data.y_test, device=device),
            "train_acc": evaluate(model, data.x_train, data.y_train, device=device) if len(data.x_train)
            else float("nan"), "cached": False, "path": str(checkpoint) if checkpoint is not None else "pretrained",
            "epochs": 0, "loss": None, "given": True}
    info["min_test_acc"] = check_quality(model_name, data, info, cfg.min_test_acc)
    return model, info


def checkpoint_path(model_name: str, data: Dataset, cfg: TrainConfig, *, model_kw: dict | None = None,
                    labels: torch.Tensor | None = None) -> Path:
    """Where :func:`load_or_train` caches ``model_name`` trained on ``data`` with ``cfg`` (and ``labels``): the cache
    folder and a key hashing the model name and arguments, the data, the recipe and the labels."""
    extra = "" if labels is None else hashlib.sha256(labels.numpy().tobytes()).hexdigest()[:16]
    key = _cache_key(model_name, with_source_hash(model_name, model_kw), data, cfg, extra)
    return cache_dir(cfg.cache_dir) / f"{model_name.replace(':', '_')}-{key}.pt"


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

    ``cfg`` (default :class:`TrainConfig`): the recipe, where checkpoints are cached (``cfg.cache_dir``,
    ``cfg.use_cache``) and the quality bar (``cfg.min_test_acc``). The cache key hashes the model name and
    arguments, the data (name, encoding, content of each split), the recipe (:meth:`TrainConfig.recipe`) and
    ``labels``. A cached checkpoint that is unreadable, modified (content hash) or not finite is named in a warning
    and retrained over. Returns ``(model in eval mode, info)`` where ``info`` holds the accuracies,
    ``"cached": bool``, ``"path"`` and ``"min_test_acc"`` (the bar applied).

    Raises :class:`ModelQualityError` when the model (trained on the true labels: ``labels is None``) does not
    reach the bar; the trained checkpoint is cached first, so accepting it with a lower bar does not retrain.
    """
    cfg = cfg or TrainConfig()
    cfg.check()
    model_kw = with_source_hash(model_name, model_kw)  # a package.module:factory model: its source in the key
    if model_kw.get("pretrained"):
        raise ValueError(f"{model_name}: pretrained weights are evaluated, not trained over (their initialization "
                         "would be reset); use load_weights")
    if len(data.x_train) == 0:
        raise ValueError(f"data set {data.name!r} has no training split, so {model_name} cannot be trained: give "
                         "weights (model.checkpoint=PATH or model.pretrained=true) or data with a train/ folder")
    model = create_model(model_name, data.input_shape, data.num_classes, **model_kw)
    path = checkpoint_path(model_name, data, cfg, model_kw=model_kw, labels=labels)
    remove_stale_temps(path.parent)  # what writes killed mid-way left (a day old or more)
    info: dict | None = None
    if cfg.use_cache and path.exists():
        info, why = _read_checkpoint(path, model)
        if info is None:
            log.warning("the cached checkpoint %s is unusable: %s; retraining and replacing it (to clear the cache: "
                        "rm %s)", path, why, path)
            model = create_model(model_name, data.input_shape, data.num_classes, **model_kw)
        else:
            model.to(device).eval()
            info = {**info, "cached": True, "path": str(path)}
    if info is None:
        info = train(model, data, cfg, labels=labels, device=device, progress=progress)
        finite = all(bool(torch.isfinite(v).all()) for v in model.state_dict().values() if v.is_floating_point())
        if not finite:
            log.warning("%s: training produced non-finite weights (loss %s); not cached", model_name, info["loss"])
        saved = False
        if cfg.use_cache and finite:
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            info["weights_sha256"] = weights_hash(state)
            try:
                atomic_write(path, lambda tmp: torch.save({"state_dict": state, "info": info}, tmp),
                             needed=sum(t.numel() * t.element_size() for t in state.values()))
                saved = True
            except DiskFullError as err:  # the trained model is kept: this job goes on with it, uncached
                log.warning("%s; the trained %s is used from memory and not cached (set train.cache_dir= or "
                            "SALBENCH_CACHE= to cache it elsewhere)", err.strerror, model_name)
        info = {**info, "cached": False, "path": str(path) if saved else None}
    if labels is None:
        info["min_test_acc"] = check_quality(model_name, data, info, cfg.min_test_acc)
    return model, info
