"""The cost model of a job: how many attribution passes each test needs, so that a sweep's cost can be predicted
before it is launched (``salbench --dry-run``).

A *pass* is one forward and one backward pass of one sample through the model (what Gradient costs). Per sample:

* a method's map costs :func:`passes_per_map` passes: 1 for Gradient, Guided Backprop, DeconvNet, Gradient x Input,
  Grad-CAM and the LRP/DTD rules (one modified backward pass each), ``n`` for SmoothGrad (50 by default), ``steps``
  for Integrated Gradients (50 by default); the smooth MPRT multiplies every map by its ``smooth_samples``;
* input invariance: ``1 + S`` maps per method for ``S`` shifts (the original network's map is computed once);
* model randomization: ``2 + K x seeds`` maps per method for ``K`` stages (the trained model's reference map and the
  repeatability control, then each stage of each re-initialization seed); the label test: ``3`` (reference,
  repeat, the permuted-label model) plus ``1`` for the retrained control's row; the reference (the model's own
  gradient, ``control:gradient``: one pass per map) is counted like one more method.

PatternNet/PatternAttribution add a fit over ``run.fit_samples`` training samples per network (forward passes);
the input-only controls and the other-sample floor (``control:other``, the reference maps paired anew) cost nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

__all__ = ["passes_per_map", "invariance_passes", "randomization_passes", "total", "MULTIPLIERS"]

#: the randomization tests' reference (:data:`bench.core.results.CONTROL_GRADIENT`): one gradient pass per map
REFERENCE = "control:gradient"
#: constructor parameters that multiply a method's passes (SmoothGrad's ``n``, Integrated Gradients' ``steps``)
MULTIPLIERS = ("n", "steps")


def passes_per_map(spec, input_shape: Sequence[int] | None = None, model=None) -> int:
    """Passes of one map of one sample for a :class:`~bench.core.explain.MethodSpec`: what the factory's own
    ``passes_per_map(params=..., model=..., input_shape=...)`` says where it has one (the library adapters: a
    perturbation method's forward passes, e.g. Occlusion's windows, Lime's samples, Score-CAM's channels, which need
    ``model``; ``input_shape``: one input's shape), else the product of its :data:`MULTIPLIERS` (the spec's
    ``params``, else the factory's defaults), 1 for single-pass methods."""
    params = dict(spec.params or {})
    own = getattr(spec.factory(), "passes_per_map", None)
    if callable(own):
        try:
            return int(own(params=params, model=model, input_shape=input_shape))
        except (TypeError, ValueError):  # needs the model or the input's shape, or another signature: the multipliers
            pass
    try:
        signature = inspect.signature(spec.factory())
        defaults = {k: p.default for k, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}
    except (TypeError, ValueError):
        defaults = {}
    passes = 1
    for key in MULTIPLIERS:
        value = params.get(key, defaults.get(key))
        if isinstance(value, int) and value > 0:
            passes *= value
    return passes


def invariance_passes(specs: Sequence, n_shifts: int, input_shape: Sequence[int] | None = None,
                      model=None) -> dict[str, int]:
    """``{method label: passes per sample}`` of the input-invariance test with ``n_shifts`` shifts (``input_shape``,
    ``model``: see :func:`passes_per_map`)."""
    return {s.label: passes_per_map(s, input_shape, model) * (1 + n_shifts) for s in specs}


def randomization_passes(specs: Sequence, mode: str, n_stages: int, seeds: int = 1, smooth_samples: int = 0,
                         input_shape: Sequence[int] | None = None, model=None) -> dict[str, int]:
    """``{method label: passes per sample}`` of one randomization test (``mode``) with ``n_stages`` stages and
    ``seeds`` re-initialization seeds (the label test has one stage and one seed), with the reference gradient as
    ``control:gradient``."""
    maps = 4 if mode == "labels" else 2 + n_stages * seeds
    smooth = max(1, int(smooth_samples))
    out = {s.label: passes_per_map(s, input_shape, model) * maps * smooth for s in specs}
    if out:
        out[REFERENCE] = maps * smooth
    return out


def total(per_sample: Mapping[str, int], n_samples: int) -> int:
    """Passes of a test over ``n_samples`` samples."""
    return sum(per_sample.values()) * n_samples
