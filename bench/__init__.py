"""saliency-bench harness: data, models, twins, randomization, experiments, results."""

from bench.data import Dataset, load_dataset
from bench.models import TrainConfig, create_model, load_or_train, train

__all__ = ["Dataset", "load_dataset", "TrainConfig", "create_model", "load_or_train", "train"]
