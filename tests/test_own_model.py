"""Your own model and data from the command line: ``model.name=package.module:factory``,
``data.name=package.module:factory``. Resolution (current directory, PYTHONPATH, the factory's arguments), every
error message, exit status 2, and the hashes that keep an edited factory from reusing old checkpoints and rows."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import uuid
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from bench.cli import job
from bench.cli.config import MainConfig
from bench.core.data import Dataset, load_dataset
from bench.core.explain import MethodSpec
from bench.core.models import FactoryError, create_model, find_normalize, with_source_hash
from bench.core.results import config_hash
from bench.core.training import TrainConfig, checkpoint_path
from bench.twins.shifts import ShiftSpec

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_model"

NET = """
import math

from torch import nn


def factory(input_shape, num_classes, hidden=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def helper(x):
    return x


def broken(input_shape, num_classes):
    raise ValueError("bad width")


def as_dict(input_shape, num_classes):
    return {"weights": 1}


SIZE = 3
"""

DATA = """
import torch

from bench.core.data import Dataset

CALLS = []


def make(seed=0, n_test=None):
    CALLS.append({"seed": seed, "n_test": n_test})
    n_test = 12 if n_test is None else n_test
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(60 + n_test, 1, 12, 12, generator=g)
    y = torch.arange(60 + n_test) % 3
    return Dataset("own", x[:60], y[:60], x[60:], y[60:], num_classes=3)


def fixed():
    return make()


def with_root(root=None):
    return make()


def broken(seed=0):
    raise OSError("no such recording")


def as_dict():
    return {"x": 1}


def bad_labels():
    d = make()
    d.y_train = d.y_train + 3
    return d


def out_of_domain():
    d = make()
    d.x_test = d.x_test * 4
    return d
"""


@pytest.fixture
def pkg(tmp_path, monkeypatch):
    """A package of a unique name in ``tmp_path/src`` (the current directory): ``pkg.write(module, source)`` writes
    ``<pkg>/<module>.py`` and returns its dotted name; its modules are forgotten afterwards."""
    name = f"ownpkg_{uuid.uuid4().hex[:10]}"
    root = tmp_path / "src"
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text("")

    def write(module: str, source: str) -> str:
        (root / name / f"{module}.py").write_text(textwrap.dedent(source))
        return f"{name}.{module}"

    monkeypatch.chdir(root)
    yield SimpleNamespace(root=root, name=name, write=write)
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]


def _edit(pkg, module: str) -> None:
    """Change the module's source without changing what it does (a comment: the hash must still change)."""
    path = pkg.root / pkg.name / f"{module}.py"
    path.write_text(path.read_text() + "\n# edited: a new layer tried and removed\n")


# ------------------------------------------------------------------------------------------------- resolution


def test_a_model_factory_is_imported_from_the_current_directory_with_its_kwargs(pkg):
    net = pkg.write("net", NET)
    model = create_model(f"{net}:factory", (1, 6, 6), 3, hidden=5)
    assert [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)] == [5, 3]
    assert model(torch.rand(2, 1, 6, 6)).shape == (2, 3)
    assert str(pkg.root) not in sys.path  # the current directory is searched for this import only
    normalized = create_model(f"{net}:factory", (1, 6, 6), 3, normalize=([0.5], [0.25]))
    assert find_normalize(normalized) is not None  # preprocessing inside the model applies as to any model


def test_a_model_factory_is_imported_from_pythonpath(pkg, tmp_path, monkeypatch):
    net = pkg.write("net", NET)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(FactoryError, match="no module named"):
        create_model(f"{net}:factory", (1, 6, 6), 3)
    monkeypatch.syspath_prepend(str(pkg.root))
    assert create_model(f"{net}:factory", (1, 6, 6), 3)(torch.rand(1, 1, 6, 6)).shape == (1, 3)


def test_a_data_factory_gets_only_the_fields_it_names_and_the_harness_encodes(pkg):
    mod = pkg.write("data", DATA)
    data = load_dataset(f"{mod}:make", seed=2, n_test=9, encoding="negative", mean=[0.5], std=[0.2])
    assert sys.modules[mod].CALLS == [{"seed": 2, "n_test": 9}]  # not encoding, mean, std, root, ...
    assert isinstance(data, Dataset) and data.name == "own" and len(data.x_test) == 9
    assert data.encoding == "negative" and data.domain == (-1.0, 0.0)
    assert float(data.x_train.min()) >= -1.0 and float(data.x_train.max()) <= 0.0
    assert data.meta["mean"] == [0.5] and data.meta["std"] == [0.2]  # recorded for model.normalize


def test_the_example_package_runs_from_its_folder(monkeypatch):
    monkeypatch.chdir(EXAMPLE)
    try:
        data = load_dataset("mypkg.data:digits", n_test=50)
        model = create_model("mypkg.net:factory", data.input_shape, data.num_classes, hidden=16)
        assert data.input_shape == (1, 16, 16) and len(data.x_test) == 50 and data.num_classes == 10
        assert model(data.x_test[:4]).shape == (4, 10)
    finally:
        for mod in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
            del sys.modules[mod]


# ----------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("attr, expected, cause", [
    (None, ["model.name=nopkg_own_xyz.net:factory: no module named 'nopkg_own_xyz'", "PYTHONPATH",
            "searched:", "package.module:factory"], ModuleNotFoundError),
    ("factori", ["has no attribute 'factori'", "its callables: as_dict, broken, factory, helper"], AttributeError),
    ("SIZE", ["is a int, not a callable factory"], None),
    ("broken", ["raised ValueError: bad width (called as broken(input_shape=(1, 6, 6), num_classes=3)"], ValueError),
    ("as_dict", ["returned a dict, not a torch.nn.Module"], None),
])
def test_model_factory_errors_name_the_value_the_key_and_what_is_accepted(pkg, attr, expected, cause):
    net = pkg.write("net", NET)
    name = "nopkg_own_xyz.net:factory" if attr is None else f"{net}:{attr}"
    with pytest.raises(FactoryError) as err:
        create_model(name, (1, 6, 6), 3)
    message = str(err.value)
    assert message.startswith(f"model.name={name}")
    for part in expected:
        assert part in message, message
    if attr is None:
        assert str(pkg.root) in message  # the current directory is among the folders searched
    if attr == "as_dict":
        assert message.startswith(f"model.name={net}:as_dict returned a dict, not a torch.nn.Module")
    assert isinstance(err.value, ValueError)
    assert (type(err.value.__cause__) is cause) if cause else err.value.__cause__ is None


def test_a_module_failing_to_import_and_a_bad_path_are_named(pkg):
    bad = pkg.write("bad", "raise RuntimeError('boom at import')\n")
    with pytest.raises(FactoryError, match=rf"model.name={bad}:f: importing {bad} failed: RuntimeError: boom") as err:
        create_model(f"{bad}:f", (1, 6, 6), 3)
    assert isinstance(err.value.__cause__, RuntimeError)
    with pytest.raises(FactoryError, match="model.name=mypkg.net: is not an import path of a factory; accepted"):
        create_model("mypkg.net:", (1, 6, 6), 3)


@pytest.mark.parametrize("attr, kwargs, expected, cause", [
    (None, {}, "data.name=nopkg_own_xyz.data:make: no module named 'nopkg_own_xyz'", ModuleNotFoundError),
    ("mkae", {}, "has no attribute 'mkae'; its callables: as_dict, bad_labels, broken, fixed, make", AttributeError),
    ("broken", {}, "raised OSError: no such recording (called as broken(seed=0))", OSError),
    ("as_dict", {}, "returned a dict, not a bench.core.data.Dataset", None),
    ("fixed", {"n_test": 5}, "data.n_test=5 is set, but the factory takes no n_test (it names: none of them)", None),
    ("bad_labels", {}, "y_train holds labels 3..5; accepted: 0..2 (num_classes=3)", None),
    ("out_of_domain", {}, "outside the data set's domain (0, 1)", None),
])
def test_data_factory_errors_name_the_value_the_key_and_what_is_accepted(pkg, attr, kwargs, expected, cause):
    mod = pkg.write("data", DATA)
    name = "nopkg_own_xyz.data:make" if attr is None else f"{mod}:{attr}"
    with pytest.raises(FactoryError) as err:
        load_dataset(name, **kwargs)
    assert str(err.value).startswith(f"data.name={name}") and expected in str(err.value), str(err.value)
    assert (type(err.value.__cause__) is cause) if cause else err.value.__cause__ is None


def _config(tmp_path: Path, model: str, data: str) -> MainConfig:
    cfg = MainConfig()
    cfg.model.name, cfg.data.name = model, data
    cfg.train.epochs, cfg.train.min_test_acc, cfg.train.cache_dir = 0, 0.0, str(tmp_path / "ckpt")
    cfg.method = {"gradient": MethodSpec(name="gradient")}
    cfg.transform = {"mean_shift": ShiftSpec(kind="mean_shift")}
    cfg.run.n_samples, cfg.run.batch_size, cfg.run.figures, cfg.run.progress = 4, 4, False, False
    cfg.run.tests = ["invariance"]
    cfg.logger.mode = "disabled"
    return cfg


def test_a_bad_factory_fails_the_job_as_bad_input(pkg, tmp_path):
    net, data = pkg.write("net", NET), pkg.write("data", DATA)
    for model_name, data_name, message in [
        (f"{net}:as_dict", f"{data}:make", f"model.name={net}:as_dict returned a dict, not a torch.nn.Module"),
        (f"{net}:factory", f"{data}:as_dict", f"data.name={data}:as_dict returned a dict, not a bench.core"),
    ]:
        out = tmp_path / f"job-{len(message)}"
        record = job.run(_config(tmp_path, model_name, data_name), out)
        # a job-level error (``error``): the command exits 2, as for any bad input (bench.cli.main)
        assert record["status"] == "failed" and message in record["error"], record.get("error")
        assert json.loads((out / job.JOB_FILE).read_text())["error"] == record["error"]


@pytest.mark.slow  # a command-line run in a subprocess (5 s); the messages are tested in process
def test_a_factory_that_is_not_found_exits_2(tmp_path, salbench):
    res = salbench("model.name=nopkg_own_xyz.net:factory", "data.name=signals", "logger=disabled", "run.figures=false",
                   f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path, timeout=180)
    assert res.returncode == 2, res.stderr[-3000:]
    assert "model.name=nopkg_own_xyz.net:factory: no module named 'nopkg_own_xyz'" in res.stdout + res.stderr
    assert str(tmp_path) in json.loads((tmp_path / "job" / "job.json").read_text())["error"]  # searched there


# ----------------------------------------------------------------------------------------------------- hashes


def test_the_checkpoint_key_covers_the_factorys_source_and_kwargs(pkg, toy_data, tmp_path):
    net = pkg.write("net", NET)
    name, data, cfg = f"{net}:factory", toy_data(), TrainConfig(cache_dir=str(tmp_path / "ckpt"))
    key = with_source_hash(name, {"hidden": 4})
    assert key["hidden"] == 4 and len(key["source_sha256"]) == 16
    before = checkpoint_path(name, data, cfg, model_kw=key)
    assert checkpoint_path(name, data, cfg, model_kw=with_source_hash(name, {"hidden": 4})) == before
    assert checkpoint_path(name, data, cfg, model_kw=with_source_hash(name, {"hidden": 5})) != before
    _edit(pkg, "net")
    assert checkpoint_path(name, data, cfg, model_kw=with_source_hash(name, {"hidden": 4})) != before
    # the hash checked against the source when the model is built: a file edited since is refused
    with pytest.raises(FactoryError, match="its source changed while it was in use"):
        create_model(name, (1, 12, 12), 3, **key)
    assert create_model(name, (1, 12, 12), 3, **with_source_hash(name, {"hidden": 4})) is not None
    with pytest.raises(ValueError, match="applies to a package.module:factory model only"):
        create_model("paper_mlp", (1, 12, 12), 3, source_sha256="0" * 16)


def test_an_edited_model_is_trained_again_by_the_job_never_loaded_from_the_old_checkpoint(pkg, tmp_path):
    net, data = pkg.write("net", NET), pkg.write("data", DATA)
    cfg = _config(tmp_path, f"{net}:factory", f"{data}:make")
    cfg.run.tests = []  # the model only
    ckpt = tmp_path / "ckpt"
    assert job.run(cfg, tmp_path / "a")["status"] == "ok"
    first = sorted(ckpt.glob("*.pt"))
    assert len(first) == 1 and first[0].name.startswith(f"{net}_factory-")
    assert job.run(cfg, tmp_path / "b")["status"] == "ok"
    assert sorted(ckpt.glob("*.pt")) == first  # the same source: loaded from the cache
    _edit(pkg, "net")
    assert job.run(cfg, tmp_path / "c")["status"] == "ok"
    assert len(list(ckpt.glob("*.pt"))) == 2  # an edited model: a new key, trained again


def test_row_config_and_job_hash_cover_the_factories_sources(pkg, tmp_path):
    net, data = pkg.write("net", NET), pkg.write("data", DATA)
    cfg = _config(tmp_path, f"{net}:factory", f"{data}:make")
    rows = job.row_config(cfg, "input_invariance", "gradient", "mean_shift")
    assert len(rows["model.source_sha256"]) == 16 and len(rows["data.source_sha256"]) == 16
    assert rows["model.name"] == f"{net}:factory" and "data.root" not in rows
    row_hash, job_hash = config_hash(rows), job.job_hash(cfg)
    _edit(pkg, "net")
    edited = job.row_config(cfg, "input_invariance", "gradient", "mean_shift")
    assert config_hash(edited) != row_hash and job.job_hash(cfg) != job_hash
    assert edited["data.source_sha256"] == rows["data.source_sha256"]
    _edit(pkg, "data")
    assert job.row_config(cfg, "input_invariance", "gradient", "mean_shift")["data.source_sha256"] \
        != rows["data.source_sha256"]
    # a data factory that reads data.root: the folder is its content
    cfg.data.name, cfg.data.root = f"{data}:with_root", str(tmp_path)
    assert job.row_config(cfg, "input_invariance", "gradient", "mean_shift")["data.root"] == str(tmp_path)
    # the registered names: no source key, so the hashes of their rows and jobs are what they were
    plain = job.row_config(MainConfig(), "input_invariance", "gradient", "mean_shift")
    assert not any(k.endswith("source_sha256") for k in plain)


def test_the_rows_of_a_job_carry_the_source_hash(pkg, tmp_path):
    net, data = pkg.write("net", NET), pkg.write("data", DATA)
    cfg = _config(tmp_path, f"{net}:factory", f"{data}:make")
    record = job.run(cfg, tmp_path / "job")
    assert record["status"] == "ok", record.get("error")
    table = pd.read_parquet(tmp_path / "job" / "results.parquet")
    (chash,) = set(table.config_hash)
    assert record["row_configs"][chash]["model.source_sha256"] == job.factory_sources(cfg)["model.source_sha256"]
    assert set(table.model) == {f"{net}:factory"} and set(table.dataset) == {"own"}


# --------------------------------------------------------------------------------------------- the command line


@pytest.mark.slow  # trains the example's model in a subprocess (about a minute on 2 cores)
def test_salbench_runs_your_own_model_and_data_from_the_current_directory(tmp_path, salbench):
    shutil.copytree(EXAMPLE / "mypkg", tmp_path / "mypkg")
    common = ["logger=disabled", "run.figures=false", "run.progress=false", f"train.cache_dir={tmp_path / 'ckpt'}"]
    res = salbench("+experiment=smoke", "model.name=mypkg.net:factory", *common, f"hydra.run.dir={tmp_path / 'a'}",
                   cwd=tmp_path, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    record = json.loads((tmp_path / "a" / "job.json").read_text())
    table = pd.read_parquet(tmp_path / "a" / "results.parquet")
    assert record["status"] == "ok" and record["rows"] == len(table) > 0 and record["test_acc"] > 0.5
    assert set(table.model) == {"mypkg.net:factory"}
    assert {"gradient", "gradient_x_input", "pattern_attribution"} <= set(table.method)
    assert all(len(c["model.source_sha256"]) == 16 for c in record["row_configs"].values())
    # the data too, with a setting the factory names (SGD at lr 0.2, the default, stalls on these digits)
    res = salbench("+experiment=smoke", "model.name=mypkg.net:factory", "data.name=mypkg.data:digits",
                   "data.n_test=100", "train.optimizer=adam", "train.lr=0.001",
                   "train.epochs=3", *common, f"hydra.run.dir={tmp_path / 'b'}",
                   cwd=tmp_path, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    record = json.loads((tmp_path / "b" / "job.json").read_text())
    assert record["status"] == "ok" and record["dataset"] == "sklearn_digits" and record["test_acc"] > 0.5
    assert all(len(c["data.source_sha256"]) == 16 for c in record["row_configs"].values())
