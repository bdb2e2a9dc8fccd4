"""Given weights (issue 17): ``model.checkpoint=`` loads a saved state dict into the architecture and reproduces its
logits exactly; the weights are evaluated (accuracy measured, the quality guard applied), never trained over."""

from __future__ import annotations

import json

import pytest
import torch

from bench.core.data import load_dataset
from bench.core.models import create_model
from bench.core.training import ModelQualityError, TrainConfig, load_weights


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist_bundled")


def _saved(tmp_path, digits, wrap: str | None = None):
    torch.manual_seed(3)
    model = create_model("paper_mlp", digits.input_shape, digits.num_classes, hidden=16).eval()
    path = tmp_path / "weights.pt"
    state = model.state_dict()
    torch.save(state if wrap is None else {wrap: state, "epoch": 7}, path)
    return model, path


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_a_saved_state_dict_reproduces_the_logits_exactly(tmp_path, digits, wrap):
    model, path = _saved(tmp_path, digits, wrap)
    loaded, info = load_weights("paper_mlp", digits, TrainConfig(min_test_acc=0.0), model_kw={"hidden": 16},
                                checkpoint=path)
    x = digits.x_test[:64]
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert info["path"] == str(path) and not info["cached"] and 0.0 <= info["test_acc"] <= 1.0


def test_given_weights_below_the_bar_are_refused(tmp_path, digits):
    _, path = _saved(tmp_path, digits)  # an untrained network: about chance
    with pytest.raises(ModelQualityError, match="not clearly above chance"):
        load_weights("paper_mlp", digits, model_kw={"hidden": 16}, checkpoint=path)


def test_a_checkpoint_of_another_architecture_names_the_keys(tmp_path, digits):
    _, path = _saved(tmp_path, digits)
    with pytest.raises(Exception, match=r"(?s)shape|size mismatch|missing|unexpected"):
        load_weights("paper_mlp", digits, TrainConfig(min_test_acc=0.0), model_kw={"hidden": 32}, checkpoint=path)


def test_the_job_evaluates_a_checkpoint_and_trains_nothing(tmp_path, salbench, digits):
    _, path = _saved(tmp_path, digits)
    ckpt = tmp_path / "cache"
    res = salbench("+model.kwargs.hidden=16", f"model.checkpoint={path}", "train.min_test_acc=0", "run.n_samples=8",
                   "method=[gradient]", "transform=[mean_shift]", "run.tests=[invariance]", "logger=disabled",
                   "run.progress=false", "run.figures=false", f"train.cache_dir={ckpt}",
                   f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    record = json.loads((tmp_path / "job" / "job.json").read_text())
    assert record["status"] == "ok" and 0.0 <= record["test_acc"] <= 1.0
    assert f"[given weights: {path}]" in res.stdout + res.stderr
    assert not ckpt.exists() or not list(ckpt.glob("*.pt"))  # nothing trained, nothing cached
