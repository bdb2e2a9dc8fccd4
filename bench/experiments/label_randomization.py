"""Data randomization (Adebayo et al.): the trained model's architecture trained on permuted labels.

:func:`train_on_permuted_labels` trains with the trained models' recipe (plain SGD, lr 0.2, batch 32), the
labels permuted, from another initialization (seed 1: with the trained model's seed the maps would share the
initialization, not anything learned). The defaults, :data:`LABEL_TRAIN` (50 epochs) on
:data:`LABEL_TRAIN_SAMPLES` (the first 1,000 training digits), were chosen from the measurements in
``benchmarks/label_training.md`` so that both bundled models memorize the permuted labels; checkpoints are cached.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import Tensor, nn

from bench.core.data import Dataset
from bench.core.training import TrainConfig, load_or_train

__all__ = ["LABEL_STAGE", "LABEL_TRAIN", "LABEL_TRAIN_SAMPLES", "permuted_labels", "train_on_permuted_labels",
           "check_label_model"]

log = logging.getLogger(__name__)

LABEL_STAGE = "permuted_labels"  # the ``layer`` of the rows of mode ``labels``
#: training of the data-randomization model (see the module docstring); init seed 1, not the trained models' 0
LABEL_TRAIN = TrainConfig(epochs=50, lr=0.2, batch_size=32, seed=1)
#: training images it memorizes (the first ones of the stratified, shuffled split); None = all
LABEL_TRAIN_SAMPLES: int | None = 1000


def permuted_labels(y: Tensor, seed: int) -> Tensor:
    """Labels ``y`` (shape ``(N,)``) shuffled across samples by a permutation seeded with ``seed``.

    Same label counts, same device; the permutation is drawn on the CPU (device-independent).
    """
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(len(y), generator=gen).to(y.device)
    return y[perm]


def train_on_permuted_labels(
    model_name: str,
    data: Dataset,
    train_cfg: TrainConfig | None = None,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    train_samples: int | None = LABEL_TRAIN_SAMPLES,
    seed: int = 0,
    min_train_acc: float = 0.5,
    model_kw: dict | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | None = None,
    use_cache: bool = True,
    progress: bool = False,
    permute: bool = True,
) -> tuple[nn.Module, dict]:
    """The data-randomization model: ``model_name`` trained on permuted training labels.

    ``permute=False`` trains the label test's control instead: the identical recipe (same samples, epochs,
    learning rate and initialization seed) on the true labels, so that the permuted-label model and its control
    differ in the labels alone.

    The labels of the first ``train_samples`` training images (at most; all when None) are permuted with ``seed``
    (:func:`permuted_labels`), and the model is trained on them with ``train_cfg``
    (default :data:`LABEL_TRAIN`; ``epochs``/``lr`` override its fields). Checkpoints are cached like the
    trained models' (:func:`bench.core.training.load_or_train`), in ``cache_dir`` (``None``: the default folder)
    unless ``use_cache`` is false. Returns ``(model in eval mode, info)``; ``info``
    holds ``train_acc`` (on the permuted labels), ``test_acc`` (true test labels: about chance),
    ``epochs``, ``lr``, ``train_samples``, ``label_seed``, ``cached``, ``path``.

    Raises ``RuntimeError`` when the model fits the permuted labels to less than ``min_train_acc`` (chance
    is ``1 / num_classes``): a model that did not memorize the random labels says nothing about the test.
    """
    cfg = train_cfg or LABEL_TRAIN
    overrides = {k: v for k, v in (("epochs", epochs), ("lr", lr)) if v is not None}
    # no quality bar here: the permuted-label model is at chance by design, and its control is judged by the
    # training accuracy below, like the permuted one
    cfg = dataclasses.replace(cfg, **overrides, cache_dir=cache_dir, use_cache=use_cache, min_test_acc=0.0)
    n = len(data.x_train) if train_samples is None else min(int(train_samples), len(data.x_train))
    if n < 1:
        raise ValueError(f"train_samples must be >= 1, got {train_samples}")
    sub = data if n == len(data.x_train) else dataclasses.replace(data, x_train=data.x_train[:n],
                                                                   y_train=data.y_train[:n])
    labels = permuted_labels(sub.y_train, seed) if permute else sub.y_train
    model, info = load_or_train(model_name, sub, cfg, model_kw=model_kw, labels=labels if permute else None,
                                device=device, progress=progress)
    info = {**info, "lr": cfg.lr, "train_samples": n, "label_seed": seed,
            "label_agreement": float((labels == sub.y_train).float().mean())}
    log.info("%s trained on %d %s labels: train accuracy %.3f, test accuracy %.3f [%s]", model_name, n,
             "permuted" if permute else "true", info["train_acc"], info["test_acc"],
             "cached" if info["cached"] else "trained")
    if info["train_acc"] < min_train_acc:
        kind = "permuted" if permute else "true"
        raise RuntimeError(
            f"{model_name} fits only {info['train_acc']:.3f} of the {n} {kind} training labels after "
            f"{cfg.epochs} epochs at lr {cfg.lr} (chance {1 / data.num_classes:.2f}, required {min_train_acc}); "
            "train longer (epochs=...) or on fewer samples (train_samples=...)"
        )
    return model, info


def check_label_model(trained: nn.Module, other: nn.Module) -> None:
    """Raise ``ValueError`` unless ``other`` has ``trained``'s parameter names and shapes and other weights."""
    shapes = {n: tuple(p.shape) for n, p in trained.named_parameters()}
    other_shapes = {n: tuple(p.shape) for n, p in other.named_parameters()}
    if shapes != other_shapes:
        diff = sorted(set(shapes.items()) ^ set(other_shapes.items()))[:6]
        raise ValueError(f"random_label_model is not the trained model's architecture; differing parameters {diff}")
    with torch.no_grad():
        if all(torch.equal(p.cpu(), q.cpu()) for p, q in zip(trained.parameters(), other.parameters(), strict=True)):
            raise ValueError("random_label_model has the trained model's weights; train it on permuted labels")
