"""Structured-config schema of the Hydra entry point: the harness's own settings objects, composed.

The schema makes a typo or a wrong type fail at composition with Hydra's own message:
``salbench model.nmae=x`` -> "Key 'nmae' not in 'ModelConfig'"; ``train.lr=fast`` -> a validation error.
Selected groups are merged into this schema, so a group file with an unknown key fails too. The groups are the
dataclasses the library takes (:class:`~bench.core.training.TrainConfig`, :class:`~bench.core.settings.RunSettings`,
:class:`~bench.experiments.invariance.InvarianceSettings`, ...): :func:`bench.cli.job.run` receives them whole
(``OmegaConf.to_object``), so a field cannot be dropped on the way.

``method``, ``transform`` and ``randomization`` are dicts keyed by a label, so that several options of one
group can be selected at once (``method=[gradient,pattern_attribution]``) or swept
(``-m method=gradient,pattern_attribution``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional  # noqa: UP035  (OmegaConf needs typing generics on 3.10)

from hydra.core.config_store import ConfigStore

from bench.core.explain import MethodSpec
from bench.core.settings import RunSettings, ScoreSettings
from bench.core.training import TrainConfig
from bench.experiments.invariance import InvarianceSettings
from bench.experiments.model_randomization import RandomizationSpec
from bench.twins.shifts import ShiftSpec

__all__ = ["MainConfig", "ModelConfig", "DataConfig", "FigureSettings", "LoggerConfig", "LoggerMode",
           "register_configs"]


class LoggerMode(str, Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


@dataclass
class ModelConfig:
    """``name``: ``paper_mlp``, ``small_cnn`` or ``timm:<name>``; ``pretrained``: timm weights (needs network
    access); ``kwargs``: keyword arguments of the model's constructor.

    ``checkpoint``: a local weights file (``torch.save`` of a state dict, or of a dict holding it under
    ``state_dict``/``model``/``state_dict_ema``, as timm's training saves; a ``module.`` prefix is stripped), loaded
    with :func:`bench.core.models.load_checkpoint` instead of training; read with ``weights_only=True`` (tensors
    only, no code).

    ``normalize``: the model standardizes its own input with a :class:`~bench.core.models.Normalize` first module
    (per channel ``(x - mean) / std``), so that the harness's input domain stays pixels in [0, 1] (before
    ``data.encoding``) and every saliency map is computed, and compared, in pixel space. ``mean``/``std``: one
    value per channel (or one for all), stated for pixels in [0, 1]; default: the pretrained timm model's own,
    else the data set's (``meta["mean"]``/``["std"]``: ``data=imagenet`` carries ImageNet's, other sets take
    ``data.mean``/``data.std``); see :func:`bench.core.models.normalization`."""

    name: str = "paper_mlp"
    pretrained: bool = False
    kwargs: Dict[str, Any] = field(default_factory=dict)
    checkpoint: Optional[str] = None
    normalize: bool = False
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None


@dataclass
class DataConfig:
    """The data set: the keyword arguments of :func:`bench.core.data.load_dataset`
    (``load_dataset(**dataclasses.asdict(cfg.data))``).

    ``name``: ``mnist_bundled``, ``breast_cancer``, ``signals``, ``tokens``, ``mnist``, ``cifar10``,
    ``image_folder`` or ``imagenet``; ``encoding``: ``unit`` [0, 1], ``negative`` [-1, 0] or ``symmetric``
    [-1, 1]; ``root``: the folder of torchvision sets (default ``$SALBENCH_DATA`` or the user cache), or the image
    folder; ``seed``: the harness's splits; ``n_test`` (``null``: the set's default, ``mnist_bundled`` 1,000, the
    others a fifth, ``imagenet`` all) or ``test_fraction`` (in (0, 1]; not both): the test split of the sets the
    harness splits, stratified (every class keeps a test and a training sample; an image folder may be all test).

    Image folders only: ``size`` (shorter side resized to ``resize``, default ``size``, then center-cropped to
    ``size x size``; ``null`` keeps the images as stored, all one size), ``grey`` (1 channel, else RGB),
    ``max_per_class`` (the first k images per class and split: every image is held in memory as float32).
    ``mean``/``std``: per-channel statistics of the [0, 1] pixels, recorded with the data for ``model.normalize``
    (``imagenet``: ImageNet's by default)."""

    name: str = "mnist_bundled"
    encoding: str = "unit"
    root: Optional[str] = None
    download: bool = False
    seed: int = 0
    n_test: Optional[int] = None
    test_fraction: Optional[float] = None
    size: Optional[int] = None
    resize: Optional[int] = None
    grey: bool = False
    max_per_class: Optional[int] = None
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None


@dataclass
class LoggerConfig:
    """W&B: ``mode`` (offline by default: no key, no network), project, entity, ``group`` (default: the sweep
    folder) and tags."""

    mode: LoggerMode = LoggerMode.offline
    project: str = "saliency-bench"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)


@dataclass
class FigureSettings:
    """The job's figures (drawn when ``run.figures`` is true): ``samples``: samples shown per figure (at most
    ``run.keep_maps``, the maps kept in memory per method)."""

    samples: int = 3


@dataclass
class MainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: Dict[str, MethodSpec] = field(default_factory=dict)
    transform: Dict[str, ShiftSpec] = field(default_factory=dict)
    randomization: Dict[str, RandomizationSpec] = field(default_factory=dict)
    metric: ScoreSettings = field(default_factory=ScoreSettings)
    invariance: InvarianceSettings = field(default_factory=InvarianceSettings)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    figures: FigureSettings = field(default_factory=FigureSettings)
    run: RunSettings = field(default_factory=RunSettings)


def register_configs() -> None:
    """Put the schema into Hydra's ConfigStore as ``base_config`` (idempotent)."""
    ConfigStore.instance().store(name="base_config", node=MainConfig)
