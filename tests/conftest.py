"""Shared fixtures.

* the bundled data and the trained reference models (trained once, then cached; tests that use them are ``slow``);
* ``salbench``: the command line in a subprocess;
* synthetic results tables with known scores, and sweep folders made of them (leaderboard and check tests);
* small random-init models, inputs and model-state helpers for the ``test_methods_*`` files (no training).

The helpers are factories: a fixture returns the function (or class), so that a test can build several objects
with its own arguments (``mlp(seed=1)``, ``images(3, shape)``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@pytest.fixture(autouse=True)
def _restore_logging():
    """Put the logging configuration back after each test: an in-process command-line run applies Hydra's logging
    config (``hydra/job_logging=disabled`` sets the root logger to ERROR and disables the loggers that exist), which
    would hide later tests' warnings from ``caplog``."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    loggers = {name: (lg.disabled, lg.level, lg.propagate, list(lg.handlers))
               for name, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    yield
    root.setLevel(level)
    root.handlers[:] = handlers
    for name, lg in logging.root.manager.loggerDict.items():
        if not isinstance(lg, logging.Logger):
            continue
        if name in loggers:
            lg.disabled, lg.level, lg.propagate, lg.handlers[:] = loggers[name][0], loggers[name][1], \
                loggers[name][2], loggers[name][3]
        else:
            lg.disabled = False


def pytest_configure(config: pytest.Config) -> None:
    # checkpoints of the reference models live in pytest's cache folder unless the user chose a folder:
    # the first slow run trains them (about a minute on 2 cores), later runs load them
    if not os.environ.get("SALBENCH_CACHE"):
        cache_ = getattr(config, "cache", None)  # None with -p no:cacheprovider: then the user cache folder
        if cache_ is not None:
            os.environ["SALBENCH_CACHE"] = str(cache_.mkdir("salbench-checkpoints"))
    torch.set_num_threads(1)  # tiny models: more threads only add overhead on a shared 2-core machine


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# ---------------------------------------------------------------------------------- data and reference models


@pytest.fixture(scope="session")
def mnist():
    """The bundled 5,000 MNIST digits in [0, 1], split 4,000 / 1,000."""
    from bench.core.data import load_dataset

    return load_dataset("mnist_bundled")


@pytest.fixture(scope="session")
def trained_mlp(mnist):
    """``paper_mlp`` trained with the default settings (cached). Tests using it are marked ``slow``."""
    from bench.core.training import load_or_train

    model, info = load_or_train("paper_mlp", mnist, progress=False)
    return model, info


@pytest.fixture(scope="session")
def trained_cnn(mnist):
    """``small_cnn`` trained with the default settings (cached). Tests using it are marked ``slow``."""
    from bench.core.training import load_or_train

    model, info = load_or_train("small_cnn", mnist, progress=False)
    return model, info


@pytest.fixture
def toy_data():
    """Factory: a tiny seeded synthetic dataset of random ``1 x size x size`` images and random labels."""
    from bench.core.data import Dataset

    def make(n_train: int = 64, n_test: int = 16, classes: int = 3, seed: int = 0, size: int = 12) -> Dataset:
        g = torch.Generator().manual_seed(seed)
        return Dataset(
            name="toy",
            x_train=torch.rand(n_train, 1, size, size, generator=g),
            y_train=torch.randint(0, classes, (n_train,), generator=g),
            x_test=torch.rand(n_test, 1, size, size, generator=g),
            y_test=torch.randint(0, classes, (n_test,), generator=g),
            num_classes=classes,
        )

    return make


# ---------------------------------------------------------------------------------------- the command line


def _salbench(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    exe = shutil.which("salbench", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "bench.cli"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def salbench():
    """``salbench(*args, cwd=..., timeout=...)``: the ``salbench`` entry point in a subprocess (W&B offline)."""
    return _salbench


# ------------------------------------------------------------------------- synthetic results with known scores

INV, RAND = "input_invariance", "model_randomization"


def _inv_rows(model: str, method: str, shift: str, ssim: list[float], rel: list[float], dataset: str = "mnist"):
    from bench.core.results import score_rows

    return score_rows({"ssim": torch.tensor(ssim), "max_rel_diff": torch.tensor(rel)}, experiment=INV, model=model,
                      dataset=dataset, method=method, condition=shift)


def _rand_rows(model: str, method: str, mode: str, stages: dict[str, list[float]], dataset: str = "mnist"):
    """Stage rows with the given ``ssim`` scores (each list repeated 4 times: 8 samples, the same mean) and
    ``spearman_abs`` = half of them, after the controls every run writes: a perfect repeat, an input-only null and
    another sample's map that resemble nothing, and the reference (the model's own gradient: 0.3 at every stage, so
    that a map passes where its lower bound of ``(1 - s) / 0.7`` reaches 0.7, i.e. ``s`` about 0.5 or less)."""
    from bench.core.results import CONTROL_GRADIENT, CONTROL_INPUT, CONTROL_OTHER, CONTROL_REPEAT, concat, score_rows

    controls = {CONTROL_REPEAT: [1.0, 1.0], CONTROL_INPUT: [0.0, 0.0], CONTROL_OTHER: [0.0, 0.0]}
    reference = {f"{CONTROL_GRADIENT}/{k}": v for k, v in
                 {CONTROL_REPEAT: [1.0, 1.0], CONTROL_OTHER: [0.0, 0.0], **{st: [0.3, 0.3] for st in stages}}.items()}
    layers = {**controls, **reference, **stages}
    return concat(score_rows({"ssim": torch.tensor(v * 4), "spearman_abs": torch.tensor(v * 4) / 2}, experiment=RAND,
                             model=model, dataset=dataset, method=method, condition=mode, mode=mode, layer=layer)
                  for layer, v in layers.items())


@cache
def _invariance_table() -> pd.DataFrame:
    from bench.core.results import concat

    return concat([
        _inv_rows("mlp", "gradient", "mean_shift", [1.0, 1.0], [0.0, 0.0]),          # exact
        _inv_rows("mlp", "gradient", "checkerboard", [1.0, 1.0], [1e-6, 2e-6]),      # exact
        _inv_rows("mlp", "gxi", "mean_shift", [0.5, 0.7], [0.5, 0.6]),               # fail (0.6)
        _inv_rows("mlp", "gxi", "checkerboard", [0.9, 0.8], [0.3, 0.4]),             # fail (0.85)
        _inv_rows("mlp", "ig_black", "mean_shift", [0.995, 0.999], [0.01, 0.02]),    # pass, not exact (0.997)
        _inv_rows("mlp", "ig_black", "checkerboard", [0.3, 0.5], [0.9, 0.8]),        # fail (0.4)
        _inv_rows("cnn", "gradient", "mean_shift", [0.98, 1.0], [0.1, 0.2]),         # pass (0.99)
    ])


@cache
def _randomization_table() -> pd.DataFrame:
    from bench.core.results import concat

    return concat([
        # top 0.45, last 0.15, auc (0.45 + 0.4 + 0.15) / 3: drops 0.55 and 0.85 below the repeat: pass
        _rand_rows("mlp", "gradient", "cascading", {"fc3": [0.5, 0.4], "fc2": [0.3, 0.5], "fc1": [0.1, 0.2]}),
        _rand_rows("mlp", "gradient", "independent", {"fc1": [0.2, 0.4], "fc3": [0.6, 0.8]}),  # last 0.7: fail
        _rand_rows("mlp", "gxi", "cascading", {"fc3": [0.99, 0.97], "fc2": [0.96, 0.96], "fc1": [0.9, 0.94]}),
        # survives the top unit (0.9), changes at the bottom (0.3): fail, as Guided Backprop
        _rand_rows("mlp", "gbp", "cascading", {"fc3": [0.9, 0.9], "fc2": [0.8, 0.8], "fc1": [0.3, 0.3]}),
        # half the last stage undefined: 4 paired samples, inconclusive
        _rand_rows("cnn", "gradient", "cascading", {"conv2": [0.2, 0.4], "conv1": [0.1, float("nan")]}),
    ])


@pytest.fixture
def inv_rows():
    """``inv_rows(model, method, shift, ssim, rel, dataset="mnist")``: input-invariance rows with known scores."""
    return _inv_rows


@pytest.fixture
def invariance_table():
    """``invariance_table()``: input-invariance rows with known scores (a fresh copy per call)."""
    return lambda: _invariance_table().copy()


@pytest.fixture
def randomization_table():
    """``randomization_table()``: model-randomization rows with known scores (a fresh copy per call)."""
    return lambda: _randomization_table().copy()


@pytest.fixture
def full_table():
    """``full_table()``: both experiments' rows with known scores (a fresh copy per call)."""
    from bench.core.results import concat

    return lambda: concat([_invariance_table().copy(), _randomization_table().copy()])


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def make_sweep(tmp_path):
    """``make_sweep(root=tmp_path, *, failed=True, figure=True)``: a sweep folder of the synthetic tables, one job
    per experiment (job.json ok), optionally a failed job and a PNG figure."""
    from bench.core.results import write_table

    def make(root: Path = tmp_path, *, failed: bool = True, figure: bool = True) -> Path:
        sweep = root / "sweep"
        for i, table in enumerate([_invariance_table(), _randomization_table()]):
            job = sweep / str(i)
            write_table(table.copy(), job)
            (job / "job.json").write_text(json.dumps({"status": "ok"}))
            (job / ".hydra").mkdir()
            (job / ".hydra" / "config.yaml").write_text("run:\n  seed: 0\n")
        if failed:
            job = sweep / "2"
            (job / ".hydra").mkdir(parents=True)
            (job / ".hydra" / "overrides.yaml").write_text("- method=broken\n- model=mlp\n")
            (job / "job.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: boom in broken"}))
        if figure:
            (sweep / "1" / "figures").mkdir()
            (sweep / "1" / "figures" / "cascade.png").write_bytes(_png_bytes())
        return sweep

    return make


# ------------------------------------------------- small models and helpers for tests/test_methods_*.py
# random init, no training; every builder seeds its own draws


def _mlp(seed: int = 0, side: int = 6, hidden: int = 16, dtype: torch.dtype = torch.float32) -> nn.Module:
    from bench.core.models import create_model

    torch.manual_seed(seed)
    return create_model("paper_mlp", (1, side, side), 10, hidden=hidden).to(dtype).eval()


def _cnn(seed: int = 0, side: int = 8, dtype: torch.dtype = torch.float32) -> nn.Module:
    from bench.core.models import create_model

    torch.manual_seed(seed)
    return create_model("small_cnn", (1, side, side), 10, channels=(4, 6), hidden=16).to(dtype).eval()


def _linear(seed: int = 0, shape: tuple[int, ...] = (1, 4, 4), classes: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(shape).prod()), classes)).eval()


def _randomize_batchnorm(model: nn.Module, seed: int = 0, centered: bool = False) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.weight.data = 0.5 + torch.rand(c, generator=g)
            m.running_var.data = 0.5 + torch.rand(c, generator=g)
            m.bias.data = torch.zeros(c) if centered else 0.1 * torch.randn(c, generator=g)
            m.running_mean.data = torch.zeros(c) if centered else 0.1 * torch.randn(c, generator=g)
    return model


def _zero_biases(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and m.bias is not None:
            m.bias.data.zero_()
    return model


def _timm_resnet(name: str = "resnet18", seed: int = 0, centered: bool = False) -> nn.Module:
    from bench.core.models import create_model

    torch.manual_seed(seed)
    model = create_model(f"timm:{name}", (3, 32, 32), 5, channels=(4, 8, 8, 8), stem_width=4)
    return _randomize_batchnorm(model, seed, centered).eval()


def _timm_vgg(seed: int = 0) -> nn.Module:
    from bench.core.models import create_model

    torch.manual_seed(seed)
    model = create_model("timm:vgg11_bn", (3, 32, 32), 5, mlp_ratio=1 / 256)
    return _randomize_batchnorm(model, seed).eval()


class FunctionalReLUNet(nn.Module):
    """A ReLU MLP whose ReLUs are function calls (``how``: ``F.relu``, ``torch.relu`` or ``Tensor.relu``)."""

    def __init__(self, how: str = "F.relu", seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.how = how
        self.fc1, self.fc2 = nn.Linear(36, 16), nn.Linear(16, 10)

    def act(self, h: Tensor) -> Tensor:
        if self.how == "F.relu":
            return F.relu(h)
        if self.how == "torch.relu":
            return torch.relu(h)
        return h.relu()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x.flatten(1))))


def _images(n: int, shape: tuple[int, ...], seed: int = 1, dtype: torch.dtype = torch.float32) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *shape), generator=g).to(dtype)


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "ptr": {k: v.data_ptr() for k, v in model.state_dict().items()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "training": {k: m.training for k, m in model.named_modules()},
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
        "attrs": {k: sorted(vars(m)) for k, m in model.named_modules()},
        "eps": {k: m.eps for k, m in model.named_modules() if hasattr(m, "eps")},
    }


def _assert_unchanged(before: dict, model: nn.Module) -> None:
    after = _snapshot(model)
    for key in ("ptr", "requires_grad", "training", "hooks", "attrs", "eps"):
        assert after[key] == before[key], key
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k


def _twin(model: nn.Module, m: float) -> nn.Module:
    f2 = copy.deepcopy(model)
    first = next(mod for mod in f2.modules() if isinstance(mod, (nn.Linear, nn.Conv2d)))
    assert isinstance(first, nn.Linear), "a zero-padded conv cannot absorb a shift at the borders"
    with torch.no_grad():
        first.bias -= m * first.weight.sum(1)
    return f2


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.fixture
def mlp():
    """``mlp(seed=0, side=6, hidden=16, dtype=float32)``: ``paper_mlp`` on ``1 x side x side``, 10 classes, eval."""
    return _mlp


@pytest.fixture
def cnn():
    """``cnn(seed=0, side=8, dtype=float32)``: ``small_cnn`` (4/6 channels) on ``1 x side x side``, 10 classes, eval."""
    return _cnn


@pytest.fixture
def model_zoo():
    """name -> (builder, per-sample input shape): the small nets and narrow timm models the methods run on."""
    return {
        "mlp": (_mlp, (1, 6, 6)),
        "cnn": (_cnn, (1, 8, 8)),
        "timm_resnet18": (lambda: _timm_resnet("resnet18"), (3, 32, 32)),
        "timm_resnet50": (lambda: _timm_resnet("resnet50"), (3, 32, 32)),
        "timm_vgg11_bn": (_timm_vgg, (3, 32, 32)),
    }


@pytest.fixture
def linear():
    """``linear(seed=0, shape=(1, 4, 4), classes=3)``: an affine model ``f(x) = W flat(x) + b``."""
    return _linear


@pytest.fixture
def timm_resnet():
    """``timm_resnet(name="resnet18", seed=0, centered=False)``: a narrow timm ResNet (BasicBlock for resnet18,
    Bottleneck for resnet50) on 3 x 32 x 32 with non-trivial BatchNorm statistics."""
    return _timm_resnet


@pytest.fixture
def timm_vgg():
    """``timm_vgg(seed=0)``: a narrow timm VGG-11 with BatchNorm on 3 x 32 x 32 (the ConvMlp scaled down to 16)."""
    return _timm_vgg


@pytest.fixture
def randomize_batchnorm():
    """``randomize_batchnorm(model, seed=0, centered=False)``: non-trivial BatchNorm statistics; ``centered``: zero
    mean and bias (a BN without offset)."""
    return _randomize_batchnorm


@pytest.fixture
def zero_biases():
    """``zero_biases(model)``: zero every Linear/conv bias (BatchNorm offsets: see ``randomize_batchnorm``)."""
    return _zero_biases


@pytest.fixture
def functional_relu_net():
    """The class ``FunctionalReLUNet(how="F.relu", seed=0)``: a ReLU MLP on 1 x 6 x 6 whose ReLUs are function calls
    (``F.relu``, ``torch.relu`` or ``Tensor.relu``), which the modified-backward rules cannot see."""
    return FunctionalReLUNet


@pytest.fixture
def images():
    """``images(n, shape, seed=1, dtype=float32)``: seeded uniform ``[0, 1]`` inputs ``[n, *shape]``."""
    return _images


@pytest.fixture
def snapshot():
    """``snapshot(model)``: everything an explainer must leave as found (values, tensor identity, flags, modes,
    hooks, attributes, BatchNorm eps); compare with ``assert_unchanged``."""
    return _snapshot


@pytest.fixture
def assert_unchanged():
    """``assert_unchanged(before, model)``: the model matches its ``snapshot`` ``before``."""
    return _assert_unchanged


@pytest.fixture
def twin():
    """``twin(model, m)``: ``f2`` with ``f2(x + m) == f(x)``; the first layer (a Linear) absorbs the constant ``m``."""
    return _twin


@pytest.fixture
def rel():
    """``rel(a, b)``: ``max |a - b| / max |b|``."""
    return _rel
