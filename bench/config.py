"""Structured-config schemas for the Hydra entry point (the only module that knows about Hydra's store).

The schema makes a typo or a wrong type fail at composition with Hydra's own message:
``salbench model.nmae=x`` -> "Key 'nmae' not in 'ModelConfig'"; ``train.lr=fast`` -> a validation error.
Selected groups are merged into this schema, so a group file with an unknown key fails too.

``method``, ``transform`` and ``randomization`` are dicts keyed by a label, so that several
options of one group can be selected at once (``method=[gradient,pattern_attribution]``) or swept
(``-m method=gradient,pattern_attribution``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional  # noqa: UP035  (OmegaConf needs typing generics on 3.10)

from hydra.core.config_store import ConfigStore

__all__ = ["MainConfig", "register_configs"]


class LoggerMode(str, Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


class RandomizationMode(str, Enum):
    cascading = "cascading"
    bottom_up = "bottom_up"
    independent = "independent"
    labels = "labels"


class Granularity(str, Enum):
    module = "module"
    block = "block"


@dataclass
class ModelConfig:
    name: str = "paper_mlp"  # paper_mlp | small_cnn | timm:<name>
    pretrained: bool = False  # timm only; needs network access to the weights
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    name: str = "mnist_bundled"  # mnist_bundled | mnist | cifar10
    encoding: str = "unit"  # unit [0,1] | negative [-1,0] | symmetric [-1,1]
    root: Optional[str] = None  # data folder for torchvision sets (default: $SALBENCH_DATA or the user cache)
    download: bool = False
    seed: int = 0  # seed of the bundled set's train/test split
    n_test: int = 1000  # bundled set: test digits (of 5,000)


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 0.2
    batch_size: int = 32
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    cache_dir: Optional[str] = None  # default: $SALBENCH_CACHE or ~/.cache/saliency-bench/checkpoints
    use_cache: bool = True


@dataclass
class MethodSpec:
    name: Optional[str] = None  # a registered method (methods.names())
    _target_: Optional[str] = None  # or any importable factory(model, **params) -> explainer
    params: Dict[str, Any] = field(default_factory=dict)


@dataclass
class TransformSpec:
    kind: str = "mean_shift"  # mean_shift | checkerboard | adversarial_image | custom
    value: float = -1.0  # mean_shift: the constant
    size: int = 4  # checkerboard: square size in pixels
    amplitude: float = 1.0  # checkerboard: the shift of the bright squares
    image: str = "cat"  # adversarial_image: target picture (skimage.data)
    clip: float = 0.3  # adversarial_image: |m| bound
    sample: int = 0  # adversarial_image: index of x_hat in the test split
    path: Optional[str] = None  # custom: a tensor file (torch.save) shaped like one input


@dataclass
class RandomizationSpec:
    mode: RandomizationMode = RandomizationMode.cascading
    granularity: Granularity = Granularity.module
    init: str = "default"  # default (the layer's own initializer) | normal[:std] | uniform[:a]
    seed: int = 0
    stages: Optional[int] = None  # only the first k stages (default: all)
    epochs: Optional[int] = None  # labels: training epochs on permuted labels (default: bench.sanity's)
    lr: Optional[float] = None  # labels: learning rate (default: bench.sanity's)
    min_train_acc: float = 0.5  # labels: the permuted labels must be fitted at least this well


@dataclass
class MetricConfig:
    names: List[str] = field(default_factory=lambda: ["ssim", "spearman", "spearman_abs", "pearson", "hog", "topk"])
    normalization: str = "abs"  # abs | signed | minmax (the sanity-checks paper's post-processing)


@dataclass
class InvarianceConfig:
    float64: bool = True  # run the twins in double precision (float32 breaks max-pool near-ties)
    tie_break: bool = True  # max-pools of both networks break rounding-noise ties alike (bench.ties)
    tolerance: float = 1e-3  # "exact": 95th percentile of max|A1 - A2| / max|A1|
    ssim_threshold: float = 0.99  # "invariant": mean SSIM at least this
    fit_samples: int = 2000  # training images that PatternNet/-Attribution statistics are fit on
    premise_rtol: Optional[float] = None  # twin logits tolerance (default 1e-10 in float64, 1e-4 in float32)


@dataclass
class LoggerConfig:
    mode: LoggerMode = LoggerMode.offline
    project: str = "saliency-bench"
    entity: Optional[str] = None
    group: Optional[str] = None  # default: the sweep folder
    tags: List[str] = field(default_factory=list)


@dataclass
class RunConfig:
    name: str = "default"
    tests: List[str] = field(default_factory=lambda: ["invariance", "randomization"])
    n_samples: int = 32  # test samples explained per job (the first n of the seeded, class-mixed test split)
    batch_size: int = 64
    device: str = "cpu"  # cpu | cuda | cuda:N
    seed: int = 0
    progress: bool = True
    figures: bool = True


@dataclass
class MainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: Dict[str, MethodSpec] = field(default_factory=dict)
    transform: Dict[str, TransformSpec] = field(default_factory=dict)
    randomization: Dict[str, RandomizationSpec] = field(default_factory=dict)
    metric: MetricConfig = field(default_factory=MetricConfig)
    invariance: InvarianceConfig = field(default_factory=InvarianceConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    run: RunConfig = field(default_factory=RunConfig)


def register_configs() -> None:
    """Put the schema into Hydra's ConfigStore as ``base_config`` (idempotent)."""
    ConfigStore.instance().store(name="base_config", node=MainConfig)
