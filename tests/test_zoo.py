"""The zoo preset (``+experiment=zoo``): every wrapped method that applies on ``small_cnn`` goes through both tests
(the mean shift and the checkerboard, the cascade) with no method failing; the README's zoo table and
``benchmarks/zoo.md`` come from it (scripts/bench_zoo.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("captum")
pytest.importorskip("pytorch_grad_cam")


def _compose(*overrides: str):
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from bench.cli.config import register_configs

    register_configs()
    with initialize_config_module(config_module="bench.conf", version_base="1.3"):
        return OmegaConf.to_object(compose(config_name="config", overrides=["+experiment=zoo", *overrides]))


def test_the_zoo_preset_names_every_library_method_of_the_issue():
    cfg = _compose()
    names = {spec.name for spec in cfg.method.values()}
    wanted = {f"captum:{c}" for c in ("DeepLift", "DeepLiftShap", "GradientShap", "Occlusion", "FeatureAblation",
                                      "ShapleyValueSampling", "Lime", "KernelShap", "LRP", "NoiseTunnel")}
    wanted |= {f"cam:{c}" for c in ("GradCAMPlusPlus", "ScoreCAM", "XGradCAM", "LayerCAM", "EigenCAM", "HiResCAM",
                                    "FullGrad")}
    wanted |= {f"zennit:{c}" for c in ("EpsilonPlus", "EpsilonPlusFlat", "EpsilonGammaBox", "EpsilonAlpha2Beta1",
                                       "ExcitationBackprop")}
    wanted |= {"vargrad", "smoothgrad_squared"}
    assert wanted <= names, sorted(wanted - names)
    assert cfg.model.name == "small_cnn" and set(cfg.transform) == {"mean_shift", "checkerboard"}
    assert set(cfg.randomization) == {"cascading"}


@pytest.mark.slow  # every zoo method through both tests on 4 digits: about a minute on 2 cores
def test_every_zoo_method_runs_through_both_tests(tmp_path):
    from bench.cli import job

    cfg = _compose("run.n_samples=4", "logger=disabled", "run.progress=false", "run.figures=false")
    record = job.run(cfg, tmp_path / "zoo")
    assert record["status"] == "ok" and not record.get("errors"), record.get("errors")
    import pandas as pd

    table = pd.read_parquet(tmp_path / "zoo" / "results.parquet")
    for label in cfg.method:
        rows = table[table.method == label]
        assert {"mean_shift", "checkerboard"} <= set(rows[rows.experiment == "input_invariance"].condition), label
        stages = rows[(rows.experiment == "model_randomization") & (rows.condition == "cascading")]
        assert stages.layer.nunique() >= 4, label  # the trained model's map and every stage of small_cnn
