"""The ViT preset (bench.core.vit) through both tests, and the methods on tokens (methods.cam, methods.rollout).

Fast tests use tiny untrained ViTs (no training); the slow test trains the preset (cached) and runs the smoke and
adebayo2018 presets on it end to end.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import methods
from bench.core import vit  # noqa: F401  (registers vit_tiny_digits until bench.core.models imports it)
from bench.core.models import create_model
from bench.randomization.reinit import randomized
from bench.randomization.units import check_partition, units
from bench.twins.build import BiasMapConv2d, affine_twin, check_twin
from bench.twins.shifts import ShiftSpec, make_shift

SHAPE = (1, 28, 28)


def _vit(depth: int = 2, seed: int = 0, **kw) -> nn.Module:
    """The preset's architecture, narrow (width 16, 2 heads): a few ms per pass."""
    from bench.core.training import _seeded_init

    model = create_model("vit_tiny_digits", SHAPE, 10, depth=depth, embed_dim=16, num_heads=2, **kw)
    _seeded_init(model, seed)
    return model.eval()


def _x(n: int = 4, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(1)).to(dtype)


# ------------------------------------------------------------------------------------------------ the preset


def test_preset_is_a_timm_vit_with_a_strided_patch_embedding() -> None:
    from timm.models.vision_transformer import VisionTransformer

    model = create_model("vit_tiny_digits", SHAPE, 10)
    assert isinstance(model, VisionTransformer)
    proj = model.patch_embed.proj
    assert type(proj) is nn.Conv2d and proj.kernel_size == proj.stride == (7, 7) and proj.in_channels == 1
    assert tuple(model.patch_embed.grid_size) == (4, 4) and model.num_prefix_tokens == 1
    assert len(model.blocks) == 4 and model.embed_dim == 64
    assert model(_x(2)).shape == (2, 10)
    with pytest.raises(ValueError, match="not a whole number of 7 x 7 patches"):
        create_model("vit_tiny_digits", (1, 30, 30), 10)
    with pytest.raises(ValueError, match="takes images C x H x W"):
        create_model("vit_tiny_digits", (64,), 10)


def test_seeded_initialization_determines_every_weight() -> None:
    """The class token and the position embeddings too: the harness's seed, not the global generator's state."""
    from bench.core.training import _seeded_init

    models = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        model = create_model("vit_tiny_digits", SHAPE, 10, depth=1)
        _seeded_init(model, 0)
        models.append(model.state_dict())
    assert all(torch.equal(models[0][k], models[1][k]) for k in models[0])
    assert float(models[0]["pos_embed"].std()) == pytest.approx(0.02, rel=0.2)


def test_preset_config_sets_the_model_and_its_recipe() -> None:
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from bench.cli.config import register_configs

    register_configs()
    with initialize_config_module(config_module="bench.conf", version_base="1.3"):
        cfg = OmegaConf.to_object(compose(config_name="config", overrides=["model=vit_tiny_digits"]))
        smoke = OmegaConf.to_object(compose(config_name="config",
                                            overrides=["model=vit_tiny_digits", "+experiment=smoke"]))
        adebayo = OmegaConf.to_object(compose(config_name="config",
                                              overrides=["model=vit_tiny_digits", "+experiment=adebayo2018"]))
    assert cfg.model.name == smoke.model.name == adebayo.model.name == "vit_tiny_digits"
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.epochs) == ("adam", 0.001, 10)
    assert (smoke.train.optimizer, smoke.train.epochs) == ("adam", 1)  # the experiment's epochs, the model's recipe


# ---------------------------------------------------------------------------------------------- input invariance


@pytest.mark.parametrize("kind", ["mean_shift", "checkerboard", "contrast"])
def test_twin_absorbs_the_transform_in_the_patch_embedding_exactly(kind: str) -> None:
    model = _vit().double()
    x = _x(6, torch.float64)
    t = make_shift(ShiftSpec(kind=kind), SHAPE)
    twin = affine_twin(model, t, example=x[:2])
    assert check_twin(model, twin, x, t, rtol=1e-10) < 1e-10  # float64: the paper's premise to rounding
    assert isinstance(twin.patch_embed.proj, BiasMapConv2d) and twin.patch_embed.proj.bias.shape == (16, 4, 4)
    changed = [n for n, p in model.state_dict().items() if not torch.equal(p, twin.state_dict()[n])]
    # the compensation only: the bias (and the weights for a contrast, W / s); class token and positions untouched
    expected = ["patch_embed.proj.weight", "patch_embed.proj.bias"] if kind == "contrast" else ["patch_embed.proj.bias"]
    assert changed == expected
    assert torch.equal(twin.cls_token, model.cls_token) and torch.equal(twin.pos_embed, model.pos_embed)


def test_token_methods_are_exactly_invariant_on_the_twin() -> None:
    """Grad-CAM and rollout see the activations after the patch embedding, identical in both networks."""
    model = _vit().double()
    x = _x(3, torch.float64)
    m = make_shift(ShiftSpec(kind="checkerboard"), SHAPE)
    twin = affine_twin(model, m, example=x[:2])
    for name in ("grad_cam", "attention_rollout"):
        a1 = methods.create(name, model)(x, 3)
        a2 = methods.create(name, twin)(x + m, 3)
        torch.testing.assert_close(a2, a1, rtol=1e-9, atol=1e-12 * float(a1.abs().max()))


# --------------------------------------------------------------------------------------------------- randomization


def test_units_in_execution_order() -> None:
    model = _vit()
    x = _x(1)
    per_block = ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]
    expected = ["patch_embed.proj", "cls_token+pos_embed", *[f"blocks.{b}.{n}" for b in range(2) for n in per_block],
                "norm", "head"]
    module_units = units(model, "module", example=x)
    assert [u.name for u in module_units] == expected and all(u.executed for u in module_units)
    check_partition(model, module_units)
    blocks = units(model, "block", example=x)
    assert [u.name for u in blocks] == ["patch_embed+cls_token+pos_embed", "blocks.0", "blocks.1", "norm+head"]
    check_partition(model, blocks)


@pytest.mark.parametrize("mode", ["cascading", "bottom_up"])
def test_randomization_reaches_the_embeddings(mode: str) -> None:
    model = _vit(depth=1)
    with torch.no_grad():  # "trained": LayerNorms away from their initialization (else re-drawing changes nothing)
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    x = _x(2)
    trained = copy.deepcopy(model.state_dict())
    stages = []
    for stage, randomized_model in randomized(model, mode, example=x[:1]):
        stages.append(stage)
        if stage == "cls_token+pos_embed":
            state = randomized_model.state_dict()
            assert not torch.equal(state["cls_token"], trained["cls_token"])
            assert not torch.equal(state["pos_embed"], trained["pos_embed"])
    order = [u.name for u in units(model, "module", example=x[:1])]
    assert stages == (order[::-1] if mode == "cascading" else order)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in trained.items())  # the trained model untouched


def test_dry_run_counts_the_vit_units() -> None:
    from bench.cli.config import MainConfig
    from bench.cli.dry_run import estimate
    from bench.experiments.model_randomization import RandomizationSpec

    cfg = MainConfig()
    cfg.model.name = "vit_tiny_digits"
    cfg.method = {}
    cfg.transform = {}
    cfg.randomization = {"cascading": RandomizationSpec()}
    cfg.run = dataclasses.replace(cfg.run, n_samples=2, batch_size=2)
    est = estimate(cfg)
    assert est["stages"] == {"cascading": 2 + 6 * 4 + 2}  # embeddings, 4 blocks of 6 units, norm, head


# ------------------------------------------------------------------------------------------- methods on tokens


def test_token_grad_cam_defaults_to_the_last_block_and_matches_a_hand_computation() -> None:
    model = _vit()
    x = _x(3)
    target = torch.tensor([1, 4, 7])
    explainer = methods.create("grad_cam", model)
    out = explainer(x, target)
    assert explainer.layer == "blocks.1"
    assert out.shape == x.shape and torch.isfinite(out).all() and (out >= 0).all() and out.abs().sum() > 0
    # by hand: the tokens entering the last block, their gradient, the patch tokens on the 4 x 4 grid
    seen = []
    handle = model.blocks[1].register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    xg = x.clone().requires_grad_(True)
    try:
        logit = model(xg).gather(1, target[:, None]).sum()
    finally:
        handle.remove()
    tokens = seen[0]
    (grad,) = torch.autograd.grad(logit, tokens)
    acts, grads = (t[:, 1:].reshape(3, 4, 4, 16).permute(0, 3, 1, 2) for t in (tokens, grad))
    cam = (grads.mean((2, 3), keepdim=True) * acts).sum(1, keepdim=True).relu()
    expected = F.interpolate(cam, size=(28, 28), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected.detach(), rtol=1e-5, atol=1e-7)


def test_token_grad_cam_layer_choice() -> None:
    model = _vit()
    x = _x(2)
    first = methods.create("grad_cam", model, layer="blocks.0")(x, 2)
    assert first.shape == x.shape and torch.isfinite(first).all()
    # a module's output tokens (pytorch-grad-cam's choice for ViTs: the last block's norm1)
    assert methods.create("grad_cam", model, layer="blocks.1.norm1")(x, 2).shape == x.shape
    # why a block is read at its input: the final tokens other than the class token never reach the logits
    assert methods.create("grad_cam", model, layer="norm", relu=False)(x, 2).abs().max() == 0
    with pytest.raises(ValueError, match=r"its transformer blocks: \['blocks.0', 'blocks.1'\]"):
        methods.create("grad_cam", model, layer="blocks.9")


def test_rollout_equals_a_direct_computation_on_one_block() -> None:
    model = _vit(depth=1)
    x = _x(3)
    out = methods.create("attention_rollout", model)(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    with torch.no_grad():
        # the tokens: patch embedding (the strided conv as a matrix product on the flattened patches), class token,
        # position embeddings
        w = model.patch_embed.proj.weight.reshape(16, -1)
        patches = x.unfold(2, 7, 7).unfold(3, 7, 7).reshape(3, 16, 49)  # [B, 4 x 4 patches, 7 x 7 pixels]
        tokens = patches @ w.T + model.patch_embed.proj.bias
        tokens = torch.cat([model.cls_token.expand(3, -1, -1), tokens], 1) + model.pos_embed
        block = model.blocks[0]
        h = F.layer_norm(tokens, (16,), block.norm1.weight, block.norm1.bias, block.norm1.eps)
        qkv = (h @ block.attn.qkv.weight.T + block.attn.qkv.bias).reshape(3, 17, 3, 2, 8)
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)  # [B, heads, N, head_dim]
        attn = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)
        a = attn.mean(1) + torch.eye(17)
        a = a / a.sum(-1, keepdim=True)
        row = a[:, 0, 1:].reshape(3, 1, 4, 4)
        expected = F.interpolate(row, size=(28, 28), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-7)


def test_rollout_multiplies_through_the_layers() -> None:
    from methods.rollout import attention_weights, rollout

    model = _vit(depth=3)
    x = _x(2)
    weights = attention_weights(model, x)
    assert [n for n, _ in weights] == ["blocks.0.attn", "blocks.1.attn", "blocks.2.attn"]
    assert all(w.shape == (2, 2, 17, 17) for _, w in weights)
    hat = [(w.mean(1) + torch.eye(17)) / (w.mean(1) + torch.eye(17)).sum(-1, keepdim=True) for _, w in weights]
    torch.testing.assert_close(rollout([w for _, w in weights]), hat[2] @ hat[1] @ hat[0])
    assert all(m.fused_attn == model.blocks[0].attn.fused_attn for m in (b.attn for b in model.blocks))


@pytest.mark.parametrize("name", ["grad_cam", "attention_rollout"])
def test_token_methods_keep_the_contract(name: str, snapshot, assert_unchanged) -> None:
    model = _vit()
    model.train()
    before = snapshot(model)
    x = _x(3)
    explainer = methods.create(name, model)
    out = explainer(x)
    assert out.shape == x.shape and out.dtype == x.dtype and not out.requires_grad
    assert_unchanged(before, model)
    torch.testing.assert_close(explainer(x[:1]), out[:1], rtol=1e-5, atol=1e-7)
    out64 = methods.create(name, copy.deepcopy(model).double())(x.double())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out, rtol=1e-4, atol=1e-6 * float(out.abs().max()))


def test_rollout_on_torchvision_multihead_attention() -> None:
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=28, patch_size=7, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                              num_classes=10).eval()
    x = torch.rand(2, 3, 28, 28)
    out = methods.create("attention_rollout", model)(x)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.min() > 0


# ---------------------------------------------------------------------------------------------------- refusals


def test_rollout_refusals(mlp) -> None:
    with pytest.raises(ValueError, match="attention_rollout needs a model with attention blocks: model Sequential"):
        methods.create("attention_rollout", mlp())
    pooled = _vit(class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="has no class token"):
        methods.create("attention_rollout", pooled)(_x(2))


@pytest.mark.skipif(importlib.util.find_spec("lxt") is not None, reason="lxt is installed")
def test_attn_lrp_names_the_missing_package() -> None:
    with pytest.raises(ImportError, match="attn_lrp .* needs the optional package lxt, which is not installed: "
                                          "pip install lxt"):
        methods.create("attn_lrp", _vit())


@pytest.mark.parametrize("name, error, message", [
    ("guided_backprop", ValueError, "guided_backprop rewrites the backward pass of torch.nn.ReLU modules only, but "
                                    "model DigitsViT applies gelu"),
    ("deconvnet", ValueError, "deconvnet rewrites .* applies gelu"),
    ("guided_grad_cam", ValueError, "guided_grad_cam: guided_backprop rewrites .* applies gelu"),
    ("lrp_z", ValueError, "lrp_z needs a canonizer for model DigitsViT"),
    ("lrp_alpha_beta", ValueError, "lrp_alpha_beta needs a canonizer for model DigitsViT"),
    ("dtd_zbox", ValueError, "dtd_zbox needs a canonizer for model DigitsViT"),
    ("pattern_net", ValueError, "pattern methods do not support module model: DigitsViT"),
    ("pattern_attribution", ValueError, "pattern methods do not support module model: DigitsViT"),
])
def test_methods_without_a_rule_for_the_vit_refuse_by_name(name: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        methods.create(name, _vit(depth=1))(_x(2))


# --------------------------------------------------------------------------------------------------- end to end


def _compose(*overrides: str):
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from bench.cli.config import register_configs

    register_configs()
    with initialize_config_module(config_module="bench.conf", version_base="1.3"):
        return OmegaConf.to_object(compose(config_name="config", overrides=list(overrides)))


@pytest.mark.slow
def test_preset_runs_the_smoke_and_adebayo2018_presets(tmp_path) -> None:
    import pandas as pd

    from bench.cli import job
    from bench.reporting.aggregate import invariance_verdicts, randomization_verdicts

    common = ["model=vit_tiny_digits", "logger=disabled", "run.progress=false"]
    smoke = job.run(_compose(*common, "+experiment=smoke"), tmp_path / "smoke")
    assert smoke["test_acc"] >= smoke["min_test_acc"]
    assert smoke["premise"]["mean_shift"] < 1e-10  # the twin, exact to float64 rounding
    # PatternAttribution refuses the ViT by name (both tests), the other methods ran
    assert set(smoke["errors"]) == {"pattern_attribution / mean_shift", "pattern_attribution / cascading"}
    assert all("pattern methods do not support module model: DigitsViT" in e for e in smoke["errors"].values())
    table = pd.read_parquet(tmp_path / "smoke" / job.RESULTS_FILE)
    assert {"gradient", "gradient_x_input"} <= set(table.method) and "pattern_attribution" not in set(table.method)
    assert set(invariance_verdicts(table).method) == {"gradient", "gradient_x_input"}

    adebayo = job.run(_compose(*common, "+experiment=adebayo2018", "run.n_samples=8", "randomization.labels.epochs=100",
                               "method.smoothgrad.params.n=8", "method.integrated_gradients_black.params.steps=8"),
                      tmp_path / "adebayo")
    assert "error" not in adebayo, adebayo.get("error")
    assert {k.split(" / ")[0] for k in adebayo["errors"]} == {"guided_backprop", "guided_grad_cam"}
    table = pd.read_parquet(tmp_path / "adebayo" / job.RESULTS_FILE)
    assert {"patch_embed.proj", "cls_token+pos_embed", "blocks.3.attn.qkv", "head", "permuted_labels"} <= set(
        table.layer)
    verdicts = randomization_verdicts(table)
    assert {"gradient", "smoothgrad", "grad_cam"} <= set(verdicts.method)
    assert set(verdicts.verdict) <= {"pass", "fail", "input-dominated", "inconclusive"}
    assert list((tmp_path / "adebayo" / "figures").glob("*.png"))
