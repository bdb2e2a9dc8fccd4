"""Never pool what differs: rows of jobs that differ in a result-changing key stay apart, labelled by that key."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bench.cli.config import MainConfig
from bench.cli.job import row_config
from bench.core.explain import MethodSpec
from bench.core.results import concat, config_hash, score_rows, write_table
from bench.experiments.model_randomization import RandomizationSpec
from bench.reporting.leaderboard import build_leaderboard, load_leaderboard


def _config(**changes) -> MainConfig:
    cfg = MainConfig(method={"smoothgrad": MethodSpec(name="smoothgrad", params={"n": 50})},
                     randomization={"cascading": RandomizationSpec()})
    for key, value in changes.items():
        group, _, field = key.partition(".")
        if group == "method":
            cfg.method["smoothgrad"].params[field] = value
        else:
            setattr(getattr(cfg, group), field, value)
    return cfg


def _job(folder, cfg: MainConfig, scores: list[float]):
    rows = row_config(cfg, "model_randomization", "smoothgrad", "cascading")
    h = config_hash(rows)
    table = concat(score_rows({"ssim": [s] * 8}, experiment="model_randomization", model="paper_mlp",
                              dataset=cfg.data.name, method="smoothgrad", condition="cascading", layer=layer,
                              config_hash=h)
                   for layer, s in (("control:repeat", 1.0), ("fc", scores[0]), ("conv", scores[1])))
    write_table(table, folder)
    (folder / "job.json").write_text(json.dumps({"status": "ok", "row_configs": {h: rows}}))
    return h


@pytest.mark.parametrize("key,a,b", [
    ("data.encoding", "unit", "negative"),       # the data and its encoding
    ("train.lr", 0.2, 0.1),                      # the training recipe
    ("train.epochs", 10, 3),
    ("method.n", 50, 10),                        # the method's parameters
    ("run.seed", 0, 1),                          # the seeds policy
    ("run.n_samples", 32, 64),
])
def test_jobs_that_differ_in_a_result_changing_key_are_not_pooled(tmp_path, key, a, b):
    sweep = tmp_path / "sweep"
    _job(sweep / "0", _config(**{key: a}), [0.2, 0.1])
    _job(sweep / "1", _config(**{key: b}), [0.9, 0.8])
    board = load_leaderboard([sweep], figures=False).board
    shown = key if not key.startswith("method.") else "method.params." + key.split(".", 1)[1]
    assert len(board) == 2, board[["model", "method"]]
    labels = dict(zip(board.model, board["rand/cascading/ssim/top"], strict=True))
    assert labels == pytest.approx({f"paper_mlp[{shown}={a}]": 0.2, f"paper_mlp[{shown}={b}]": 0.9})


def test_jobs_that_share_the_configuration_pool_and_unknown_configurations_keep_apart(tmp_path):
    sweep = tmp_path / "sweep"
    cfg = _config()
    h0 = _job(sweep / "0", cfg, [0.2, 0.1])
    h1 = _job(sweep / "1", dataclasses.replace(cfg, logger=cfg.logger), [0.4, 0.3])  # the same configuration
    assert h0 == h1
    board = load_leaderboard([sweep], figures=False).board
    assert list(board.model) == ["paper_mlp"] and board.loc[0, "rand/cascading/ssim/top"] == pytest.approx(0.3)
    # tables without their jobs' records: the hashes still keep different configurations apart
    t = concat([score_rows({"ssim": [0.2] * 8}, experiment="model_randomization", model="m", dataset="d", method="x",
                           condition="cascading", layer="fc", config_hash=h) for h in ("aaaaaa11", "bbbbbb22")])
    assert sorted(build_leaderboard(t).model) == ["m[config=aaaaaa]", "m[config=bbbbbb]"]


def test_what_changes_no_score_does_not_split(tmp_path):
    base = row_config(_config(), "model_randomization", "smoothgrad", "cascading")
    for key, value in (("run.device", "cuda"), ("run.batch_size", 7), ("train.cache_dir", "/elsewhere"),
                       ("run.progress", False), ("invariance.ssim_threshold", 0.5)):
        assert row_config(_config(**{key: value}), "model_randomization", "smoothgrad", "cascading") == base, key


# -- every setting that changes a score is in the rows' hash ------------------------------------------------------


def _changed(value):
    """Another value of the same kind (the test only needs it to differ)."""
    from enum import Enum

    if isinstance(value, Enum):
        return next(v for v in type(value) if v != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_other"
    if isinstance(value, list):
        return [*value, "entropy_rise"]
    return 3  # None (stages, epochs, lr, premise_rtol)


def _hash(cfg: MainConfig, experiment: str, condition: str) -> str:
    return config_hash(row_config(cfg, experiment, "smoothgrad", condition))


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(RandomizationSpec)])
def test_every_randomization_setting_is_in_the_rows_hash(name):
    base = _config()
    other = _config()
    setattr(other.randomization["cascading"], name, _changed(getattr(base.randomization["cascading"], name)))
    assert _hash(other, "model_randomization", "cascading") != _hash(base, "model_randomization", "cascading"), name


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(MainConfig().invariance)])
def test_every_invariance_setting_that_changes_a_score_is_in_the_invariance_rows_hash(name):
    from bench.twins.shifts import ShiftSpec

    base, other = _config(), _config()
    for cfg in (base, other):
        cfg.method["smoothgrad"].params.pop("noise_level", None)  # the run's noise level then applies
        cfg.transform = {"mean_shift": ShiftSpec()}
    setattr(other.invariance, name, _changed(getattr(base.invariance, name)))
    changed = _hash(other, "input_invariance", "mean_shift") != _hash(base, "input_invariance", "mean_shift")
    # the verdict thresholds change no score: they are read when the verdicts are drawn, not hashed
    assert changed == (name not in ("ssim_threshold", "tolerance")), name
