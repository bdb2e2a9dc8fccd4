"""The cost model (issue 17): passes per map from the methods' parameters, and the predicted maps of a job equal to
the maps it computes (counted on a real job of a zero-epoch model)."""

from __future__ import annotations

import pytest
import torch

from bench.core.cost import invariance_passes, passes_per_map, randomization_passes
from bench.core.explain import MethodSpec


@pytest.mark.parametrize(("spec", "passes"), [
    (MethodSpec("g", "gradient"), 1), (MethodSpec("sg", "smoothgrad"), 50),
    (MethodSpec("sg4", "smoothgrad", params={"n": 4}), 4), (MethodSpec("ig", "integrated_gradients"), 50),
    (MethodSpec("ig8", "integrated_gradients", params={"steps": 8}), 8), (MethodSpec("lrp", "lrp_epsilon"), 1),
])
def test_passes_per_map_follow_the_method_parameters(spec, passes):
    assert passes_per_map(spec) == passes


@pytest.mark.parametrize(("name", "extra"), [("cam:ScoreCAM", "cam"), ("zennit:EpsilonPlus", None),
                                             ("captum:Occlusion", "captum")])
def test_a_library_method_is_costed_by_its_adapter_with_the_model(name, extra):
    """The dry run hands the model to the adapters' cost models: Score-CAM's passes are 1 + the channels of the layer
    our Grad-CAM uses (small_cnn's last conv); Occlusion's are its windows (170 for a 28 x 28 digit at the adapter's
    defaults)."""
    if extra:
        pytest.importorskip({"cam": "pytorch_grad_cam", "captum": "captum"}[extra])
    from bench.core.models import create_model

    model = create_model("small_cnn", (1, 28, 28), 10)
    spec = MethodSpec("m", name)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    expected = {"cam:ScoreCAM": 1 + convs[-1].out_channels, "zennit:EpsilonPlus": 1, "captum:Occlusion": 170}[name]
    assert passes_per_map(spec, (1, 28, 28), model) == expected
    per = invariance_passes([spec], 2, (1, 28, 28), model)
    assert per == {"m": 3 * expected}
    assert randomization_passes([spec], "cascading", 4, input_shape=(1, 28, 28), model=model)["m"] == 6 * expected


def test_passes_per_sample_of_each_test():
    specs = [MethodSpec("g", "gradient"), MethodSpec("sg", "smoothgrad", params={"n": 4})]
    assert invariance_passes(specs, 3) == {"g": 4, "sg": 16}
    # the reference gradient (control:gradient) costs one pass per map, like Gradient
    assert randomization_passes(specs, "cascading", 5, seeds=2) == {"g": 12, "sg": 48, "control:gradient": 12}
    assert randomization_passes(specs, "labels", 5, seeds=2) == {"g": 4, "sg": 16, "control:gradient": 4}
    assert randomization_passes(specs, "bottom_up", 5, smooth_samples=10) == {"g": 70, "sg": 280,
                                                                              "control:gradient": 70}


def test_the_dry_run_predicts_the_maps_a_job_computes(tmp_path, monkeypatch):
    import bench.experiments.invariance as invariance
    import bench.experiments.model_randomization as model_randomization
    from bench.cli import job
    from bench.cli.config import MainConfig
    from bench.cli.dry_run import estimate
    from bench.experiments.model_randomization import RandomizationSpec
    from bench.twins.shifts import ShiftSpec

    cfg = MainConfig()
    cfg.model.kwargs = {"hidden": 8}
    cfg.train.epochs, cfg.train.min_test_acc, cfg.train.cache_dir = 0, 0.0, str(tmp_path / "ckpt")
    cfg.method = {"gradient": MethodSpec(name="gradient"), "ig": MethodSpec(name="integrated_gradients",
                                                                            params={"steps": 3})}
    cfg.transform = {"m": ShiftSpec(kind="mean_shift"), "c": ShiftSpec(kind="checkerboard")}
    cfg.randomization = {"cascading": RandomizationSpec(mode="cascading"), "two": RandomizationSpec(
        mode="independent", stages=2)}
    cfg.run.n_samples, cfg.run.figures, cfg.run.seeds = 5, False, 2
    cfg.logger.mode = "disabled"
    counted = {"n": 0}
    for module in (invariance, model_randomization):
        real = module.explain_all

        def counting(explainer, x, *args, real=real, **kwargs):
            counted["n"] += len(x) * (3 if "Integrated" in type(explainer).__name__ else 1)
            return real(explainer, x, *args, **kwargs)

        monkeypatch.setattr(module, "explain_all", counting)
    predicted = estimate(cfg)
    assert predicted["stages"] == {"cascading": 4, "two": 2}  # paper_mlp: four Linear layers
    assert job.run(cfg, tmp_path / "job")["status"] == "ok"
    assert counted["n"] == predicted["passes"]


def test_a_perturbation_method_is_counted_by_its_forward_passes():
    pytest.importorskip("captum")
    occlusion = MethodSpec("occ", "captum:Occlusion", params={"sliding_window_shapes": (1, 4, 4), "strides": (1, 4, 4)})
    # a 1 x 12 x 12 input in 4 x 4 windows: 9 windows and the unoccluded forward
    assert passes_per_map(occlusion, (1, 12, 12)) == 10
    lime = MethodSpec("lime", "captum:Lime", params={"n_samples": 40})
    assert invariance_passes([lime], 2, (1, 12, 12)) == {"lime": 41 * 3}
    assert passes_per_map(MethodSpec("sg", "smoothgrad", params={"n": 7})) == 7  # no own count: the multipliers
