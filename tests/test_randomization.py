"""Model-randomization engine: units in execution order, partitions, stage contents, premise checks."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from bench.core.models import create_model
from bench.experiments.label_randomization import permuted_labels
from bench.randomization import check_partition, randomized, unit_seed, units


@torch.no_grad()
def fake_train(model: nn.Module, seed: int = 123) -> nn.Module:
    """Move every parameter and norm statistic away from its initial value, as training would."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(0.05 * torch.randn(p.shape, generator=g))
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.running_mean is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            m.num_batches_tracked.fill_(7)
    return model.eval()


def last(stages):
    """The last ``(name, model)`` of a stage iterator, after running it to the end."""
    out = None
    for out in stages:  # noqa: B007
        pass
    return out


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


def changed_params(model: nn.Module, ref: dict[str, torch.Tensor]) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(p, ref[n])}


class Scrambled(nn.Module):
    """Registers its layers in an order unrelated to the order its forward runs them."""

    def __init__(self, unused: bool = False):
        super().__init__()
        self.head = nn.Linear(6, 3)
        self.mid = nn.Linear(8, 6)
        self.scale = nn.Parameter(torch.ones(8))  # owned by the root, used between first and mid
        self.first = nn.Linear(4, 8)
        if unused:
            self.spare = nn.Linear(2, 2)

    def forward(self, x):
        return self.head(torch.relu(self.mid(torch.relu(self.first(x)) * self.scale)))


def bn_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 5),
    )


def small_vit(**kw) -> nn.Module:
    kw = {"img_size": 32, "patch_size": 8, "num_classes": 10, "init_values": 1e-5, **kw}
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, **kw)


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


X4 = _randn(2, 4, seed=0)
IMG8 = _randn(2, 1, 8, 8, seed=1)
IMG32 = _randn(1, 3, 32, 32, seed=2)


# ------------------------------------------------------------------------------------------- units


def test_order_follows_execution_not_registration():
    m = Scrambled()
    assert [n for n, _ in m.named_children()] == ["head", "mid", "first"]
    us = units(m, example=X4)
    assert [u.name for u in us] == ["first", "scale", "mid", "head"]
    assert us[1].params == [("scale", m.scale)] and us[1].modules == [""]
    check_partition(m, us)
    blocks = units(m, "block", example=X4)  # single layers only: no merging; root params join "first"
    assert [u.name for u in blocks] == ["first+scale", "mid", "head"]
    check_partition(m, blocks)


def test_unused_units_last_and_not_stages():
    m = fake_train(Scrambled(unused=True))
    us = units(m, example=X4)
    assert [(u.name, u.executed) for u in us][-1] == ("spare", False)
    check_partition(m, us)
    stages = [name for name, _ in randomized(m, "cascading", example=X4)]
    assert stages == ["head", "mid", "scale", "first"]


def test_multihead_attention_in_projection_is_a_unit():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):
            return self.fc(self.attn(x, x, x)[0].mean(1))

    m = fake_train(Attn())
    x = _randn(2, 5, 8, seed=3)
    us = units(m, example=x)
    # out_proj's forward never runs (F.multi_head_attention_forward reads its weight): still traced
    assert [(u.name, u.executed) for u in us] == [("attn", True), ("attn.out_proj", True), ("fc", True)]
    assert us[0].param_names == ["attn.in_proj_weight", "attn.in_proj_bias"]
    check_partition(m, us)
    ref = state(m)
    for name, mk in randomized(m, "independent", example=x):
        assert changed_params(mk, ref) == set(next(u for u in us if u.name == name).param_names)


@pytest.mark.parametrize("granularity", ["module", "block"])
def test_partition_timm_resnet18(granularity):
    m = timm.create_model("resnet18", pretrained=False, num_classes=10)
    us = units(m, granularity, example=IMG32)
    check_partition(m, us)
    assert all(u.executed for u in us)
    names = [u.name for u in us]
    if granularity == "block":
        assert names == ["conv1+bn1"] + [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)] + ["fc"]
        assert [n for n, _ in us[0].buffers] == [
            f"bn1.{b}" for b in ("running_mean", "running_var", "num_batches_tracked")
        ]
    else:
        assert len(us) == sum(1 for mod in m.modules() if list(mod.parameters(recurse=False)))
        assert names[:2] == ["conv1", "bn1"] and names[-1] == "fc"
        assert names.index("layer2.0.downsample.0") > names.index("layer2.0.conv1")


@pytest.mark.parametrize("granularity", ["module", "block"])
def test_partition_timm_vit(granularity):
    m = small_vit(depth=4)
    us = units(m, granularity, example=IMG32)
    check_partition(m, us)
    names = [u.name for u in us]
    owned = {n for u in us for n in u.param_names}
    assert {"cls_token", "pos_embed", "blocks.0.ls1.gamma", "blocks.0.attn.qkv.weight"} <= owned
    if granularity == "block":
        blocks = [f"blocks.{i}" for i in range(4)]
        assert names == ["patch_embed+cls_token+pos_embed", *blocks, "norm+head"]
    else:
        assert names[:3] == ["patch_embed.proj", "cls_token+pos_embed", "blocks.0.norm1"]
        assert names[-2:] == ["norm", "head"] and "blocks.3.ls2" in names


def test_inception_v3_has_the_papers_17_blocks():
    with torch.device("meta"):  # shapes only: the trace runs on the meta device
        m = timm.create_model("inception_v3", pretrained=False, num_classes=10)
    us = units(m, "block", example=torch.empty(1, 3, 96, 96, device="meta"))
    check_partition(m, us)
    names = [u.name for u in us]
    assert len(names) == 17 and names[0] == "Conv2d_1a_3x3" and names[-2:] == ["Mixed_7c", "fc"]


def test_single_layers_with_parameter_free_children():
    """timm's BatchNormAct2d (BatchNorm2d with act/drop children) is a norm layer and a single layer."""
    from timm.layers import BatchNormAct2d

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = BatchNormAct2d(4)
            self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4, affine=False))
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.block(self.bn(self.stem(x))).mean((2, 3)))

    m = fake_train(Net())
    us = units(m, "block", example=IMG8)
    assert [u.name for u in us] == ["stem+bn", "block", "head"]
    assert "block.1.running_mean" in [n for n, _ in us[1].buffers]  # affine-free BN: part of its block
    _, mk = last(randomized(m, "cascading", example=IMG8, granularity="block"))
    assert torch.equal(mk.bn.weight, torch.ones(4)) and torch.equal(mk.bn.running_var, torch.ones(4))
    assert torch.equal(mk.block[1].running_mean, torch.zeros(4))
    _, mk = last(randomized(m, "cascading", example=IMG8))  # module granularity: no unit owns block.1
    assert torch.equal(mk.block[1].running_mean, m.block[1].running_mean)


@pytest.mark.parametrize("name", ["paper_mlp", "small_cnn"])
@pytest.mark.parametrize("granularity", ["module", "block"])
def test_partition_bench_models(name, granularity):
    m = create_model(name, (1, 28, 28), 10)
    us = units(m, granularity, example=torch.zeros(1, 1, 28, 28))
    check_partition(m, us)
    linear_like = [n for n, mod in m.named_modules() if isinstance(mod, (nn.Linear, nn.Conv2d))]
    assert [u.name for u in us] == linear_like  # plain stacks: one unit per layer at both granularities


def test_check_partition_names_the_problem():
    m = Scrambled()
    us = units(m, example=X4)
    with pytest.raises(ValueError, match="missing.*first.weight"):
        check_partition(m, us[1:])
    with pytest.raises(ValueError, match="several units.*scale"):
        check_partition(m, us + [us[1]])
    with pytest.raises(ValueError, match="not parameters of this model"):
        check_partition(Scrambled(), us)


def test_units_leaves_model_alone():
    m = fake_train(bn_net()).train()
    m[1].eval()
    before = state(m)
    units(m, "block", example=IMG8)
    assert m.training and not m[1].training
    assert all(torch.equal(before[n], t) for n, t in m.state_dict().items())
    assert not m._forward_pre_hooks and not any(mod._forward_pre_hooks for mod in m.modules())


# ---------------------------------------------------------------------------------- stage contents


@pytest.mark.parametrize("mode", ["cascading", "bottom_up", "independent"])
def test_stage_contents(mode):
    m = fake_train(bn_net())
    ref = state(m)
    us = units(m, example=IMG8)
    seen = []
    for k, (name, mk) in enumerate(randomized(m, mode, example=IMG8)):
        if mode == "cascading":
            expect = us[len(us) - 1 - k :]
        elif mode == "bottom_up":
            expect = us[: k + 1]
        else:
            expect = [us[k]]
        assert name == expect[0 if mode != "bottom_up" else -1].name
        assert changed_params(mk, ref) == {n for u in expect for n in u.param_names}
        assert not mk.training
        seen.append(mk)
    assert len(seen) == len(us) and all(s is seen[0] for s in seen)  # one working copy, changed in place
    assert all(torch.equal(ref[n], t) for n, t in m.state_dict().items())  # trained model untouched
    if mode == "independent":  # the last unit was restored too
        assert all(torch.equal(ref[n], t) for n, t in seen[0].state_dict().items())


def test_cascading_outputs_change_and_blocks_on_timm():
    m = fake_train(timm.create_model("resnet18", pretrained=False, num_classes=10))
    ref = state(m)
    with torch.no_grad():
        y0 = m(IMG32)
    prev = y0
    names = []
    for name, mk in randomized(m, "cascading", example=IMG32, granularity="block"):
        with torch.no_grad():
            y = mk(IMG32)
        assert not torch.allclose(y, prev), name
        prev = y
        names.append(name)
    assert names[0] == "fc" and names[-1] == "conv1+bn1" and len(names) == 10
    assert all(torch.equal(ref[n], t) for n, t in m.state_dict().items())


@pytest.mark.parametrize("granularity", ["module", "block"])
def test_vit_cascade_randomizes_every_parameter(granularity):
    m = fake_train(small_vit(depth=2))
    ref = state(m)
    _, mk = last(randomized(m, "cascading", example=IMG32, granularity=granularity))
    assert changed_params(mk, ref) == {n for n, _ in m.named_parameters()}
    with torch.no_grad():
        assert not torch.allclose(mk(IMG32), m(IMG32))


def test_stage_selection():
    m = fake_train(bn_net())
    ref = state(m)
    us = units(m, example=IMG8)
    assert [n for n, _ in randomized(m, "cascading", example=IMG8, stages=2)] == [us[-1].name, us[-2].name]
    out = list(randomized(m, "cascading", example=IMG8, stages=[us[1].name]))
    assert [n for n, _ in out] == [us[1].name]
    assert changed_params(out[0][1], ref) == {n for u in us[1:] for n in u.param_names}
    with pytest.raises(ValueError, match="unknown stages"):
        list(randomized(m, "independent", example=IMG8, stages=["nope"]))
    with pytest.raises(ValueError, match="mode"):
        list(randomized(m, "top_down", example=IMG8))


# ------------------------------------------------------------------------------------ initializers


def final_state(model, **kw) -> dict[str, torch.Tensor]:
    return state(last(randomized(model, "cascading", example=kw.pop("example", X4), **kw))[1])


def test_same_shaped_layers_differ_and_seeds_reproduce():
    m = fake_train(create_model("paper_mlp", (1, 4, 4), 10, hidden=16))  # layers 3 and 5: 16 x 16
    x = torch.zeros(1, 1, 4, 4)
    a = final_state(m, example=x, seed=0)
    assert a["3.weight"].shape == a["5.weight"].shape and not torch.equal(a["3.weight"], a["5.weight"])
    assert not torch.equal(a["3.bias"], a["5.bias"])
    b = final_state(m, example=x, seed=0)
    c = final_state(m, example=x, seed=1)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert all(not torch.equal(a[n], c[n]) for n in a)
    # per-layer seeds: independent randomization draws the same weights as the cascade
    for name, mk in randomized(m, "independent", example=x, seed=0):
        assert torch.equal(mk.get_parameter(f"{name}.weight"), a[f"{name}.weight"])


def test_unit_seed_is_stable_and_distinct():
    assert unit_seed(0, "fc") == unit_seed(0, "fc") == 9105456053268766760
    assert len({unit_seed(s, n) for s in (0, 1) for n in ("fc", "fc1", "layer1.0")}) == 6


def test_default_init_follows_layer_semantics():
    m = fake_train(nn.Sequential(nn.Linear(64, 32), nn.LayerNorm(32), nn.Linear(32, 3)))
    x = _randn(2, 64, seed=4)
    s = final_state(m, example=x)
    bound = 1 / 64**0.5
    assert s["0.weight"].abs().max() <= bound and s["0.bias"].abs().max() <= bound
    assert s["0.weight"].std() > 0.5 * bound / 3**0.5  # uniform spread, not a constant
    assert torch.equal(s["1.weight"], torch.ones(32)) and torch.equal(s["1.bias"], torch.zeros(32))


def test_normal_uniform_and_custom_init():
    m = fake_train(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3)))
    x = _randn(2, 64, seed=4)
    s = final_state(m, example=x, init="normal:0.01")
    assert abs(float(s["0.weight"].std()) - 0.01) < 1e-3 and abs(float(s["0.weight"].mean())) < 1e-3
    s = final_state(m, example=x, init="uniform:0.2")
    assert s["0.weight"].abs().max() <= 0.2 and s["0.weight"].abs().max() > 0.15
    s = final_state(m, example=x, init=lambda name, buf, gen: buf.fill_(0.5))
    assert all(torch.all(t == 0.5) for t in s.values())
    with pytest.raises(ValueError, match="init"):
        final_state(m, example=x, init="xavier")


# --------------------------------------------------------------------------------- norm statistics


@pytest.mark.parametrize("reset", [True, False])
def test_batchnorm_statistics(reset):
    m = fake_train(bn_net())
    ref = state(m)
    name, mk = last(randomized(m, "bottom_up", example=IMG8, reset_norm_stats=reset, stages=["1"]))
    assert name == "1"
    bn, bn_ref = mk[1], {k[2:]: v for k, v in ref.items() if k.startswith("1.")}
    if reset:
        assert torch.equal(bn.running_mean, torch.zeros(4)) and torch.equal(bn.running_var, torch.ones(4))
        assert int(bn.num_batches_tracked) == 0
    else:
        assert torch.equal(bn.running_mean, bn_ref["running_mean"])
        assert torch.equal(bn.running_var, bn_ref["running_var"])
    assert torch.equal(mk[4].running_mean, ref["4.running_mean"])  # a BN not yet randomized keeps its stats
    assert torch.equal(bn.weight, torch.ones(4)) and torch.equal(bn.bias, torch.zeros(4))


# ----------------------------------------------------------------------------------- premise checks


def test_premise_fires_on_noop_init():
    m = fake_train(bn_net())
    with pytest.raises(RuntimeError, match=r"unit '7'.*'7.weight'.*max \|randomized - trained\| = 0"):
        list(randomized(m, "cascading", example=IMG8, init=lambda name, buf, gen: None))


def test_premise_fires_when_default_init_changes_nothing(monkeypatch):
    m = fake_train(bn_net())
    monkeypatch.setattr("bench.randomization.reinit._init_default", lambda module, mname, own, gen: None)
    with pytest.raises(RuntimeError, match="unit '7'"):
        next(randomized(m, "independent", example=IMG8, stages=["7"]))
    # an untrained LayerNorm already holds its initial values: resetting it is no randomization
    fresh = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="unit '1'.*'1.weight'"):
        list(randomized(fresh, "cascading", example=X4))


def test_trained_model_change_is_detected():
    m = fake_train(bn_net())
    with pytest.raises(RuntimeError, match="trained model changed"):
        for _ in randomized(m, "cascading", example=IMG8):
            with torch.no_grad():
                m[0].weight.add_(1.0)
    gen = randomized(m, "cascading", example=IMG8)  # closing early still checks (and passes)
    next(gen)
    gen.close()


@pytest.mark.gpu
def test_cuda_draws_equal_cpu_draws():
    m = fake_train(bn_net())
    a = final_state(m, example=IMG8)
    b = final_state(m.cuda(), example=IMG8)
    assert all(torch.equal(a[n], b[n].cpu()) for n in a)


# ------------------------------------------------------------------------------ data randomization


def test_permuted_labels():
    y = torch.arange(100) % 10
    a, b, c = permuted_labels(y, 0), permuted_labels(y, 0), permuted_labels(y, 1)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, y)
    assert torch.equal(a.sort().values, y.sort().values) and a.dtype == y.dtype
