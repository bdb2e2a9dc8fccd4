"""Absurd jobs are refused before any work: the predicted time against run.max_hours, and memory-predictable
settings (Integrated Gradients' steps, the size of the results table) against the memory available."""

from __future__ import annotations

import pytest

import bench.cli.budget as budget
from bench.cli.config import MainConfig
from bench.core.explain import MethodSpec
from bench.experiments.model_randomization import RandomizationSpec


def _config(**run) -> MainConfig:
    cfg = MainConfig(method={"gradient": MethodSpec(name="gradient")},
                     randomization={"cascading": RandomizationSpec()})
    cfg.run.n_samples = 8
    for key, value in run.items():
        setattr(cfg.run, key, value)
    return cfg


def test_the_default_job_fits_the_default_budget():
    est = budget.check(_config())
    assert est["seconds"] + est["train_seconds"] < 3600 and est["train_passes"] == 10 * 4000  # 10 epochs, 4000 digits


@pytest.mark.parametrize("setting", ["run.seeds", "train.epochs"])
def test_an_absurd_setting_is_refused_with_its_prediction(setting):
    cfg = _config()
    if setting == "run.seeds":
        cfg.run.seeds = 10**9
    else:
        cfg.train.epochs = 10**9
    with pytest.raises(budget.BudgetError, match=r"predicted to take [\d,.]+ hours \(run\.max_hours=12\)") as err:
        budget.check(cfg)
    assert "salbench --dry-run" in str(err.value) and "0: no limit" in str(err.value)


def test_a_method_predicted_beyond_the_limit_alone_is_refused_by_name():
    cfg = _config()
    cfg.method = {"gradient": MethodSpec(name="gradient"),
                  "ig_fine": MethodSpec(name="integrated_gradients", params={"steps": 10**8})}
    with pytest.raises(budget.BudgetError, match=r"^the job is predicted to take [\d,.]+ hours \(run\.max_hours=12\).* "
                                                  r"methods predicted to take longer than run\.max_hours=12 alone: "
                                                  r"ig_fine [\d,.]+ hours \(name='integrated_gradients', "
                                                  r"steps=100000000\)") as err:
        budget.check(cfg)
    named = [entry.split()[0] for entry in str(err.value).split("alone: ")[1].split(". Lower")[0].split("; ")]
    assert named == ["ig_fine"]  # the cheap method is not named


def test_a_perturbation_method_is_refused_by_name_from_its_own_cost_model():
    """Captum's Shapley value sampling on single-pixel features: 784 features x n_samples permutations per map."""
    pytest.importorskip("captum")
    cfg = _config(max_hours=0.01)
    cfg.method = {"gradient": MethodSpec(name="gradient"),
                  "svs": MethodSpec(name="captum:ShapleyValueSampling", params={"n_samples": 200})}
    with pytest.raises(budget.BudgetError, match=r"alone: svs [\d,.]+ hours \(name='captum:ShapleyValueSampling', "
                                                  r"n_samples=200\)"):
        budget.check(cfg)
    cfg.method = {"gradient": MethodSpec(name="gradient")}
    budget.check(cfg)  # the same job without it fits


def test_per_method_seconds_sum_to_the_float32_prediction():
    est = budget.check(_config())
    per = budget.method_seconds(est)
    assert set(per) == {"gradient", "control:gradient"}
    assert sum(per.values()) == pytest.approx(est["passes"] * est["seconds_per_pass"])


def test_max_hours_zero_is_no_limit_and_a_bad_value_is_named():
    cfg = _config(max_hours=0)
    cfg.train.epochs = 10**6
    budget.check(cfg)  # predicted far beyond 12 hours, and accepted
    with pytest.raises(budget.BudgetError, match=r"run\.max_hours=-1 is out of range; accepted: >= 0"):
        budget.check(_config(max_hours=-1))


def test_a_quadrature_that_cannot_fit_in_memory_is_refused_before_the_estimate(monkeypatch):
    monkeypatch.setattr(budget, "available_memory", lambda: 2**30)  # 1 GiB available
    cfg = _config(max_hours=0)
    cfg.method = {"ig": MethodSpec(name="integrated_gradients", params={"steps": 10**9})}
    monkeypatch.setattr("bench.cli.dry_run.estimate", lambda cfg: pytest.fail("estimated before the memory check"))
    with pytest.raises(budget.BudgetError, match=r"method 'ig': steps=1e\+09 needs about 29\.8 GiB .* 1\.0 GiB"):
        budget.check(cfg)


def test_a_results_table_that_cannot_fit_in_memory_is_refused(monkeypatch):
    monkeypatch.setattr(budget, "available_memory", lambda: 2**30)
    with pytest.raises(budget.BudgetError, match=r"the results table would hold about [\d,]+ rows .* run\.seeds="):
        budget.check(_config(max_hours=0, seeds=10**6))


@pytest.mark.slow  # a command-line run in a subprocess (6 s); the refusal itself is tested in process above
def test_the_command_line_refuses_an_absurd_job_before_training_with_exit_2(salbench, tmp_path):
    res = salbench("+experiment=smoke", "train.epochs=1000000000", "logger=disabled", "run.progress=false",
                   f"train.cache_dir={tmp_path / 'ckpt'}", f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path,
                   timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "predicted to take" in res.stderr + res.stdout and "train.epochs" in res.stderr + res.stdout
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())  # nothing trained
    assert not (tmp_path / "job" / "results.parquet").exists()


def test_a_token_model_is_estimated_on_its_embedding_output_as_the_job_runs_it():
    cfg = _config()
    cfg.model.name, cfg.data.name = "token_mlp", "tokens"
    est = budget.check(cfg)  # token ids cannot be differentiated: the pass is timed on the embedding output
    assert est["seconds_per_pass"] > 0 and est["stages"]["cascading"] == 2  # the two dense layers after it


def test_the_dry_run_lists_the_units_in_execution_order():
    est = budget.check(_config())
    assert est["units"]["cascading"] == ["1", "3", "5", "7"]  # paper_mlp's four Linear layers, the input first
