"""Scores of your own from the command line: ``metric.plugins=[my_module]`` imports the module that registers them
(from PYTHONPATH, then the current directory) before the names are checked; an unknown score name or a module that
cannot be imported is refused by the entry point before any data or model is loaded (exit 2, the bad value named);
the registering module's source hash tells an edited score from the old one."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from bench.cli import main as cli
from bench.cli.config import MainConfig
from bench.core import scores
from bench.core.scores import PluginError, check_names, get_score, load_plugins, score_origin, score_source
from bench.experiments.model_randomization import RandomizationSpec

SCORES = """
from bench import Score, register_score


def mean_abs_diff(a, b):
    return (a.normalized("abs_p99") - b.normalized("abs_p99")).abs().flatten(1).mean(1)


register_score(Score("{name}", mean_abs_diff, higher_is_similar=False, invariant_at=0.01, min_drop=0.05))
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A module of a unique name in ``tmp_path`` (the current directory) registering a score of a unique name; the
    registry and ``sys.modules`` are restored afterwards."""
    module, score = f"own_scores_{uuid.uuid4().hex[:10]}", f"mad_{uuid.uuid4().hex[:6]}"
    path = tmp_path / f"{module}.py"
    path.write_text(textwrap.dedent(SCORES.format(name=score)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(scores, "_SCORES", dict(scores._SCORES))
    monkeypatch.setattr(scores, "_ORIGINS", dict(scores._ORIGINS))
    yield SimpleNamespace(module=module, score=score, path=path, root=tmp_path)
    for name in [m for m in sys.modules if m.startswith("own_scores_") or m.startswith("bad_scores_")]:
        del sys.modules[name]


# ------------------------------------------------------------------------------------------ the library calls


def test_a_plugin_is_imported_from_the_current_directory_and_its_score_can_be_named(plugin):
    with pytest.raises(ValueError, match=plugin.score):
        check_names([plugin.score])  # not yet: nothing registered it
    sources = load_plugins([plugin.module])
    check_names(["ssim", plugin.score])
    assert get_score(plugin.score).higher_is_similar is False
    assert score_origin(plugin.score) == plugin.module and score_origin("ssim") == "bench.core.scores"
    assert list(sources) == [plugin.module] and len(sources[plugin.module]) == 16
    assert score_source(plugin.score) == sources[plugin.module] and score_source("ssim") is None
    assert load_plugins([plugin.module]) == sources  # imported once: the score is not registered twice


def test_a_plugin_is_imported_from_pythonpath(plugin, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    monkeypatch.syspath_prepend(str(plugin.root))
    sources = load_plugins([plugin.module])
    check_names([plugin.score])  # raises ValueError when the score was not registered
    assert score_origin(plugin.score) == plugin.module and sources[plugin.module] == score_source(plugin.score)


def test_an_edited_plugin_gets_another_source_hash(plugin):
    before = load_plugins([plugin.module])[plugin.module]
    plugin.path.write_text(plugin.path.read_text() + "\n# edited: the same score, another file\n")
    assert score_source(plugin.score) != before and len(score_source(plugin.score)) == 16


def test_a_plugin_that_is_not_found_names_the_module_and_the_folders_searched(plugin):
    with pytest.raises(PluginError) as err:
        load_plugins(["nomod_own_scores_xyz"])
    message = str(err.value)
    assert message.startswith("metric.plugins: cannot import 'nomod_own_scores_xyz': no module named "
                              "'nomod_own_scores_xyz' on the import path"), message
    assert str(plugin.root) in message and "Accepted: a module name" in message
    assert isinstance(err.value, ValueError) and isinstance(err.value.__cause__, ModuleNotFoundError)


def test_a_plugin_failing_to_import_is_named_with_its_error(plugin):
    bad = f"bad_scores_{uuid.uuid4().hex[:10]}"
    (plugin.root / f"{bad}.py").write_text("import math\nraise RuntimeError('boom at import')\n")
    with pytest.raises(PluginError, match=rf"^metric.plugins: cannot import '{bad}': RuntimeError: boom at import$"):
        load_plugins([plugin.module, bad])
    check_names([plugin.score])  # the modules before it were imported
    missing = f"bad_scores_{uuid.uuid4().hex[:10]}"
    (plugin.root / f"{missing}.py").write_text("import nomod_dependency_xyz\n")
    with pytest.raises(PluginError, match=rf"cannot import '{missing}': ModuleNotFoundError: .*nomod_dependency_xyz"):
        load_plugins([missing])


@pytest.mark.parametrize("name", ["my-scores", "my_scores.py", "", "pkg..scores", 3])
def test_a_value_that_is_not_a_module_name_is_refused(name):
    with pytest.raises(PluginError, match=rf"metric.plugins: {name!r} is not a module name.*; accepted: a module name"):
        load_plugins([name])
    if name == "my_scores.py":
        with pytest.raises(PluginError, match=r"\(a file name: name its module, my_scores\)"):
            load_plugins([name])


def test_an_unknown_name_is_refused_naming_it_and_the_registered_ones():
    with pytest.raises(ValueError) as err:
        check_names(["ssim", "iou", "mda"], "metric.names")
    message = str(err.value)
    assert message.startswith("metric.names: unknown scores 'iou', 'mda'; registered: ssim, ssim_abs_max"), message
    assert "metric.plugins=[my_module]" in message and "'ssim'" not in message
    check_names([])  # nothing to check
    check_names(["ssim", "entropy_rise"])


def test_check_scores_reads_the_run_names_and_each_randomizations_own(plugin):
    cfg = MainConfig()
    cfg.metric.names = ["ssim", plugin.score]
    cfg.metric.plugins = [plugin.module]
    cfg.randomization = {"mprt": RandomizationSpec(mode="bottom_up", scores=["entropy_rise", plugin.score])}
    assert cli.check_scores(cfg) == {plugin.module: score_source(plugin.score)}
    cfg.randomization["mprt"].scores = ["entropyrise"]
    with pytest.raises(ValueError, match=r"^randomization.mprt.scores: unknown score 'entropyrise'; registered"):
        cli.check_scores(cfg)


# --------------------------------------------------------------------------- the entry point, in process


def _salbench_in_process(monkeypatch, tmp_path: Path, *overrides: str) -> tuple[int, list]:
    """``salbench overrides...`` in this process, with the job replaced by a recorder (nothing is loaded); returns
    the exit status and the configs the job received."""
    from bench.cli import job

    calls: list = []

    def fake_run(config, out, meta=None):  # noqa: ANN001, ANN202
        calls.append(config)
        return {"status": "ok"}

    monkeypatch.setattr(job, "run", fake_run)
    monkeypatch.setattr(sys, "argv", ["salbench", *overrides, "logger=disabled", f"hydra.run.dir={tmp_path / 'job'}",
                                      "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"])
    try:
        cli.main()
    except SystemExit as exit_:
        return int(exit_.code or 0), calls
    return 0, calls


def test_the_entry_point_refuses_an_unknown_score_before_the_job_starts(plugin, monkeypatch, capsys):
    status, calls = _salbench_in_process(monkeypatch, plugin.root, f"metric.names=[ssim,{plugin.score}]")
    err = capsys.readouterr().err
    assert status == 2 and calls == [], err  # refused before the job: no data, no model
    assert f"Error in the configuration: metric.names: unknown score '{plugin.score}'; registered: ssim" in err
    assert "metric.plugins" in err


def test_the_entry_point_imports_the_plugins_before_the_names_are_checked(plugin, monkeypatch, capsys):
    status, calls = _salbench_in_process(monkeypatch, plugin.root, f"metric.plugins=[{plugin.module}]",
                                         f"metric.names=[ssim,{plugin.score}]")
    assert status == 0, capsys.readouterr().err
    assert len(calls) == 1 and calls[0].metric.names == ["ssim", plugin.score]
    assert calls[0].metric.plugins == [plugin.module]


def test_the_entry_point_refuses_a_plugin_that_cannot_be_imported(plugin, monkeypatch, capsys):
    status, calls = _salbench_in_process(monkeypatch, plugin.root, "metric.plugins=[nomod_own_scores_xyz]")
    err = capsys.readouterr().err
    assert status == 2 and calls == []
    assert "Error in the configuration: metric.plugins: cannot import 'nomod_own_scores_xyz': no module named" in err


def test_the_job_hash_and_the_rows_configs_cover_a_plugins_source(plugin):
    from bench.cli import job
    from bench.core.results import config_hash

    load_plugins([plugin.module])
    cfg = MainConfig()
    before = (job.job_hash(cfg), config_hash(job.row_config(cfg, "input_invariance", "gradient", "mean_shift")))
    cfg.metric.names = ["ssim", plugin.score]
    key = f"metric.{plugin.score}.source_sha256"
    assert job.factory_sources(cfg) == {key: score_source(plugin.score)}
    rows = job.row_config(cfg, "input_invariance", "gradient", "mean_shift")
    chash, row_hash = job.job_hash(cfg), config_hash(rows)
    assert rows[key] == score_source(plugin.score) and chash != before[0] and row_hash != before[1]
    plugin.path.write_text(plugin.path.read_text() + "\n# edited\n")
    assert job.job_hash(cfg) != chash
    assert config_hash(job.row_config(cfg, "input_invariance", "gradient", "mean_shift")) != row_hash
    cfg.metric.names = ["ssim"]  # the plugin listed, its score not computed: the built-in rows keep their hash
    assert config_hash(job.row_config(cfg, "input_invariance", "gradient", "mean_shift")) == before[1]


# --------------------------------------------------------------------------------- the command line, for real


@pytest.mark.slow  # two command-line runs in subprocesses (about a minute on 2 cores); the rest is tested in process
def test_salbench_computes_a_plugins_score_and_refuses_an_unknown_one_before_the_model(tmp_path, salbench):
    (tmp_path / "my_scores.py").write_text(textwrap.dedent(SCORES.format(name="mad")))
    common = ["+experiment=smoke", "method=[gradient]", "run.n_samples=4", "logger=disabled", "run.figures=false",
              "run.progress=false"]
    res = salbench(*common, "metric.names=[ssim,mad]", f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path, timeout=300)
    assert res.returncode == 2, (res.stdout + res.stderr)[-3000:]
    assert "metric.names: unknown score 'mad'; registered: ssim" in res.stderr
    assert "test accuracy" not in res.stdout + res.stderr  # no model was loaded or trained
    assert not (tmp_path / "bad" / "job.json").exists()

    res = salbench(*common, "metric.plugins=[my_scores]", "metric.names=[ssim,mad]", f"hydra.run.dir={tmp_path / 'a'}",
                   cwd=tmp_path, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    table = pd.read_parquet(tmp_path / "a" / "results.parquet")
    mad = table[table.metric == "mad"]
    assert set(mad.experiment) == {"input_invariance", "model_randomization"} and mad.score.notna().all()
    assert json.loads((tmp_path / "a" / "job.json").read_text())["status"] == "ok"


def test_an_earlier_sweeps_failures_do_not_decide_a_later_runs_exit_status(plugin, monkeypatch, capsys):
    """The entry point's exit status reads the last sweep's summary; an earlier in-process sweep that failed (another
    test, a notebook) made a later single run exit 1. It is forgotten when a run starts."""
    from bench.cli import sweep

    sweep._LAST.update({"failed": 2})
    status, calls = _salbench_in_process(monkeypatch, plugin.root, f"metric.plugins=[{plugin.module}]",
                                         f"metric.names=[ssim,{plugin.score}]")
    assert status == 0 and len(calls) == 1, capsys.readouterr().err
    assert sweep.last_summary() == {}
