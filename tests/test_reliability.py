"""Reliability (issue 15): the model-quality guard, validated checkpoints, NaN blamed on its culprit, exit codes
that mean one thing each, and the regression check on damaged baselines. Nothing here trains beyond zero epochs
(a model at its initialization); the subprocess runs stop before any training."""

from __future__ import annotations

import dataclasses
import json
import logging
import time

import pytest
import torch
from torch import nn

from bench.cli.check import main as check_main
from bench.core.data import Dataset
from bench.core.training import (
    ModelQualityError,
    TrainConfig,
    chance_level,
    check_quality,
    default_min_test_acc,
    load_or_train,
    weights_hash,
)
from methods.registry import NonFiniteError

# ------------------------------------------------------------------------------------------- model quality


def _digits_like(n_test: int = 40, classes: int = 10, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    return Dataset(name="toy10", x_train=torch.rand(80, 1, 8, 8, generator=g),
                   y_train=torch.arange(80) % classes, x_test=torch.rand(n_test, 1, 8, 8, generator=g),
                   y_test=torch.arange(n_test) % classes, num_classes=classes)


def test_chance_and_the_default_bar():
    data = _digits_like()
    assert chance_level(data.y_test, 10) == pytest.approx(0.1)
    assert default_min_test_acc(data) == pytest.approx(0.1 + 0.25 * 0.9)
    unbalanced = dataclasses.replace(data, y_test=torch.tensor([0] * 30 + [1] * 10), num_classes=2)
    assert chance_level(unbalanced.y_test, 2) == pytest.approx(0.75)  # the majority class, not 1 / classes
    assert default_min_test_acc(unbalanced) == pytest.approx(0.75 + 0.25 * 0.25)


@pytest.mark.parametrize("acc", [0.066, 0.227])  # the train.epochs=0 and data.encoding=negative cases
def test_a_model_near_chance_is_refused_with_accuracy_chance_and_override(acc):
    data = _digits_like()
    with pytest.raises(ModelQualityError) as err:
        check_quality("paper_mlp", data, {"test_acc": acc, "loss": 2.3, "path": "ckpt.pt"})
    msg = str(err.value)
    assert f"{acc:.4f}" in msg and "chance 0.1000" in msg and "required >= 0.3250" in msg
    assert "train.min_test_acc=" in msg and "train.epochs" in msg and "ckpt.pt" in msg
    assert check_quality("paper_mlp", data, {"test_acc": acc}, min_test_acc=0) == 0  # the guard turned off
    assert check_quality("paper_mlp", data, {"test_acc": 0.9}) == pytest.approx(0.325)


def test_a_diverged_training_is_named():
    with pytest.raises(ModelQualityError, match=r"loss is nan \(diverged: lower train.lr\)"):
        check_quality("m", _digits_like(), {"test_acc": 0.1, "loss": float("nan")})


def test_load_or_train_refuses_an_untrained_model_and_keeps_its_checkpoint(tmp_path):
    data = _digits_like()
    cfg = TrainConfig(epochs=0, cache_dir=str(tmp_path))
    with pytest.raises(ModelQualityError, match="not clearly above chance"):
        load_or_train("paper_mlp", data, cfg, model_kw={"hidden": 8}, progress=False)
    assert len(list(tmp_path.glob("*.pt"))) == 1  # nothing computed is lost: accepting it does not retrain
    model, info = load_or_train("paper_mlp", data, dataclasses.replace(cfg, min_test_acc=0.0),
                                model_kw={"hidden": 8}, progress=False)
    assert info["cached"] and info["min_test_acc"] == 0.0


@pytest.mark.parametrize(("key", "value", "accepted"), [
    ("epochs", -1, ">= 0"), ("lr", 0.0, "> 0"), ("lr", float("nan"), "> 0"), ("batch_size", 0, ">= 1"),
    ("momentum", 1.0, r"\[0, 1\)"), ("weight_decay", -0.1, ">= 0"), ("min_test_acc", 1.5, r"\[0, 1\]"),
])
def test_training_settings_out_of_range_are_named_before_training(tmp_path, key, value, accepted):
    cfg = dataclasses.replace(TrainConfig(cache_dir=str(tmp_path)), **{key: value})
    with pytest.raises(ValueError, match=rf"train\.{key}={value!r} is out of range; accepted: {accepted}"):
        load_or_train("paper_mlp", _digits_like(), cfg, model_kw={"hidden": 8}, progress=False)
    assert not list(tmp_path.glob("*.pt"))


# ------------------------------------------------------------------------------------------- checkpoints


def _cached(tmp_path, data: Dataset | None = None):
    data = data or _digits_like()
    cfg = TrainConfig(epochs=0, cache_dir=str(tmp_path), min_test_acc=0.0)
    model, info = load_or_train("paper_mlp", data, cfg, model_kw={"hidden": 8}, progress=False)
    return data, cfg, model, info


def _again(data, cfg):
    return load_or_train("paper_mlp", data, cfg, model_kw={"hidden": 8}, progress=False)


def test_nan_weights_in_a_cached_checkpoint_are_caught_and_retrained(tmp_path, caplog):
    data, cfg, model, info = _cached(tmp_path)
    blob = torch.load(info["path"], weights_only=True)
    first = next(k for k, v in blob["state_dict"].items() if v.is_floating_point())
    blob["state_dict"][first] = torch.full_like(blob["state_dict"][first], float("nan"))
    blob["info"]["weights_sha256"] = weights_hash(blob["state_dict"])  # a hash that matches: the finite check
    torch.save(blob, info["path"])
    with caplog.at_level(logging.WARNING, logger="bench.core.training"):
        model2, info2 = _again(data, cfg)
    assert not info2["cached"] and info["path"] in caplog.text and "non-finite weights" in caplog.text
    assert all(torch.isfinite(p).all() for p in model2.parameters())


def test_a_checkpoint_without_a_content_hash_is_not_trusted(tmp_path, caplog):
    data, cfg, model, info = _cached(tmp_path)
    blob = torch.load(info["path"], weights_only=True)
    del blob["info"]["weights_sha256"]  # an older version's checkpoint, or one edited by hand
    torch.save(blob, info["path"])
    with caplog.at_level(logging.WARNING, logger="bench.core.training"):
        _, info2 = _again(data, cfg)
    assert not info2["cached"] and "no content hash is stored with it" in caplog.text and info["path"] in caplog.text
    assert "weights_sha256" in torch.load(info["path"], weights_only=True)["info"]  # retrained and replaced


def test_modified_weights_fail_the_content_hash(tmp_path, caplog):
    data, cfg, model, info = _cached(tmp_path)
    blob = torch.load(info["path"], weights_only=True)
    first = next(k for k, v in blob["state_dict"].items() if v.is_floating_point())
    blob["state_dict"][first] = blob["state_dict"][first] + 1.0
    blob["info"]["test_acc"] = 0.954  # a stored accuracy that no longer belongs to these weights
    torch.save(blob, info["path"])
    with caplog.at_level(logging.WARNING, logger="bench.core.training"):
        _, info2 = _again(data, cfg)
    assert not info2["cached"] and "do not match the content hash" in caplog.text and info2["test_acc"] != 0.954


def test_a_truncated_checkpoint_names_its_path_and_is_retrained(tmp_path, caplog):
    data, cfg, model, info = _cached(tmp_path)
    raw = open(info["path"], "rb").read()
    open(info["path"], "wb").write(raw[: len(raw) // 2])
    with caplog.at_level(logging.WARNING, logger="bench.core.training"):
        model2, info2 = _again(data, cfg)
    assert not info2["cached"] and "unreadable" in caplog.text and info["path"] in caplog.text
    assert f"rm {info['path']}" in caplog.text
    _, info3 = _again(data, cfg)  # the replacement is a valid checkpoint
    assert info3["cached"]


def test_cache_keys_do_not_collide_across_splits(tmp_path):
    """The same bytes split differently (the issue's n_test=0 vs n_test=5000) are different data sets."""
    x, y = torch.rand(40, 1, 8, 8), torch.arange(40) % 10
    all_train = Dataset("d", x, y, x[:0], y[:0], 10)
    all_test = Dataset("d", x[:0], y[:0], x, y, 10)
    assert all_train.fingerprint() != all_test.fingerprint()
    cfg = TrainConfig(epochs=0, cache_dir=str(tmp_path), min_test_acc=0.0)
    _, a = load_or_train("paper_mlp", all_train, cfg, model_kw={"hidden": 8}, progress=False)
    assert a["path"].endswith(".pt")
    with pytest.raises(ValueError, match="'d' has no training split, so paper_mlp cannot be trained"):
        load_or_train("paper_mlp", all_test, cfg, model_kw={"hidden": 8}, progress=False)  # not all_train's model


# ------------------------------------------------------------------------------------------- NaN and its culprit


class _NaNOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x) * float("nan")


def test_a_nan_model_output_is_blamed_on_the_model():
    import methods

    with pytest.raises(NonFiniteError, match=r"logits of _NaNOut.*the model, not the method"):
        methods.create("gradient", _NaNOut())(torch.rand(2, 4))


def test_a_nan_input_is_blamed_on_the_input():
    import methods

    x = torch.rand(3, 4)
    x[1, 2] = float("nan")
    with pytest.raises(NonFiniteError, match=r"the input of .* 1 NaN and 0 infinite values \(samples \[1\]\)"):
        methods.create("gradient", nn.Linear(4, 3))(x)


def test_nan_data_is_blamed_on_the_data_not_on_the_twin(toy_data):
    from bench import RunSettings, input_invariance, mean_shift
    from bench.core.models import create_model

    data = toy_data()
    data.x_test[2, 0, 3, 3] = float("nan")
    model = create_model("paper_mlp", data.input_shape, data.num_classes, hidden=8).eval()
    with pytest.raises(NonFiniteError, match=r"the first 4 test inputs of 'toy' hold\(s\) 1 NaN .*samples \[2\]"):
        input_invariance(model, data, ["gradient"], {"m": mean_shift(data.input_shape)}, run=RunSettings(n_samples=4))


def test_a_nan_custom_shift_names_the_file(tmp_path):
    from bench.twins.shifts import custom

    path = tmp_path / "m.pt"
    m = torch.zeros(1, 4, 4)
    m[0, 1, 1] = float("nan")
    torch.save(m, path)
    with pytest.raises(NonFiniteError, match=rf"the custom shift {path} hold\(s\) 1 NaN"):
        custom(path, (1, 4, 4))


def test_a_method_that_produces_nan_is_blamed_on_the_method():
    from bench.core.explain import explain_all

    def nan_method(x, target=None):
        return x * float("nan")

    with pytest.raises(NonFiniteError, match="for finite inputs and logits: the method produced them"):
        explain_all(nan_method, torch.rand(2, 4), torch.zeros(2, dtype=torch.long))


# ------------------------------------------------------------------------------------------- exit codes


def test_an_unknown_config_key_exits_2_with_the_schema_message(tmp_path, salbench):
    res = salbench("+frobnicate=1", "logger=disabled", f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path)
    assert res.returncode == 2
    assert "Key 'frobnicate' not in 'MainConfig'" in res.stderr and "Traceback" not in res.stderr
    res = salbench("model.nmae=x", "logger=disabled", f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path)
    assert res.returncode == 2 and "Key 'nmae' not in 'ModelConfig'" in res.stderr


def test_a_bad_setting_stops_the_job_before_training_with_exit_2(tmp_path, salbench):
    ckpt = tmp_path / "ckpt"
    res = salbench("run.n_samples=5000", "logger=disabled", f"train.cache_dir={ckpt}",
                   f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    record = json.loads((tmp_path / "job" / "job.json").read_text())
    assert record["status"] == "failed" and "run.n_samples=5000 is out of range" in record["error"]
    assert not ckpt.exists() or not list(ckpt.glob("*.pt"))  # refused before any training
    assert "Traceback" not in res.stderr + res.stdout


def _job(root, name: str, **record) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "job.json").write_text(json.dumps(record))


def test_the_sweep_summary_counts_ok_failed_skipped_and_unreadable(tmp_path):
    from bench.cli.sweep import summarize

    since = time.time()
    _job(tmp_path, "0_a", status="ok", started=since + 1)
    _job(tmp_path, "1_b", status="failed", started=since + 1, errors={"gradient / mean_shift": "ValueError: x"})
    _job(tmp_path, "2_c", status="ok", started=since - 100, last_skipped=since + 2)
    _job(tmp_path, "3_d", status="ok", started=since - 100)  # an older job this sweep did not touch
    (tmp_path / "4_e").mkdir()
    (tmp_path / "4_e" / "job.json").write_text("{truncated")
    s = summarize(tmp_path, since=since)
    assert (s["ok"], s["failed"], s["skipped"], s["unreadable"]) == (1, 1, 1, 1)
    assert s["jobs"]["1_b"]["error"] == "gradient / mean_shift: ValueError: x" and "3_d" not in s["jobs"]


def test_the_sweep_callback_writes_sweep_json_and_the_exit_status_follows_it(tmp_path, caplog):
    from types import SimpleNamespace

    from bench.cli.sweep import SWEEP_FILE, SweepSummary, last_summary

    cb = SweepSummary()
    cb.on_multirun_start(None)
    _job(tmp_path, "0_a", status="failed", started=time.time() + 1, error="ValueError: unknown encoding 'x'")
    with caplog.at_level(logging.INFO, logger="bench.cli.sweep"):
        cb.on_multirun_end(SimpleNamespace(hydra=SimpleNamespace(sweep=SimpleNamespace(dir=str(tmp_path)))))
    assert json.loads((tmp_path / SWEEP_FILE).read_text())["failed"] == 1 and last_summary()["failed"] == 1
    assert "0 ok, 1 failed, 0 skipped" in caplog.text and "unknown encoding 'x'" in caplog.text


# ------------------------------------------------------------------------------------------- the regression check


@pytest.fixture
def sweep_and_baseline(tmp_path, capsys, make_sweep):
    sweep = make_sweep(tmp_path, figure=False, failed=False)
    baseline = tmp_path / "baseline.csv"
    assert check_main([str(sweep), "--baseline", str(baseline), "--update"]) == 0
    capsys.readouterr()
    return sweep, baseline


def test_a_non_numeric_baseline_cell_is_damage_not_a_flipped_verdict(sweep_and_baseline, capsys):
    import pandas as pd

    sweep, baseline = sweep_and_baseline
    df = pd.read_csv(baseline)
    col = next(c for c in df.columns if c.startswith("rand/") and c.endswith("/last"))
    df[col] = df[col].astype(object)
    df.loc[0, col] = "0.5x"  # one damaged cell makes the whole column text when read back
    df.loc[1, col] = float(df.loc[1, col]) + 7e-10
    df.to_csv(baseline, index=False)
    assert check_main([str(sweep), "--baseline", str(baseline)]) == 2
    out = capsys.readouterr().out
    assert "0 verdict(s) flipped" in out and "'0.5x'" in out and "not numbers" in out


def test_update_repairs_a_broken_baseline(sweep_and_baseline, capsys):
    sweep, baseline = sweep_and_baseline
    baseline.write_bytes(b"\x00\x01garbage,,\n\"unterminated")
    assert check_main([str(sweep), "--baseline", str(baseline)]) == 2
    err = capsys.readouterr().err
    assert "cannot be read" in err or "lacks the key columns" in err, err
    assert check_main([str(sweep), "--baseline", str(baseline), "--update"]) == 0
    assert check_main([str(sweep), "--baseline", str(baseline)]) == 0


@pytest.mark.slow
def test_the_negative_encoding_at_the_default_lr_is_refused_and_the_readme_lr_trains():
    """The issue's case (README: ``salbench data.encoding=negative train.lr=0.05``): SGD at lr 0.2 does not train
    paper_mlp on the [-1, 0] digits (measured 0.10 test accuracy), lr 0.05 does (0.88)."""
    from bench.core.data import load_dataset

    data = load_dataset("mnist_bundled", encoding="negative")
    with pytest.raises(ModelQualityError, match="not clearly above chance 0.1000"):
        load_or_train("paper_mlp", data, progress=False)
    _, info = load_or_train("paper_mlp", data, TrainConfig(lr=0.05), progress=False)
    assert info["test_acc"] > 0.8
