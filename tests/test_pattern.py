"""PatternNet / PatternAttribution (methods/pattern.py) against closed forms and naive references."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import methods
from bench.core.models import create_model
from methods.pattern import NotFittedError, PatternExplainer, StalePatternsError

NAMES = ["pattern_net", "pattern_attribution"]


def _mlp(dtype: torch.dtype = torch.float32, seed: int = 0, side: int = 8, hidden: int = 32) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("paper_mlp", (1, side, side), 10, hidden=hidden).to(dtype).eval()


def _cnn(dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("small_cnn", (1, 12, 12), 10, channels=(4, 8), hidden=16).to(dtype).eval()


def _images(n: int, side: int, dtype: torch.dtype = torch.float32, seed: int = 1) -> Tensor:
    """Correlated images in [0, 1]: a few smooth random components plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    basis = F.interpolate(torch.rand(4, 1, 3, 3, generator=g), size=(side, side), mode="bilinear")
    coef = torch.rand(n, 4, 1, 1, 1, generator=g)
    x = (coef * basis).sum(1) / 2 + 0.2 * torch.rand(n, 1, side, side, generator=g)
    return x.clamp(0, 1).to(dtype)


def _rel(a: Tensor, b: Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300))


def _logit_times_grad(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    xg = x.detach().requires_grad_(True)
    out = model(xg).gather(1, target[:, None])
    (g,) = torch.autograd.grad(out.sum(), xg)
    return g * out.detach().reshape(-1, *[1] * (x.ndim - 1))


# ---------------------------------------------------------------- (1) known signal direction
def test_linear_signal_direction_recovered() -> None:
    g = torch.Generator().manual_seed(0)
    D, N = 6, 400_000
    s, d = F.normalize(torch.randn(2, D, generator=g, dtype=torch.float64), dim=1)
    W = torch.randn(2, D, generator=g, dtype=torch.float64)
    W -= torch.outer(W @ d, d)  # the filters cancel the distractor: w^T d = 0
    W /= (W @ s)[:, None] / torch.tensor([[1.0], [-0.5]], dtype=torch.float64)  # w^T s = 1, -0.5
    y, eps = torch.randn(2, N, 1, generator=g, dtype=torch.float64)  # signal, distractor amplitude
    x = y * s + 1.5 * eps * d
    model = nn.Sequential(nn.Linear(D, 2)).double()
    with torch.no_grad():
        model[0].weight.copy_(W)
        model[0].bias.copy_(torch.tensor([0.3, -0.2]))
    pn = methods.create("pattern_net", model).fit(x.split(50_000))
    pa = methods.create("pattern_attribution", model).fit([x])
    A = pn.patterns["0"]
    expected = s[None, :] / (W @ s)[:, None]
    err = float((A - expected).abs().max())
    print(f"pattern error vs s/(w^T s): {err:.2e} (|a| max {float(expected.abs().max()):.2f})")
    assert err < 0.01
    torch.testing.assert_close(pa.patterns["0"], A, rtol=1e-12, atol=0)  # one batch vs 20
    xt, logits = x[:5], model(x[:5]).detach()
    for k in range(2):
        t = torch.full((5,), k)
        pn_map, pa_map = pn(xt, t), pa(xt, t)
        e_pn = _rel(pn_map, A[k] * logits[:, k:k + 1])
        e_pa = _rel(pa_map, W[k] * A[k] * logits[:, k:k + 1])
        print(f"class {k}: PatternNet vs a*f {e_pn:.1e}, PatternAttribution vs w*a*f {e_pa:.1e}")
        assert e_pn < 1e-12 and e_pa < 1e-12
    # the gradient (the filter w) is not the signal direction; the pattern is
    cos_w = float(F.cosine_similarity(W[0], s, dim=0).abs())
    cos_a = float(F.cosine_similarity(A[0], s, dim=0).abs())
    assert cos_a > 0.9999 and cos_w < 0.99


# ---------------------------------------------------------------- (2) patterns = weights gives the gradient
def _pool_net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.MaxPool2d(2)),
                         nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 5)).eval()


@pytest.mark.parametrize("net", ["mlp", "cnn", "pool"])
def test_patterns_equal_weights_give_gradient(net: str) -> None:
    model = {"mlp": _mlp, "cnn": _cnn, "pool": _pool_net}[net]()
    x = _images(16, 8 if net == "mlp" else 12)
    target = model(x).argmax(1)
    ref = _logit_times_grad(model, x, target)
    kernels = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    pn = methods.create("pattern_net", model).load_patterns({n: m.weight.detach() for n, m in kernels})
    pa = methods.create("pattern_attribution", model).load_patterns(
        {n: torch.ones_like(m.weight) for n, m in kernels})
    e_pn, e_pa = _rel(pn(x, target), ref), _rel(pa(x, target), ref)
    print(f"{net}: PatternNet(A=W) vs logit*grad {e_pn:.1e}; PatternAttribution(A=1) {e_pa:.1e}")
    assert e_pn < 1e-6 and e_pa < 1e-6


# ---------------------------------------------------------------- (3) bias-compensated input shift
def _shifted_twin(model: nn.Module, m: Tensor) -> nn.Module:
    """f2(x + m) == f(x): the first Linear's bias absorbs the shift (b2 = b1 - W m)."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin[1].bias -= twin[1].weight @ m.reshape(-1)
    return twin


@pytest.mark.parametrize("shift", ["mean", "checker"])
def test_shift_invariance_by_estimator(shift: str) -> None:
    model = _mlp(torch.float64, hidden=48)
    x, xt = _images(512, 8, torch.float64), _images(16, 8, torch.float64, seed=7)
    if shift == "mean":
        m = torch.full((1, 8, 8), -1.0, dtype=torch.float64)
    else:
        m = ((torch.arange(8)[:, None] + torch.arange(8)) % 2).to(torch.float64)[None] * 0.6 - 0.3
    twin = _shifted_twin(model, m)
    assert _rel(twin(xt + m), model(xt)) < 1e-12
    for est in ["linear", "relu", "relu_paper"]:
        pn1 = methods.create("pattern_net", model, estimator=est).fit([x])
        pn2 = methods.create("pattern_net", twin, estimator=est).fit([x + m])
        pa1 = methods.create("pattern_attribution", model).load_patterns(pn1.patterns)
        pa2 = methods.create("pattern_attribution", twin).load_patterns(pn2.patterns)
        for name, e1, e2 in (("pattern_net", pn1, pn2), ("pattern_attribution", pa1, pa2)):
            p_err = max(_rel(e2.patterns[k], e1.patterns[k]) for k in e1.patterns)
            a1, a2 = e1(xt), e2(xt + m)
            map_err = _rel(a2, a1)
            cos = float(F.cosine_similarity(a1.flatten(1), a2.flatten(1)).mean())
            print(f"{shift} {est:10s} {name:19s}: pattern rel {p_err:.1e}, map rel {map_err:.1e}, "
                  f"cos {cos:.3f}")
            if est == "relu_paper":
                assert p_err > 1e-2 and map_err > 1e-2  # the estimator as printed is not invariant
            else:
                assert p_err < 1e-10 and map_err < 1e-10


# ---------------------------------------------------------------- (4) conv statistics vs naive loops
def _naive_conv_sums(conv: nn.Conv2d, x: Tensor, y: Tensor, relu: bool) -> dict[str, Tensor]:
    ph, pw = conv.padding
    if conv.padding_mode == "zeros":
        xp = torch.zeros(x.shape[0], x.shape[1], x.shape[2] + 2 * ph, x.shape[3] + 2 * pw, dtype=x.dtype)
        xp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = x
    else:
        xp = F.pad(x, (pw, pw, ph, ph), mode=conv.padding_mode)
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    K, D = conv.out_channels, conv.weight[0].numel()
    sums = {k: torch.zeros(D, K, dtype=torch.float64) for k in ("sxy", "sxp", "sxyp")}
    sums.update({k: torch.zeros(K, dtype=torch.float64) for k in ("sy", "syy", "npos", "syp", "syyp")})
    sums["sx"] = torch.zeros(D, dtype=torch.float64)
    n = 0
    for b in range(x.shape[0]):
        for i in range(y.shape[2]):
            for j in range(y.shape[3]):
                patch = xp[b, :, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw]
                xv, yv = patch.reshape(-1).double(), y[b, :, i, j].double()
                assert torch.allclose(conv.weight.double().reshape(K, -1) @ xv + conv.bias.double(), yv)
                pos = (yv > 0).double()
                n += 1
                sums["sx"] += xv
                sums["sy"] += yv
                sums["syy"] += yv * yv
                sums["sxy"] += torch.outer(xv, yv)
                sums["npos"] += pos
                sums["syp"] += yv * pos
                sums["syyp"] += yv * yv * pos
                sums["sxp"] += torch.outer(xv, pos)
                sums["sxyp"] += torch.outer(xv, yv * pos)
    keys = ("sx", "sxy", "syy") if not relu else ("npos", "sxp", "syp", "syyp", "sxyp")
    return {"n": n, "sy": sums["sy"], **{k: sums[k] for k in keys}}


def test_conv_statistics_match_naive_per_position() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(3, 2, (2, 3), dilation=(1, 2), padding=1, padding_mode="reflect"),
        nn.Flatten(), nn.Linear(2 * 5 * 2, 3)).double()
    x = torch.randn(3, 2, 7, 7, dtype=torch.float64)
    io: dict[str, tuple[Tensor, Tensor]] = {}
    hooks = [model[i].register_forward_hook(lambda mod, a, o, i=i: io.__setitem__(str(i), (a[0], o)))
             for i in (0, 2)]
    model(x)
    for h in hooks:
        h.remove()
    e = PatternExplainer(model, attribution=False, chunk_elements=50).fit([x[:2], (x[2:], None)])
    assert e.layer_estimators == {"0": "relu", "2": "linear", "4": "linear"}
    worst = 0.0
    for name, relu in (("0", True), ("2", False)):
        ref = _naive_conv_sums(model[int(name)], *io[name], relu=relu)
        assert e.stats[name]["n"] == ref["n"] == e.n_samples[name]
        assert set(e.stats[name]) == set(ref)
        for key, val in ref.items():
            if key != "n":
                worst = max(worst, _rel(e.stats[name][key], val))
    print(f"unfold vs naive per-position sums: max rel err {worst:.1e}")
    assert worst < 1e-12


# ---------------------------------------------------------------- (5) chunking and batching
@pytest.mark.parametrize("estimator", ["linear", "relu", "relu_paper"])
def test_chunked_equals_unchunked(estimator: str) -> None:
    model = _cnn(torch.float64)
    x = _images(24, 12, torch.float64)
    whole = methods.create("pattern_attribution", model, estimator=estimator).fit([x])
    tiny = methods.create("pattern_attribution", model, estimator=estimator, chunk_elements=1)
    tiny.fit(DataLoader(TensorDataset(x, torch.zeros(24)), batch_size=5))
    err = max(_rel(tiny.patterns[k], whole.patterns[k]) for k in whole.patterns)
    map_err = _rel(tiny(x[:4]), whole(x[:4]))
    print(f"{estimator}: chunked vs unchunked patterns {err:.1e}, maps {map_err:.1e}")
    assert tiny.n_samples == whole.n_samples and tiny.n_degenerate == whole.n_degenerate
    assert err < 1e-10 and map_err < 1e-10  # float64 sums in another order


# ---------------------------------------------------------------- (6) errors
def test_not_fit_and_stale_weights() -> None:
    model = _mlp()
    x = _images(64, 8)
    e = methods.create("pattern_attribution", model)
    assert e.needs_fit
    with pytest.raises(NotFittedError, match="fit"):
        e(x[:2])
    with pytest.raises(NotFittedError):
        _ = e.patterns
    e.fit(DataLoader(TensorDataset(x, torch.zeros(64, dtype=torch.long)), batch_size=16))
    ok = e(x[:2])
    state = copy.deepcopy(model.state_dict())

    def in_place() -> None:
        with torch.no_grad():
            model[3].weight.add_(1e-3)

    def via_data() -> None:  # .data bypasses the version counter
        model[5].weight.data.normal_()

    def shuffled() -> None:  # same values, permuted: only the neighbour-product sum changes
        model[7].weight.data = model[7].weight.data.flip(0)

    def reinit() -> None:
        torch.manual_seed(123)
        model.load_state_dict(create_model("paper_mlp", (1, 8, 8), 10, hidden=32).state_dict())

    for change in (in_place, via_data, shuffled, reinit):
        change()
        with pytest.raises(StalePatternsError, match="fit"):
            e(x[:2])
        model.load_state_dict(state)
        torch.testing.assert_close(e(x[:2]), ok, rtol=0, atol=0)  # restored weights: fresh again
    reinit()
    e.fit([x])  # refit after a randomization works
    assert not torch.allclose(e(x[:2]), ok)


def test_unsupported_layers_raise() -> None:
    with pytest.raises(ValueError, match="BatchNorm2d.*has parameters"):
        PatternExplainer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                                       nn.Linear(2, 2)), attribution=False)
    with pytest.raises(ValueError, match="Tanh"):
        methods.create("pattern_net", nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)))

    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x: Tensor) -> Tensor:
            return F.relu(self.fc(x))

    with pytest.raises(ValueError, match="Custom"):
        methods.create("pattern_net", Custom())
    with pytest.raises(ValueError, match="groups"):
        methods.create("pattern_net", nn.Sequential(nn.Conv2d(2, 2, 1, groups=2)))
    with pytest.raises(ValueError, match="estimator"):
        methods.create("pattern_net", _mlp(), estimator="relu+")
    with pytest.raises(TypeError, match="loader"):
        methods.create("pattern_net", _mlp()).fit([{"x": torch.zeros(1, 1, 8, 8)}])


def test_degenerate_units_get_zero_patterns() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    with torch.no_grad():
        model[0].bias[0] = -1e3  # never positive: no sample for E+
        model[0].weight[1] = 0.0  # constant output: zero variance
        model[0].bias[1] = 1.0
    x = torch.randn(256, 4, dtype=torch.float64)
    e = methods.create("pattern_net", model).fit([x])
    assert e.n_degenerate == {"0": 2, "2": 0}
    assert (e.patterns["0"][:2] == 0).all() and (e.patterns["0"][2] != 0).all()
    assert torch.isfinite(e(x[:8])).all()


# ---------------------------------------------------------------- (7) contract
@pytest.mark.parametrize("name", NAMES)
def test_contract_shape_dtype_batch_mode_params(name: str) -> None:
    model = _pool_net().train()  # train mode with Dropout: the explainer evaluates, then restores the mode
    model[3].eval()  # mixed modes survive
    params = {k: p.detach().clone() for k, p in model.named_parameters()}
    x = _images(40, 12)
    e = methods.create(name, model, low=0.0, high=1.0).fit(DataLoader(TensorDataset(x), batch_size=16))
    assert model.training and not model[3].training and model[5].training
    xt = x[:6]
    out = e(xt)
    assert out.shape == xt.shape and out.dtype == xt.dtype and out.device == xt.device
    assert model.training and not model[3].training and model[5].training
    assert all(torch.equal(p, params[k]) for k, p in model.named_parameters())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    pred = model.eval()(xt).argmax(1)
    model.train()
    torch.testing.assert_close(e(xt, pred), out, rtol=0, atol=0)  # explicit = default target
    one = e(xt[2:3], int(pred[2]))
    assert one.shape == (1, 1, 12, 12)
    torch.testing.assert_close(one, out[2:3], rtol=1e-5, atol=1e-7)
    other = e(xt, 1)
    assert not torch.allclose(other, out) or bool((pred == 1).all())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name: str) -> None:
    model = _cnn(torch.float64)
    x = _images(32, 12, torch.float64)
    cpu = methods.create(name, model).fit([x])
    ref = cpu(x[:5])
    model.cuda()  # same values on another device: the CPU-fit patterns stay valid and follow the model
    moved = cpu(x[:5].cuda())
    assert moved.is_cuda and moved.dtype == torch.float64
    gpu = methods.create(name, model).fit([x.cuda()])
    out = gpu(x[:5].cuda())
    assert out.is_cuda and out.dtype == torch.float64
    err = max(_rel(gpu.patterns[k].cpu(), cpu.patterns[k]) for k in cpu.patterns)
    map_err = max(_rel(out.cpu(), ref), _rel(moved.cpu(), ref))
    print(f"{name}: CUDA vs CPU patterns {err:.1e}, maps {map_err:.1e}")
    assert err < 1e-9 and map_err < 1e-9
    with torch.no_grad():
        model[0].weight.mul_(2)
    with pytest.raises(StalePatternsError):
        gpu(x[:5].cuda())
