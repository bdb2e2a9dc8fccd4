"""VarGrad and SmoothGrad-Squared (SmoothGrad's ``variance`` / ``squared`` statistics) against closed forms.

On an affine model the gradient does not depend on the input, so VarGrad is exactly 0 and SmoothGrad-Squared is the
squared weight. On ``f_c(x) = sum(w_c * x ** 2)`` the gradient ``2 w_c (x + sigma e_i)`` of noisy copy ``i`` is
known, so both statistics have closed forms in the very draws ``e_i`` the method makes (SmoothGrad's convention:
``sigma = 0.15 (max x - min x)`` per sample, draw ``i`` the ``i``-th ``randn`` shaped like the batch of a CPU
generator seeded with ``seed``): the mean of ``(2 w (x + sigma e_i)) ** 2`` and ``4 w ** 2 sigma ** 2 var_i(e_i)``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

import methods
from bench.core import cost
from bench.core.explain import make_explainer, method_specs, names_keyword
from methods.gradients import SmoothGrad

SHAPE = (1, 4, 4)
CONF = Path(__file__).resolve().parents[1] / "conf" / "method"


class Quadratic(nn.Module):
    """``f_c(x) = sum_j W[c, j] x_j ** 2``: gradient ``2 W_c x``."""

    def __init__(self, features: int, classes: int = 3, seed: int = 0, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(classes, features, generator=g).to(dtype))

    def forward(self, x: Tensor) -> Tensor:
        return (x.flatten(1) ** 2) @ self.weight.T


def _draws(x: Tensor, n: int, seed: int) -> Tensor:
    """The method's standard-normal draws: ``[n, *x.shape]``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn(x.shape, generator=gen, dtype=x.dtype) for _ in range(n)])


def _sigma(x: Tensor, level: float = 0.15) -> Tensor:
    flat = x.flatten(1)
    return (level * (flat.amax(1) - flat.amin(1))).view(-1, 1, 1, 1)


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture
def quadratic_case(images):
    def make(dtype: torch.dtype = torch.float64, n: int = 7, seed: int = 3):
        x = images(4, SHAPE, dtype=dtype)
        model = Quadratic(x[0].numel(), dtype=dtype)
        target = torch.tensor([0, 1, 2, 1])
        w = model.weight.detach()[target].view(-1, *SHAPE).double()
        e = _draws(x, n, seed).double()
        sigma, xd = _sigma(x).double(), x.double()
        mean_square = (4 * w**2 * (xd + sigma * e) ** 2).mean(0)
        variance = 4 * w**2 * sigma**2 * ((e - e.mean(0)) ** 2).mean(0)  # the draws' own (1/n) variance
        return model, x, target, mean_square, variance

    return make


# ------------------------------------------------------------------ closed forms


def test_affine_model_vargrad_is_exactly_zero_and_squared_is_w_squared(images, linear) -> None:
    model = linear(shape=SHAPE)
    x = images(4, SHAPE)
    target = torch.tensor([0, 1, 2, 0])
    w = model[1].weight.detach()[target].view(-1, *SHAPE)
    var = methods.create("vargrad", model, n=6)(x, target)
    assert torch.equal(var, torch.zeros_like(x))  # Welford: a constant map has no spread at all
    sq = methods.create("smoothgrad_squared", model, n=6)(x, target)
    torch.testing.assert_close(sq, w * w, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-6), (torch.float32, 1e-5)])
def test_quadratic_model_matches_the_moments_of_the_draws(dtype: torch.dtype, tol: float, quadratic_case) -> None:
    model, x, target, mean_square, variance = quadratic_case(dtype, n=7, seed=3)
    var = methods.create("vargrad", model, n=7, seed=3)(x, target)
    sq = methods.create("smoothgrad_squared", model, n=7, seed=3)(x, target)
    assert var.dtype == sq.dtype == dtype
    assert _rel(var.double(), variance) < tol
    assert _rel(sq.double(), mean_square) < tol
    # the two statistics are different numbers here (the gradient moves with the noise)
    assert _rel(var.double(), mean_square) > 0.1


def test_vargrad_is_the_variance_not_the_second_moment(quadratic_case) -> None:
    """n = 1: one draw has no spread; the mean of squares is its square."""
    model, x, target, mean_square, _ = quadratic_case(n=1, seed=0)
    assert torch.equal(methods.create("vargrad", model, n=1)(x, target), torch.zeros_like(x))
    assert _rel(methods.create("smoothgrad_squared", model, n=1)(x, target), mean_square) < 1e-12


def test_vargrad_is_chunk_free_and_seeded(quadratic_case) -> None:
    model, x, target, _, variance = quadratic_case(n=9, seed=5)
    maps = [methods.create("vargrad", model, n=9, seed=5, chunk=c)(x, target) for c in (1, 4, 8, 256)]
    for m in maps[1:]:
        torch.testing.assert_close(m, maps[0], rtol=1e-12, atol=0)
    assert _rel(maps[0], variance) < 1e-10
    other = methods.create("vargrad", model, n=9, seed=6)(x, target)
    assert _rel(other, variance) > 1e-3


def test_noise_convention_is_smoothgrads(quadratic_case) -> None:
    """noise_level, noise_scale and sigma mean what they mean for SmoothGrad (here: a fixed sigma of 0.05)."""
    model, x, target, _, _ = quadratic_case(n=5, seed=0)
    e = _draws(x, 5, 0)
    w = model.weight.detach()[target].view(-1, *SHAPE)
    expected = 4 * w**2 * 0.05**2 * ((e - e.mean(0)) ** 2).mean(0)
    out = methods.create("vargrad", model, n=5, sigma=0.05)(x, target)
    assert _rel(out, expected) < 1e-10
    half = methods.create("vargrad", model, n=5, noise_level=0.075)(x, target)
    full = methods.create("vargrad", model, n=5)(x, target)
    assert _rel(4 * half, full) < 1e-10  # variance scales with sigma ** 2


# ------------------------------------------------------------------ one mechanism: SmoothGrad's statistics


def test_registered_names_are_smoothgrad_with_a_statistic(quadratic_case) -> None:
    model, x, target, _, _ = quadratic_case(n=4)
    sq = methods.create("smoothgrad_squared", model, n=4)
    var = methods.create("vargrad", model, n=4)
    assert type(sq) is type(var) is SmoothGrad
    assert sq.squared and not sq.variance and var.variance and not var.squared
    assert torch.equal(sq(x, target), SmoothGrad(model, n=4, squared=True)(x, target))
    assert torch.equal(var(x, target), SmoothGrad(model, n=4, variance=True)(x, target))
    assert repr(var).startswith("VarGrad(") and repr(sq).startswith("SmoothGradSquared(")


def test_errors(linear) -> None:
    model = linear(shape=SHAPE)
    with pytest.raises(ValueError, match="pick one"):
        methods.create("vargrad", model, squared=True)
    with pytest.raises(ValueError, match="pick one"):
        SmoothGrad(model, squared=True, variance=True)
    for base in ("smoothgrad", "vargrad", "smoothgrad_squared"):
        with pytest.raises(ValueError, match="pick another base"):
            methods.create("vargrad", model, base=base)


def test_other_base_methods(images, linear) -> None:
    """VarGrad of Gradient x Input on an affine model: ``w * (x + sigma e)`` varies as ``w ** 2 sigma ** 2 var(e)``."""
    model = linear(shape=SHAPE).double()
    x = images(2, SHAPE, dtype=torch.float64)
    e = _draws(x, 6, 0)
    w = model[1].weight.detach()[1].view(*SHAPE)
    out = methods.create("vargrad", model, n=6, base="gradient_x_input", sigma=0.1)(x, 1)
    assert _rel(out, w**2 * 0.01 * ((e - e.mean(0)) ** 2).mean(0)) < 1e-10


# ------------------------------------------------------------------ the harness sees SmoothGrad's signature


@pytest.mark.parametrize("name", ["vargrad", "smoothgrad_squared"])
def test_harness_reads_the_parameters(name: str, images) -> None:
    factory = methods.get_factory(name)
    assert isinstance(factory, functools.partial)
    # the cost model multiplies by n (default 50); the invariance harness hands the twin its sigma
    spec = method_specs([name])[0]
    assert cost.passes_per_map(spec) == 50
    assert cost.passes_per_map(method_specs({name: {"name": name, "params": {"n": 7}}})[0]) == 7
    assert names_keyword(factory, "sigma") and names_keyword(factory, "n")


@pytest.mark.parametrize("name", ["vargrad", "smoothgrad_squared"])
def test_config_files(name: str, images, linear) -> None:
    conf = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    assert list(conf) == [name] and conf[name]["name"] == name
    assert conf[name]["params"] == {"base": "gradient", "n": 50, "noise_level": 0.15}
    (spec,) = method_specs(conf)
    model = linear(shape=SHAPE)
    explainer = make_explainer(spec, model, domain=(0.0, 1.0))
    assert isinstance(explainer, SmoothGrad) and explainer.n == 50
    assert explainer.variance == (name == "vargrad") and explainer.squared == (name == "smoothgrad_squared")


def test_vargrad_is_invariant_to_a_mean_shift(images, mlp, twin) -> None:
    """The gradient is invariant under the twin construction, so is its variance (same sigma: the range of each
    input is unchanged by a constant shift; same draws)."""
    f1 = mlp(dtype=torch.float64)
    f2 = twin(f1, -1.0)
    x = images(3, (1, 6, 6), dtype=torch.float64)
    a = methods.create("vargrad", f1, n=5)(x, 2)
    b = methods.create("vargrad", f2, n=5)(x - 1.0, 2)
    assert float(a.abs().max()) > 0
    assert _rel(b, a) < 1e-8
