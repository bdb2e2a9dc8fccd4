"""``salbench``: the Hydra entry point. The only module that reads a DictConfig.

It turns the composed config into plain arguments for :mod:`bench` and records the job's
status (``job.json`` in the job's output folder) so that one failing job never hides the others.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from bench.config import register_configs

log = logging.getLogger("salbench")


def _output_dir() -> Path:
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # called without Hydra (tests, notebooks)
        return Path.cwd()


def run_job(cfg: DictConfig, out: Path) -> dict:
    """Run one job described by ``cfg``; returns a summary dict (also written to ``out/job.json``)."""
    import torch

    from bench.data import load_dataset
    from bench.models import TrainConfig, load_or_train

    torch.manual_seed(cfg.run.seed)
    data = load_dataset(
        cfg.data.name,
        encoding=cfg.data.encoding,
        seed=cfg.data.seed,
        root=cfg.data.root,
        download=cfg.data.download,
        n_test=cfg.data.n_test,
    )
    tc = cfg.train
    train_cfg = TrainConfig(tc.epochs, tc.lr, tc.batch_size, tc.momentum, tc.weight_decay, tc.seed)
    model, info = load_or_train(
        cfg.model.name,
        data,
        train_cfg,
        model_kw=OmegaConf.to_container(cfg.model.kwargs),
        cache=tc.cache_dir,
        use_cache=tc.use_cache,
        device=cfg.run.device,
        progress=cfg.run.progress,
    )
    source = "loaded from cache" if info["cached"] else "trained"
    print(
        f"{cfg.model.name} on {data.name} ({data.encoding}, {len(data.x_train)} train / {len(data.x_test)} test): "
        f"test accuracy {info['test_acc']:.4f}, train accuracy {info['train_acc']:.4f} [{source}: {info['path']}]"
    )
    return {"model": cfg.model.name, "dataset": data.name, "test_acc": info["test_acc"], "train_acc": info["train_acc"]}


def validate(cfg: DictConfig) -> DictConfig:
    """Merge ``cfg`` into the schema: an unknown key or a wrong type raises OmegaConf's error naming it."""
    from bench.config import MainConfig

    # a plain copy: merging the composed config itself would carry the keys that `+` opened up
    plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    return OmegaConf.merge(OmegaConf.structured(MainConfig), plain)


@hydra.main(version_base="1.3", config_path="pkg://bench.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    validate(cfg)  # before anything runs: `+key=` overrides bypass Hydra's own struct check
    out = _output_dir()
    out.mkdir(parents=True, exist_ok=True)
    status: dict = {"status": "running", "started": time.time()}
    try:
        status.update(run_job(cfg, out))
        status["status"] = "ok"
    except Exception as err:  # record the failure; a sweep goes on with its other jobs
        status.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        log.error("job failed: %s: %s", type(err).__name__, err)
    finally:
        status["seconds"] = round(time.time() - status["started"], 3)
        (out / "job.json").write_text(json.dumps(status, indent=2, default=str))
    if status["status"] != "ok" and not _is_multirun():
        sys.exit(1)


def _is_multirun() -> bool:
    try:
        return HydraConfig.get().mode.name == "MULTIRUN"
    except ValueError:
        return False


def main() -> None:
    register_configs()
    _hydra_main()


if __name__ == "__main__":
    main()
