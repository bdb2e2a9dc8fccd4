"""Parity with Quantus 0.6 ``MPRT``: the same per-sample Spearman scores when both see the same weights.

The claim (README, ``benchmarks/randomization.md``): our cascading model-randomization test gives the same
Spearman scores as ``quantus.MPRT`` (0.6; ``layer_order="top_down"``, ``abs=False, normalise=False``: the raw maps)
to about 1e-16 in float64, once both re-initialize to the same weights. The two draw their random weights
differently on purpose (Quantus: ``torch.manual_seed(seed + 1)`` then ``module.reset_parameters()`` before every
layer; ours: a private generator per unit), so the test gives our cascade an ``init`` that draws exactly what
Quantus draws on the CPU (:func:`quantus_like_init`). Both explain with the same gradient explainer, for the
trained model's predicted classes, on the same inputs, in one batch; ours keeps every map (``keep_maps=n``) and
:func:`metrics.spearman` scores them in float64 against the trained model's map.

Needs Quantus (an optional extra): skipped where it is not installed. quantus 0.6 imports OpenCV (``cv2``) at
import time for perturbations that ``MPRT`` never calls; without OpenCV an empty stand-in module is registered for
the import only. Run with::

    pip install --no-deps --target /tmp/quantus_pkgs 'quantus>=0.6,<0.7'
    PYTHONPATH=/tmp/quantus_pkgs pytest tests/test_quantus_parity.py -m slow

A small untrained ``paper_mlp`` is enough: the claim is about identical weights, not about training. Quantus
re-seeds torch's global RNG; the test runs inside ``torch.random.fork_rng`` so the other tests do not see it.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import types
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import methods
import metrics
from bench.core.data import load_dataset
from bench.core.models import create_model
from bench.core.settings import RunSettings, ScoreSettings
from bench.experiments.model_randomization import RandomizationSpec, model_randomization

QUANTUS_SEED = 42  # quantus.MPRT's default seed
N_SAMPLES = 8
TOLERANCE = 1e-12  # measured: 1.1e-16 (float64 rounding of the same ranks)


def import_quantus() -> types.ModuleType:
    """``quantus`` 0.6, or skip the test. When OpenCV is missing, an empty ``cv2`` module stands in during the
    import only (``MPRT`` never uses it) and is removed again from ``sys.modules`` afterwards."""
    stub = importlib.util.find_spec("cv2") is None
    if stub:
        sys.modules["cv2"] = types.ModuleType("cv2")
    try:
        quantus = pytest.importorskip("quantus", reason="quantus is not installed (pip install 'quantus>=0.6,<0.7')")
    finally:
        if stub:
            sys.modules.pop("cv2", None)
    if not str(getattr(quantus, "__version__", "")).startswith("0.6."):
        pytest.skip(f"the parity claim is about quantus 0.6, found {getattr(quantus, '__version__', '?')}")
    return quantus


def quantus_like_init(model: nn.Module, seed: int = QUANTUS_SEED) -> Callable[[str, Tensor, torch.Generator], None]:
    """An ``init`` for :func:`bench.randomization.randomized` that draws exactly what quantus 0.6 draws on the CPU:
    ``torch.manual_seed(seed + 1)`` then the owning module's ``reset_parameters()`` (on a CPU copy of the module,
    inside ``fork_rng`` so the global RNG is left alone); ``buf`` receives the parameter ``name``'s new value."""
    mods = dict(model.named_modules())

    def init(name: str, buf: Tensor, _gen: torch.Generator) -> None:
        mname, _, pname = name.rpartition(".")
        clone = copy.deepcopy(mods[mname]).to("cpu")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            clone.reset_parameters()
        buf.copy_(getattr(clone, pname).detach())

    return init


class RecordingExplain:
    """Quantus ``explain_func``: numpy in, ``methods.create("gradient", model)``, numpy out; keeps every map."""

    def __init__(self) -> None:
        self.maps: list[np.ndarray] = []

    def __call__(self, model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_kw) -> np.ndarray:
        x, y = torch.from_numpy(np.ascontiguousarray(inputs)), torch.as_tensor(targets)
        out = methods.create("gradient", model)(x, y).detach().cpu().numpy()
        self.maps.append(out.copy())
        return out


@pytest.mark.slow
def test_cascading_spearman_matches_quantus_mprt_for_the_same_weights():
    quantus = import_quantus()
    from quantus.functions.similarity_func import correlation_spearman

    data = load_dataset("mnist_bundled")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model("paper_mlp", tuple(data.x_test.shape[1:]), data.num_classes).eval()
        x = data.x_test[:N_SAMPLES]
        with torch.no_grad():
            target = model(x).argmax(1)  # ours explains the trained model's predictions: give Quantus the same

        explain = RecordingExplain()
        mprt = quantus.MPRT(similarity_func=correlation_spearman, layer_order="top_down", seed=QUANTUS_SEED,
                            abs=False, normalise=False, disable_warnings=True, display_progressbar=False)
        theirs = mprt(model, x.numpy(), target.numpy(), explain_func=explain, batch_size=N_SAMPLES, device="cpu")

        ours = model_randomization(
            model, data, ["gradient"], RandomizationSpec(mode="cascading", init=quantus_like_init(model)),
            run=RunSettings(n_samples=N_SAMPLES, batch_size=N_SAMPLES, keep_maps=N_SAMPLES),
            scoring=ScoreSettings(names=["spearman"]), model_name="paper_mlp")

    stages = [k for k in theirs if k != "original"]
    assert ours.stages == stages, "both randomize the same layers, top down"
    maps = ours.maps["gradient"]
    assert len(maps) == len(stages) + 1
    # Quantus explains the trained model twice (a_batch, then its "original" entry), then once per stage
    assert len(explain.maps) == len(stages) + 2
    np.testing.assert_array_equal(maps[0].numpy(), explain.maps[0], err_msg="map of the trained model")
    for k, stage in enumerate(stages, start=1):  # the same weights give the same maps...
        np.testing.assert_array_equal(maps[k].numpy(), explain.maps[k + 1], err_msg=f"map at stage {stage}")
    ref = maps[0].double()
    for k, stage in enumerate(stages, start=1):  # ...and the same Spearman scores, sample by sample
        ours_scores = metrics.spearman(ref, maps[k].double()).numpy()
        np.testing.assert_allclose(ours_scores, np.asarray(theirs[stage], dtype=np.float64), rtol=0,
                                   atol=TOLERANCE, equal_nan=True, err_msg=f"Spearman at stage {stage}")
