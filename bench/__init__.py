"""saliency-bench: does a saliency method explain the model or the input?

Layers (dependencies point down): :mod:`bench.core` (data, models, training, explaining, the score registry,
scoring, the results table) <- :mod:`bench.twins` and :mod:`bench.randomization` <- :mod:`bench.experiments`
<- :mod:`bench.reporting` <- :mod:`bench.cli`; :mod:`bench.testing` gates a user's method in CI.

The names below are imported on first use, so that ``import bench`` (and the reporting commands) load no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module that defines it
_EXPORTS = {
    "Dataset": "bench.core.data",
    "load_dataset": "bench.core.data",
    "image_folder": "bench.core.image_folder",
    "load_checkpoint": "bench.core.models",
    "Normalize": "bench.core.models",
    "load_weights": "bench.core.training",
    "ModelQualityError": "bench.core.training",
    "create_model": "bench.core.models",
    "register_model": "bench.core.models",
    "TrainConfig": "bench.core.training",
    "load_or_train": "bench.core.training",
    "train": "bench.core.training",
    "MethodSpec": "bench.core.explain",
    "Score": "bench.core.scores",
    "register_score": "bench.core.scores",
    "get_score": "bench.core.scores",
    "score_names": "bench.core.scores",
    "score_maps": "bench.core.scoring",
    "RunSettings": "bench.core.settings",
    "ScoreSettings": "bench.core.settings",
    "read_tables": "bench.core.results",
    "mean_shift": "bench.twins.shifts",
    "checkerboard": "bench.twins.shifts",
    "adversarial_image": "bench.twins.shifts",
    "shifted_twin": "bench.twins.build",
    "randomized": "bench.randomization",
    "units": "bench.randomization",
    "input_invariance": "bench.experiments.invariance",
    "InvarianceSettings": "bench.experiments.invariance",
    "model_randomization": "bench.experiments.model_randomization",
    "RandomizationSpec": "bench.experiments.model_randomization",
    "train_on_permuted_labels": "bench.experiments.label_randomization",
    "invariance_verdicts": "bench.reporting.aggregate",
    "randomization_summary": "bench.reporting.aggregate",
    "build_leaderboard": "bench.reporting.leaderboard",
    "check_method": "bench.testing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
