"""pytorch-grad-cam's CAM methods behind the registry: ``methods.create("cam:<Class>", model, **params)``.

``pip install 'saliency-bench[cam]'`` (the ``grad-cam`` package, module ``pytorch_grad_cam``). :data:`CLASSES` lists the
classes that fit the call (``BaseCAM`` subclasses built as ``Class(model, target_layers, reshape_transform, ...)``);
:func:`supported` those the installed release has.

``factory("<Class>")(model, target_layers=None, normalize=False, eigen_smooth=False, **params)`` returns an
explainer ``explain(x, target=None)`` that returns the map as :class:`methods.cam.GradCAM` does: the CAM upsampled
(bilinear, ``align_corners=False``) to the input's ``H x W`` and repeated over the input channels, shaped like ``x``,
on ``x``'s device, in ``x``'s dtype. ``target_layers``: a module name (``model.named_modules()``), a list of names
(or the modules themselves); default: the layer our Grad-CAM uses (:func:`methods.cam.default_layer`, the activation
of the last convolution). ``params`` go to the class (``reshape_transform``, ``kernel``, ``k``, ...; ``batch_size`` of
``ScoreCAM`` is set as the attribute the class reads). ``target=None`` is the predicted class; each target is the
library's ``ClassifierOutputTarget``.

The raw CAM. The library min-max scales every layer's CAM per image (``scale_cam_image``) before upsampling it with
OpenCV and again after averaging the layers; that cannot be switched off in its ``__call__``. The adapter runs the
library's own pieces instead: its forward hooks (``ActivationsAndGradients``), the class's ``get_cam_image`` (its
weights and its sum over channels, the class's very code) and the library's ``relu``, and skips the scaling, so that
``cam:GradCAM`` equals our ``grad_cam`` on the same layer (and the harness's scores normalize maps themselves).
Several layers: the mean of their raw maps. ``normalize=True`` gives the library's own output instead (its scaling,
OpenCV upsampling and layer mean, values in [0, 1]). ``FullGrad`` takes no ``target_layers`` (it uses the bias of
every ``Conv2d`` / ``BatchNorm2d``); its terms are rescaled to [0, 1] by the method itself (the paper's
post-processing psi), only the final display scaling is skipped.

The model is left as found: the explainer runs in eval mode with frozen parameters (:func:`methods.registry.explaining`)
and takes gradients with ``torch.autograd.grad`` (the library's ``model.zero_grad()`` / ``loss.backward()`` would reset
and fill the parameters' ``.grad``); the library object and its hooks live for one call; a layer swapped in by
``AblationCAM`` is put back even when the call fails. Score-CAM / Ablation-CAM progress bars are silenced.

Cost (:func:`passes_per_map`): one pass for the gradient and eigen methods and FullGrad, two for ShapleyCAM (a
Hessian-vector product), ``1 + K`` forward passes per sample for ScoreCAM (``K``: the channels of the target layers)
and ``2 + K`` for AblationCAM.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
import types
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.cam import default_layer
from methods.registry import BaseExplainer, check_logits
from methods.state import eval_mode

__all__ = ["CLASSES", "CAMExplainer", "EXTRA", "factory", "passes_per_map", "supported"]

EXTRA = "pip install 'saliency-bench[cam]'"

#: the pytorch-grad-cam classes behind ``cam:<Class>``, with how their cost grows (:func:`passes_per_map`):
#: ``gradient`` (one forward and backward pass), ``forward`` (one forward pass), ``hessian`` (a forward pass, a
#: backward pass with its graph and a Hessian-vector product), ``channels`` (one forward pass per channel of the
#: target layers more). Left out: RandomCAM (unseeded global NumPy draws), and the wrappers FinerCAM, RefineCAM and
#: SESS (other targets, products of normalized maps, patch sampling: not a CAM of the given target).
CLASSES: dict[str, str] = {
    "GradCAM": "gradient",
    "GradCAMPlusPlus": "gradient",
    "XGradCAM": "gradient",
    "HiResCAM": "gradient",
    "GradCAMElementWise": "gradient",
    "LayerCAM": "gradient",
    "EigenGradCAM": "gradient",
    "SegEigenCAM": "gradient",
    "FullGrad": "gradient",
    "EigenCAM": "forward",
    "KPCA_CAM": "forward",
    "FEM": "forward",
    "ShapleyCAM": "hessian",
    "ScoreCAM": "channels",
    "AblationCAM": "channels",
}

#: parameters a class reads as an attribute rather than takes in its constructor, with the library's default
_ATTRIBUTES: dict[str, dict[str, Any]] = {"ScoreCAM": {"batch_size": 16}}

#: the library's modules whose progress bars are silenced during a call
_TQDM_MODULES = ("pytorch_grad_cam.score_cam", "pytorch_grad_cam.ablation_cam")

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _library() -> types.ModuleType:
    try:
        return importlib.import_module("pytorch_grad_cam")
    except ImportError as err:
        raise ImportError(
            f"'cam:<Class>' methods need pytorch-grad-cam (module pytorch_grad_cam, package grad-cam): {EXTRA}"
        ) from err


def supported() -> list[str]:
    """The names of :data:`CLASSES` that the installed pytorch-grad-cam has (``ImportError`` without it)."""
    lib = _library()
    return [name for name in CLASSES if hasattr(lib, name)]


def _class(class_name: str) -> type:
    if class_name not in CLASSES:
        raise ValueError(f"unknown pytorch-grad-cam class {class_name!r} for 'cam:<Class>'; supported: "
                         f"{', '.join(CLASSES)}")
    lib = _library()
    if not hasattr(lib, class_name):
        raise ValueError(f"the installed pytorch-grad-cam has no {class_name!r}; it has: {', '.join(supported())}")
    return getattr(lib, class_name)


def factory(class_name: str):
    """``factory(model, target_layers=None, normalize=False, eigen_smooth=False, **params) -> explainer`` of the
    pytorch-grad-cam class ``class_name`` (see the module docstring). ``ValueError`` naming the supported classes for
    an unknown one; ``ImportError`` naming the extra when pytorch-grad-cam is missing."""
    _class(class_name)

    def make(model: nn.Module, *, target_layers: str | nn.Module | Sequence[str | nn.Module] | None = None,
             normalize: bool = False, eigen_smooth: bool = False, low: float = 0.0, high: float = 1.0,
             **params: Any) -> CAMExplainer:
        return CAMExplainer(model, class_name, target_layers=target_layers, normalize=normalize,
                            eigen_smooth=eigen_smooth, low=low, high=high, **params)

    make.__name__ = make.__qualname__ = f"cam_{class_name}"
    make.__doc__ = f"pytorch-grad-cam's {class_name} as an explainer (methods.adapters.cam)."
    make.class_name = class_name  # type: ignore[attr-defined]
    make.passes_per_map = functools.partial(passes_per_map, class_name)  # type: ignore[attr-defined]
    return make


def _accepted(class_name: str, cls: type) -> dict[str, Any]:
    """The class's own parameters (beyond model and target_layers) with their defaults."""
    params = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
              if k not in ("self", "model", "target_layers") and p.kind is not inspect.Parameter.VAR_KEYWORD}
    return {**params, **_ATTRIBUTES.get(class_name, {})}


def _layer_names(model: nn.Module, class_name: str, layers: Any) -> list[str] | None:
    """``layers`` (a name, a module, or a list of them) as module names; ``ValueError`` naming the conv layers for
    one the model does not have."""
    if layers is None:
        return None
    modules = dict(model.named_modules())
    by_module = {m: n for n, m in modules.items()}
    items = [layers] if isinstance(layers, (str, nn.Module)) else list(layers)
    if not items:
        raise ValueError(f"cam:{class_name}: target_layers is empty; give a module name, a list of them, or None "
                         "for the default layer")
    names = []
    for item in items:
        name = by_module.get(item) if isinstance(item, nn.Module) else item
        if name is None or name not in modules:
            convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
            what = f"module {type(item).__name__}" if isinstance(item, nn.Module) else f"module named {item!r}"
            raise ValueError(f"cam:{class_name}: model {type(model).__name__} has no {what}; its conv layers: {convs}")
        names.append(name)
    return names


class CAMExplainer(BaseExplainer):
    """One pytorch-grad-cam class as an explainer (built by :func:`factory`; see the module docstring)."""

    def __init__(self, model: nn.Module, class_name: str, *, target_layers: Any = None, normalize: bool = False,
                 eigen_smooth: bool = False, low: float = 0.0, high: float = 1.0, **params: Any) -> None:
        super().__init__(model, low=low, high=high)
        self.cls = _class(class_name)
        self.class_name = class_name
        accepted = _accepted(class_name, self.cls)
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(f"cam:{class_name}: unknown parameter(s) {unknown}; accepted: target_layers, normalize, "
                             f"eigen_smooth{''.join(', ' + k for k in accepted)}")
        self.params = dict(params)
        self.normalize = bool(normalize)
        self.eigen_smooth = bool(eigen_smooth)
        if class_name == "FullGrad":
            if target_layers is not None:
                raise ValueError("cam:FullGrad takes no target_layers: it uses the bias of every Conv2d and "
                                 "BatchNorm2d layer of the model")
            self.layers: list[str] | None = []
        else:
            self.layers = _layer_names(model, class_name, target_layers)
            if self.layers is None and not any(isinstance(m, nn.Conv2d) for m in model.modules()):
                raise ValueError(f"cam:{class_name} needs a conv layer or explicit target_layers: model "
                                 f"{type(model).__name__} has no nn.Conv2d module (pass target_layers='<module "
                                 "name>' of a layer with a [B, C, H, W] output)")

    def _build(self, modules: list[nn.Module]) -> Any:
        ctor = {k: v for k, v in self.params.items() if k not in _ATTRIBUTES.get(self.class_name, {})}
        if self.class_name == "AblationCAM" and "ablation_layer" not in ctor:
            # the library's default is one AblationLayer shared by every instance (a default argument)
            ctor["ablation_layer"] = importlib.import_module("pytorch_grad_cam.ablation_layer").AblationLayer()
        cam = self.cls(self.model, modules, **ctor)
        for key, default in _ATTRIBUTES.get(self.class_name, {}).items():
            setattr(cam, key, self.params.get(key, default))
        return cam

    def attribute(self, x: Tensor, target: Tensor) -> Tensor:
        if self.layers is None:
            self.layers = [default_layer(self.model, x)]
        named = dict(self.model.named_modules())
        modules = [named[n] for n in self.layers]
        targets = [_target(int(t)) for t in target.tolist()]
        with _quiet(), _modules_restored(self.model):
            cam = self._build(modules)
            # after the library's hooks (which keep the layer's output): the rest of the forward pass gets a copy, so
            # that an in-place op after the layer (ReLU(inplace=True)) cannot alter the kept activations (on the CPU
            # the library's `.cpu().detach()` is no copy), as our Grad-CAM
            handles = [m.register_forward_hook(_copy_output) for m in cam.target_layers]
            try:
                out = self._run(cam, x, target, targets)
            finally:
                for h in handles:
                    h.remove()
                kept = cam.activations_and_grads
                kept.activations, kept.gradients = [], []  # dropped, not detached in place (fails on views)
                kept.release()
        return out.to(device=x.device, dtype=x.dtype).expand_as(x).contiguous()

    def _run(self, cam: Any, x: Tensor, target: Tensor, targets: list) -> Tensor:
        """The map ``[B, 1, *x.shape[2:]]``: the library's forward without its scaling (or with it: ``normalize``)."""
        needs_grad = bool(cam.uses_gradients or cam.compute_input_gradient)
        xg = x.detach().clone().requires_grad_(needs_grad)
        with torch.set_grad_enabled(needs_grad):
            out = cam.activations_and_grads(xg)
            check_logits(self.model, out, target)
            if cam.uses_gradients:
                loss = sum(t(o) for t, o in zip(targets, out, strict=True))
                (grad,) = torch.autograd.grad(loss, xg, retain_graph=not cam.detach, create_graph=not cam.detach)
                if cam.compute_input_gradient and cam.detach:
                    xg.grad = grad.detach()  # FullGrad reads the input's gradient
            if self.class_name == "FullGrad":
                per_layer = [cam.compute_cam_per_layer(xg, targets, self.eigen_smooth)]  # [B, 1, *spatial]
            else:
                per_layer = self._raw_layers(cam, xg, targets)
        size = tuple(x.shape[2:])
        if self.normalize:  # the library's own steps: scale and upsample each layer, mean, scale
            scaled = per_layer[0] if self.class_name == "FullGrad" else [_scale(c, size) for c in per_layer]
            return torch.as_tensor(cam.aggregate_multi_layers(scaled)).unsqueeze(1)
        maps = [torch.as_tensor(c).to(device=x.device, dtype=x.dtype) for c in per_layer]
        maps = [m if tuple(m.shape[2:]) == size else
                F.interpolate(m, size=size, mode=_MODES[m.ndim - 2], align_corners=False) for m in maps]
        return torch.stack(maps).mean(0) if self.class_name != "FullGrad" else maps[0]

    def _raw_layers(self, cam: Any, xg: Tensor, targets: list) -> list[np.ndarray]:
        """Each target layer's CAM after the library's ``relu``, at the layer's resolution: ``[B, 1, h, w]``."""
        acts, grads = cam.activations_and_grads.activations, cam.activations_and_grads.gradients
        out = []
        for i, (name, layer) in enumerate(zip(self.layers, cam.target_layers, strict=True)):
            if i >= len(acts):
                raise ValueError(f"cam:{self.class_name}: layer {name!r} did not run in the forward pass")
            a, g = acts[i], grads[i] if i < len(grads) else None
            if not isinstance(a, Tensor) or a.ndim != xg.ndim or a.ndim < 3:
                shape = tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__
                raise ValueError(
                    f"cam:{self.class_name}: layer {name!r} outputs {shape}; it needs a [B, C, *spatial] map with "
                    f"the input's {xg.ndim - 2} spatial dims (or a reshape_transform that makes one)")
            if cam.detach:  # as the library's compute_cam_per_layer hands them to get_cam_image
                a, g = a.cpu().data.numpy(), None if g is None else g.cpu().data.numpy()
            elif isinstance(g, Tensor) and not g.requires_grad:
                # ShapleyCAM: with frozen parameters a gradient that does not depend on the activations has no graph;
                # its Hessian-vector product is then zero (the library's `hvp is None` case)
                g = g.detach().requires_grad_(True)
            raw = cam.get_cam_image(xg, layer, targets, a, g, self.eigen_smooth)
            out.append(np.maximum(np.asarray(raw), 0)[:, None])
        return out

    def __repr__(self) -> str:
        return f"cam:{self.class_name}({type(self.model).__name__})"


def _copy_output(_module: nn.Module, _inputs: Any, output: Any) -> Any:
    return output.clone() if isinstance(output, Tensor) else None


def _target(category: int) -> Any:
    return importlib.import_module("pytorch_grad_cam.utils.model_targets").ClassifierOutputTarget(category)


def _scale(cam: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """The library's per-layer step: min-max scaling per image, then its upsampling (OpenCV / SciPy)."""
    scale_cam_image = importlib.import_module("pytorch_grad_cam.utils.image").scale_cam_image
    return scale_cam_image(cam[:, 0], tuple(size[::-1]))[:, None]


class _NoBar:
    @staticmethod
    def tqdm(iterable: Any, *args: Any, **kwargs: Any) -> Any:
        return iterable


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the progress bars of Score-CAM and Ablation-CAM (they print one per image)."""
    saved = [(m, m.tqdm) for m in (sys.modules.get(name) for name in _TQDM_MODULES) if hasattr(m, "tqdm")]
    try:
        for m, _ in saved:
            m.tqdm = _NoBar
        yield
    finally:
        for m, bar in saved:
            m.tqdm = bar


@contextmanager
def _modules_restored(model: nn.Module) -> Iterator[None]:
    """Put back every submodule as found (Ablation-CAM swaps its layer in and out), also when the body raises."""
    saved = [(m, dict(m._modules)) for m in model.modules()]
    try:
        yield
    finally:
        for m, children in saved:
            if any(m._modules.get(k) is not v for k, v in children.items()) or len(m._modules) != len(children):
                m._modules.clear()
                m._modules.update(children)


def passes_per_map(class_name: str, params: Mapping[str, Any] | None = None, model: nn.Module | None = None,
                   input_shape: Sequence[int] | None = None) -> int:
    """Passes through the model for one map of one sample (a forward pass, with or without its backward pass, counts
    as one): 1 for the gradient and eigen methods and FullGrad; 2 for ShapleyCAM; ``1 + K`` for ScoreCAM and
    ``2 + K`` for AblationCAM (``K``: the channels of the target layers, or ``2 * int(K * ratio_channels_to_ablate)``
    when the ratio is below 1), traced on ``model`` with one zero input shaped ``input_shape`` (one sample, no batch
    dimension), which these two need."""
    if class_name not in CLASSES:
        raise ValueError(f"unknown pytorch-grad-cam class {class_name!r}; supported: {', '.join(CLASSES)}")
    kind, params = CLASSES[class_name], dict(params or {})
    if kind != "channels":
        return 2 if kind == "hessian" else 1
    if model is None or input_shape is None:
        raise ValueError(f"the cost of cam:{class_name} grows with the channels of its target layers: pass the model "
                         "and the input shape")
    k = _channels(model, class_name, params.get("target_layers"), tuple(input_shape), params.get("reshape_transform"))
    if class_name == "ScoreCAM":
        return 1 + k
    ratio = float(params.get("ratio_channels_to_ablate", 1.0))
    return 2 + (k if ratio == 1.0 else 2 * int(k * ratio))


def _channels(model: nn.Module, class_name: str, layers: Any, input_shape: tuple[int, ...],
              reshape_transform: Any = None) -> int:
    """The channels of the target layers (default: :func:`methods.cam.default_layer`) for one zero input."""
    ref = next(iter(model.parameters()), None)
    x = torch.zeros((1, *input_shape), dtype=ref.dtype if ref is not None else torch.float32,
                    device=ref.device if ref is not None else None)
    with eval_mode(model), torch.no_grad():
        names = _layer_names(model, class_name, layers) or [default_layer(model, x)]
        named = dict(model.named_modules())
        seen: list[int] = []

        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            out = reshape_transform(out) if reshape_transform is not None else out
            seen.append(int(out.shape[1]))

        handles = [named[n].register_forward_hook(hook) for n in names]
        try:
            model(x)
        finally:
            for h in handles:
                h.remove()
    return sum(seen)
