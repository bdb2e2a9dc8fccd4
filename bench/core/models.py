"""Reference models by name: ``create_model("paper_mlp" | "small_cnn" | "timm:<name>", input_shape, num_classes)``.

Adding a model is one function decorated with :func:`register_model` (training: :mod:`bench.core.training`), or,
without touching this project, a factory of your own named by its import path: ``create_model("mypkg.net:factory",
...)`` (``model.name=mypkg.net:factory`` on the command line), imported from ``PYTHONPATH`` and then the current
directory (:func:`import_factory`); its source file's hash (:func:`factory_sha256`) keys checkpoints
(:func:`with_source_hash`) and results, so an edited model is never taken for the old one.

Preprocessing inside the model: ``create_model(..., normalize=(mean, std))`` puts a :class:`Normalize` in front of
the network, so that the harness's inputs stay pixels in [0, 1] (before the data's encoding) and every saliency map
and every input shift lives in pixel space; :func:`normalization` picks the statistics (the pretrained timm
model's, or the data set's). Local weights: :func:`load_checkpoint` (a ``torch.save`` state dict, plain or as timm
saves it, read with ``weights_only=True``).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import logging
import math
import os
import pickle
import re
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["register_model", "create_model", "model_names", "Normalize", "add_normalize", "find_normalize",
           "normalization", "load_checkpoint", "CheckpointError", "INPUT_NORMALIZE", "FactoryError",
           "is_factory_name", "import_factory", "factory_sha256", "with_source_hash", "SOURCE_KEY"]

log = logging.getLogger(__name__)

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Register ``fn(input_shape, num_classes, **kw) -> nn.Module`` under ``name``."""

    def deco(fn):
        _MODELS[name] = fn
        return fn

    return deco


def model_names() -> list[str]:
    """Registered names; any ``timm:<name>`` is accepted too."""
    return sorted(_MODELS) + ["timm:<name>"]


@register_model("paper_mlp")
def paper_mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 1024, depth: int = 3) -> nn.Module:
    """Kindermans et al.'s network 1: ``prod(input_shape) -> 3 x 1024 (ReLU) -> num_classes``."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register_model("small_cnn")
def small_cnn(
    input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, int] = (16, 32), hidden: int = 128
) -> nn.Module:
    """Two 3x3 convolutions with zero padding, each followed by ReLU and 2x2 max-pooling, then two dense layers."""
    c, h, w = input_shape
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(c, c1, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * (h // 4) * (w // 4), hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


@register_model("vgg_cnn")
def vgg_cnn(input_shape: tuple[int, ...], num_classes: int, convs: int = 6, width: int = 16,
            hidden: int = 128) -> nn.Module:
    """A VGG-style network for images ``C x H x W``: ``convs`` zero-padded 3x3 convolutions (ReLU) in stages of
    two, the channels doubling per stage from ``width`` (``16-16-pool-32-32-pool-64-64-pool`` for 6), a 2x2
    max-pool after each stage, then ``dense hidden (ReLU) -> num_classes``. Raises ``ValueError`` when the
    input is too small for the pools (each halves the side)."""
    if convs < 1:
        raise ValueError(f"vgg_cnn: convs={convs} is out of range; accepted: >= 1")
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for i in range(convs):
        out = width * 2 ** (i // 2)
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU()]
        c = out
        if i % 2 == 1 or i == convs - 1:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
    if min(h, w) < 1:
        raise ValueError(f"vgg_cnn: convs={convs} pools an input of {tuple(input_shape)} below one pixel")
    layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """A residual block: ``relu(x' + bn(conv(relu(bn(conv(x))))))``, ``x'`` the input or its 1x1 projection when
    the channels change. Every ReLU is its own module (the propagation methods hook modules)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1, bias=False)
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.skip(x))


@register_model("small_resnet")
def small_resnet(input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> nn.Module:
    """A small residual network: a 3x3 stem (BatchNorm, ReLU), a :class:`BasicBlock` of ``width`` channels, 2x2
    max-pool, a block to ``2 * width`` channels (1x1 projection on the skip), 2x2 max-pool, global average pool,
    one dense layer to ``num_classes``."""
    c = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        BasicBlock(width, width), nn.MaxPool2d(2),
        BasicBlock(width, 2 * width), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )


@register_model("tabular_mlp")
def tabular_mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 64, depth: int = 2) -> nn.Module:
    """A small MLP for tables: ``prod(input_shape) -> depth x hidden (ReLU) -> num_classes``."""
    return paper_mlp(input_shape, num_classes, hidden=hidden, depth=depth)


@register_model("signal_cnn")
def signal_cnn(input_shape: tuple[int, ...], num_classes: int, channels: tuple[int, int] = (8, 16),
               hidden: int = 32) -> nn.Module:
    """For signals ``C x L``: two 5-tap ``Conv1d`` layers (zero padding), each followed by ReLU and 2x max-pooling,
    then two dense layers."""
    c, length = input_shape
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv1d(c, c1, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Flatten(), nn.Linear(c2 * (length // 4), hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
    )


class TokenEmbedding(nn.Embedding):
    """``nn.Embedding`` that takes token ids stored as floats (the harness keeps every input a float tensor)."""

    def forward(self, input):  # noqa: A002, ANN001, ANN201
        return super().forward(input.long())


@register_model("token_mlp")
def token_mlp(input_shape: tuple[int, ...], num_classes: int, vocab: int = 20, dim: int = 8,
              hidden: int = 32) -> nn.Module:
    """For token sequences ``L`` (ids): an embedding ``vocab x dim``, then ``L * dim -> hidden (ReLU) ->
    num_classes``. The saliency tests run on the embedding output (:func:`bench.core.embedding.embedded`)."""
    (length,) = input_shape
    return nn.Sequential(TokenEmbedding(vocab, dim), nn.Flatten(), nn.Linear(length * dim, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def _timm_model(name: str, input_shape: tuple[int, ...], num_classes: int, pretrained: bool = False, **kw) -> nn.Module:
    import timm

    if name not in timm.list_models(pretrained=False):
        raise ValueError(f"unknown timm model {name!r} (see timm.list_models())")
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=input_shape[0], **kw)
    except Exception as err:  # network errors surface as many exception types
        if not pretrained:
            raise
        raise RuntimeError(
            f"timm could not load pretrained weights for {name!r} ({type(err).__name__}: {err}). Pretrained weights "
            "need a network connection to the Hugging Face hub or a filled HF cache; use pretrained=false to start "
            "from random weights and train on the configured data instead."
        ) from err


# ------------------------------------------------------------------ your own factory: ``package.module:factory``

#: the keyword of :func:`create_model` (and of a checkpoint key's model arguments) that holds the hash of a factory's
#: source (:func:`with_source_hash`); it is checked against the source and never passed to the factory
SOURCE_KEY = "source_sha256"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class FactoryError(ValueError):
    """A ``package.module:factory`` value of ``model.name`` / ``data.name`` that cannot be used: not an import path,
    a module that is not found or fails to import, a missing or non-callable attribute, a factory that raised (its
    exception chained) or returned the wrong type. Each message names the value, the config key and what is
    accepted."""


def is_factory_name(name: Any) -> bool:
    """Whether ``name`` names a factory by its import path (``package.module:factory``): it holds a ``:`` and is not
    a ``timm:<name>``."""
    return isinstance(name, str) and ":" in name and not name.startswith("timm:")


def _accepted(key: str) -> str:
    if key == "data.name":
        return "a data set's name or package.module:factory (a function returning a bench.core.data.Dataset)"
    return ("a registered model, timm:<name>, or package.module:factory (a function (input_shape, num_classes, "
            "**model.kwargs) returning a torch.nn.Module)")


def _search_path() -> list[str]:
    """The folders an import searches, as :func:`import_factory` sees them (``""``: the current directory)."""
    cwd = os.getcwd()
    seen: list[str] = []
    for p in [*sys.path, cwd]:
        full = os.path.abspath(p or cwd)
        if full not in seen:
            seen.append(full)
    return seen


def _import_module(value: str, key: str, module_name: str):
    """Import ``module_name`` from ``sys.path`` (``PYTHONPATH`` included), then the current directory (appended to
    ``sys.path`` for this import only, so that an installed package of the same name wins)."""
    cwd = os.getcwd()
    added = cwd not in {os.path.abspath(p or cwd) for p in sys.path}
    if added:
        sys.path.append(cwd)
    try:
        importlib.invalidate_caches()  # a module written after the path's folders were listed
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise FactoryError(
                f"{key}={value}: no module named {missing!r} on the import path (PYTHONPATH, then the current "
                f"directory {cwd}); searched: {', '.join(_search_path())}. Accepted: {_accepted(key)}; run from the "
                "folder that holds the package, or put that folder on PYTHONPATH") from err
        raise FactoryError(f"{key}={value}: importing {module_name} failed: ModuleNotFoundError: {err} (a module "
                           f"that {module_name} imports is missing)") from err
    except Exception as err:  # a syntax error or any exception raised at import time: named, chained
        raise FactoryError(f"{key}={value}: importing {module_name} failed: {type(err).__name__}: {err}") from err
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _callables(module: Any) -> list[str]:
    """The module's public callables, those defined in it first."""
    own, other = [], []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or not callable(obj):
            continue
        (own if getattr(obj, "__module__", None) == module.__name__ else other).append(name)
    return own + other


def import_factory(value: str, key: str = "model.name") -> Callable[..., Any]:
    """The callable named by ``value`` = ``package.module:factory`` (the attribute may be dotted:
    ``module:Class.build``).

    The module is imported from ``sys.path`` (``PYTHONPATH`` included) and then from the current directory, as a
    method's ``_target_`` is. ``key``: the config key that holds ``value`` (``model.name`` or ``data.name``), named in
    the errors.

    Raises :class:`FactoryError` (a ``ValueError``) naming the value, the key and what is accepted: not an import
    path, no such module (with the folders searched), the module failing to import (chained), no such attribute
    (a few of the module's callables listed), an attribute that is not callable.
    """
    module_name, sep, attr = str(value).partition(":")
    if not sep or not all(_IDENTIFIER.fullmatch(p) for p in module_name.split(".")) \
            or not all(_IDENTIFIER.fullmatch(p) for p in attr.split(".")):
        raise FactoryError(f"{key}={value} is not an import path of a factory; accepted: {_accepted(key)}")
    module = _import_module(value, key, module_name)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as err:
            where = getattr(module, "__file__", None) or module_name
            names = _callables(module)
            listed = f"its callables: {_few(names)}" if names else "it defines no public callables"
            raise FactoryError(f"{key}={value}: module {module_name} ({where}) has no attribute {attr!r}; {listed}. "
                               f"Accepted: {_accepted(key)}") from err
    if not callable(obj):
        raise FactoryError(f"{key}={value} is a {type(obj).__name__}, not a callable factory; accepted: "
                           f"{_accepted(key)}")
    return obj


def _source_files(factory: Any, module_name: str) -> list[str]:
    """The source files of the named module and of the module that defines ``factory`` (when another one)."""
    files: list[str] = []
    for mod in (sys.modules.get(module_name), inspect.getmodule(factory)):
        try:
            path = inspect.getsourcefile(mod) if mod is not None else None
        except TypeError:  # a built-in module
            path = None
        if path and os.path.isfile(path) and os.path.abspath(path) not in files:
            files.append(os.path.abspath(path))
    return files


def factory_sha256(value: str, key: str = "model.name") -> str | None:
    """The hash (16 hex digits) of the source of the factory named ``value`` (``package.module:factory``): the bytes
    of its module's file (``inspect.getsourcefile``), and of the file that defines the factory where that is another
    module. Read from disk at each call, so that an edited file gives another hash. ``None`` where no source file can
    be read (an extension module, a zip import): edits of it then go unnoticed.

    Only these files are hashed: an edit to another module the factory imports is not seen (clear the checkpoint or
    use ``train.use_cache=false``). Raises :class:`FactoryError` as :func:`import_factory`."""
    factory = import_factory(value, key)
    files = _source_files(factory, str(value).partition(":")[0])
    if not files:
        log.warning("%s=%s: no source file of the factory can be read; an edit of it will not be told from the "
                    "original (checkpoints and results are keyed by its name and arguments only)", key, value)
        return None
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def with_source_hash(name: str, model_kw: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``model_kw`` with the factory's source hash under :data:`SOURCE_KEY`, for a ``package.module:factory`` name
    whose source can be read (other names: unchanged). Passed as ``load_or_train(name, data, model_kw=...)``, the hash
    enters the checkpoint's cache key, so an edited model never loads a checkpoint of the old one; :func:`create_model`
    checks it against the source and does not pass it to the factory. Raises :class:`FactoryError`."""
    kw = dict(model_kw or {})
    if is_factory_name(name):
        sha = factory_sha256(name, "model.name")
        if sha is not None:
            kw[SOURCE_KEY] = sha
    return kw


def _factory_model(name: str, input_shape: tuple[int, ...], num_classes: int, source_sha256: str | None,
                   kw: dict) -> nn.Module:
    """``factory(input_shape, num_classes, **kw)`` of the import path ``name``, checked (:class:`FactoryError`)."""
    factory = import_factory(name, "model.name")
    if source_sha256 is not None:
        now = factory_sha256(name, "model.name")
        if now != source_sha256:
            raise FactoryError(f"model.name={name}: its source changed while it was in use (hash {source_sha256} "
                               f"when the job started, {now} now); run the job again")
    try:
        model = factory(input_shape, num_classes, **kw)
    except Exception as err:  # the user's code: any exception, chained
        args = ", ".join([f"input_shape={input_shape}", f"num_classes={num_classes}",
                          *(f"{k}={v!r}" for k, v in kw.items())])
        raise FactoryError(f"model.name={name} raised {type(err).__name__}: {err} (called as "
                           f"{name.partition(':')[2]}({args}); its keyword arguments come from model.kwargs)") from err
    if not isinstance(model, nn.Module):
        raise FactoryError(f"model.name={name} returned a {type(model).__name__}, not a torch.nn.Module; accepted: "
                           f"{_accepted('model.name')}")
    return model


def create_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    pretrained: bool = False,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    source_sha256: str | None = None,
    **kw,
) -> nn.Module:
    """Build a model by name.

    Args:
        name: a registered name (:func:`model_names`), ``timm:<any timm model>``, or ``package.module:factory``: your
            own ``factory(input_shape, num_classes, **kw) -> nn.Module`` imported from ``PYTHONPATH`` or the current
            directory (:func:`import_factory`).
        input_shape: one input's shape, ``(C, H, W)`` for images (channels first).
        num_classes: the number of outputs (logits).
        pretrained: timm's pretrained weights (needs network access or a filled Hugging Face cache).
        normalize: ``(mean, std)``, one value per input channel (or one for all): the model standardizes its own
            input first (:func:`add_normalize`), in the units of its inputs (:func:`normalization` converts pixel
            statistics to the data's encoding). ``None``: the network alone. Goes into a checkpoint cache key with
            the other keyword arguments (``load_or_train(model_kw={"normalize": ...})``).
        source_sha256: a factory's source hash (:func:`with_source_hash` puts it into a checkpoint's key): checked
            against the factory's source now (:class:`FactoryError` when it changed), not passed to the factory.
        **kw: the constructor's keyword arguments.

    Returns:
        the model (train mode, on the CPU), taking ``float32[N, *input_shape]`` and returning ``[N, num_classes]``.

    Raises:
        ValueError: an unknown name, ``pretrained`` for a model without weights, ``normalize`` statistics that do
            not match the input channels.
        FactoryError: (a ``ValueError``) a ``package.module:factory`` that cannot be imported, raised (chained) or
            returned something other than an ``nn.Module``; ``source_sha256`` for another name or another source.
        RuntimeError: timm could not load pretrained weights (the message says why and what to do).
    """
    if source_sha256 is not None and not is_factory_name(name):
        raise ValueError(f"{SOURCE_KEY} applies to a package.module:factory model only, not to {name!r}")
    if name.startswith("timm:"):
        model = _timm_model(name[len("timm:"):], tuple(input_shape), num_classes, pretrained=pretrained, **kw)
    elif is_factory_name(name):
        if pretrained:
            raise ValueError(f"model {name!r} has no pretrained weights; train it (pretrained=false) or load yours "
                             "(model.checkpoint=PATH)")
        model = _factory_model(name, tuple(input_shape), num_classes, source_sha256, kw)
    elif name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; accepted: {', '.join(model_names())}, or package.module:factory "
                         "(your own function (input_shape, num_classes, **model.kwargs) returning a torch.nn.Module)")
    elif pretrained:
        raise ValueError(f"model {name!r} has no pretrained weights; train it (pretrained=false)")
    else:
        model = _MODELS[name](tuple(input_shape), num_classes, **kw)
    if normalize is None:
        return model
    try:
        mean, std = normalize
    except (TypeError, ValueError) as err:
        raise ValueError(f"normalize must be a (mean, std) pair or None, got {normalize!r}") from err
    channels = int(input_shape[0]) if len(input_shape) else 1
    if len(list(mean)) not in (1, channels):
        raise ValueError(f"normalize: {len(list(mean))} mean value(s) for inputs of {channels} channel(s) "
                         f"{tuple(input_shape)}; give 1 or {channels}")
    return add_normalize(model, mean, std)


# ------------------------------------------------------------------------------ preprocessing inside the model

#: the name of the :class:`Normalize` module that :func:`add_normalize` puts into a model
INPUT_NORMALIZE = "input_normalize"


class Normalize(nn.Module):
    """Per-channel standardization ``(x - mean[c]) / std[c]`` of inputs ``[N, C, *spatial]`` (or ``[N, C]``).

    ``mean``/``std``: ``C`` values (or 1 for every channel), ``std > 0``. They are buffers that follow the model's
    device and dtype but are not *persistent*: they stay out of ``state_dict()``, so a checkpoint of the network
    loads into the normalized model and back, and the statistics are configuration (the model's arguments), not
    weights. It holds no parameters, so randomization (:mod:`bench.randomization.units`) never makes it a unit, and
    first-layer probes (:func:`methods.state.first_layer_input`) pass it by.
    """

    def __init__(self, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> None:
        super().__init__()
        m = torch.as_tensor(mean, dtype=torch.float32).detach().clone().reshape(-1)
        s = torch.as_tensor(std, dtype=torch.float32).detach().clone().reshape(-1)
        if m.numel() == 0 or m.shape != s.shape:
            raise ValueError(f"Normalize needs as many mean as std values (at least one), got mean={m.tolist()}, "
                             f"std={s.tolist()}")
        if not bool(torch.isfinite(m).all() and torch.isfinite(s).all()) or not bool((s > 0).all()):
            raise ValueError(f"Normalize needs finite mean/std values and std > 0, got mean={m.tolist()}, "
                             f"std={s.tolist()}")
        self.register_buffer("mean", m, persistent=False)
        self.register_buffer("std", s, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` per channel (dim 1), in ``x``'s dtype. Raises ``ValueError`` when ``x`` has no
        channel dimension or another number of channels."""
        c = self.mean.numel()
        if x.dim() < 2 or (c != 1 and x.shape[1] != c):
            raise ValueError(f"Normalize holds statistics of {c} channel(s); got an input of shape {tuple(x.shape)} "
                             "(channels are dim 1)")
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.to(x.dtype).view(shape)) / self.std.to(x.dtype).view(shape)

    def extra_repr(self) -> str:
        def fmt(t: Tensor) -> str:
            return ", ".join(f"{v:.4g}" for v in t.tolist())

        return f"mean=({fmt(self.mean)}), std=({fmt(self.std)})"


class _StandardizeRelevancePass(torch.autograd.Function):
    """``(x - mean) / std`` forward (bit for bit as :meth:`Normalize.forward`), the incoming gradient unchanged
    backward: zennit's ``Pass`` rule for an elementwise layer, so that LRP relevance is conserved through it."""

    @staticmethod
    def forward(ctx, x: Tensor, mean: Tensor, std: Tensor) -> Tensor:  # noqa: ANN001
        return (x - mean) / std

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # noqa: ANN001
        return grad, None, None


def _relevance_pass_forward(self: Normalize, x: Tensor) -> Tensor:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    Normalize.forward(self, x[:0])  # the shape checks, on an empty slice
    return _StandardizeRelevancePass.apply(x, self.mean.to(x.dtype).view(shape), self.std.to(x.dtype).view(shape))


def _register_with_lrp() -> None:
    """Declare :class:`Normalize` to :mod:`methods.canonizers` (the LRP family refuses unknown modules): during an
    LRP attribution a canonizer makes its backward pass relevance through unchanged (zennit's ``Pass`` rule for
    elementwise layers; an elementwise bijection neither creates nor destroys relevance), where plain autograd
    would scale each channel's relevance by ``1 / std``. Gradient methods are untouched (they see the true
    gradient, ``1 / std`` included)."""
    import types

    from zennit.canonizers import AttributeCanonizer

    from methods.canonizers import register_canonizer

    def attributes(_name: str, module: nn.Module) -> dict | None:
        if isinstance(module, Normalize):
            return {"forward": types.MethodType(_relevance_pass_forward, module)}
        return None

    register_canonizer(Normalize)(lambda _module: [AttributeCanonizer(attributes)])


def _normalize_input(module: nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook of :func:`add_normalize`: the first positional input through the model's own
    :class:`Normalize` (module-level, so that copies and pickles of the model keep working)."""
    if not args:
        return None
    return (getattr(module, INPUT_NORMALIZE)(args[0]), *args[1:])


_register_with_lrp()


def add_normalize(model: nn.Module, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> nn.Module:
    """``model`` with a :class:`Normalize` (named :data:`INPUT_NORMALIZE`) applied to its input first.

    The network's own modules keep their names, so ``state_dict`` keys, unit names of the randomization tests
    (module and block granularity) and layer names in the results are the same as without it:

    * a plain ``nn.Sequential`` is rebuilt as ``Sequential(input_normalize, <its modules under their names>)``
      (``model[0]`` is then the Normalize);
    * any other module (timm models, custom networks) gets the Normalize as a submodule and a forward pre-hook that
      passes the first positional input through it (in place; the same object is returned). Code that calls
      ``model.forward(x)`` directly, rather than ``model(x)``, bypasses the hook.

    Raises ``ValueError`` if the model already normalizes its input or has an attribute of that name.
    """
    norm = Normalize(mean, std)
    if find_normalize(model) is not None:
        raise ValueError(f"{type(model).__name__} already holds a Normalize module; add one only once")
    ref = next(model.parameters(), None)
    if ref is not None and ref.is_floating_point():
        norm = norm.to(device=ref.device, dtype=ref.dtype)
    if type(model) is nn.Sequential:
        return nn.Sequential(OrderedDict([(INPUT_NORMALIZE, norm), *model.named_children()])).train(model.training)
    if hasattr(model, INPUT_NORMALIZE):
        raise ValueError(f"{type(model).__name__} already has an attribute {INPUT_NORMALIZE!r}")
    model.add_module(INPUT_NORMALIZE, norm)
    model.register_forward_pre_hook(_normalize_input)
    return model


def find_normalize(model: nn.Module) -> Normalize | None:
    """The :class:`Normalize` module of ``model`` (the first one), or ``None``."""
    return next((m for m in model.modules() if isinstance(m, Normalize)), None)


def normalization(
    normalize: bool,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    *,
    data: Any = None,
    model_name: str = "",
    pretrained: bool = False,
) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The ``create_model(normalize=...)`` argument of a run: ``None`` or ``(mean, std)`` in the data's encoding.

    The statistics are stated for pixels in [0, 1]; the first source that has them is used: ``mean``/``std``
    (``model.mean``/``model.std``), a pretrained timm model's own (``timm.models.get_pretrained_cfg``), the data
    set's ``meta["mean"]``/``meta["std"]`` (``data=imagenet``; ``data.mean``/``data.std``). They are then mapped to
    the encoding ``data.domain = (low, high)``: ``low + mean * (high - low)``, ``std * (high - low)``, so the network
    sees the same standardized input whatever the encoding.

    Args:
        normalize: ``model.normalize``; ``False`` returns ``None``.
        mean, std: explicit statistics (both or neither).
        data: the :class:`~bench.core.data.Dataset` (``meta``, ``domain``, ``encoding``), or ``None``.
        model_name, pretrained: the model's name and whether it loads pretrained weights (timm's statistics).

    Raises:
        ValueError: ``mean``/``std`` without ``normalize`` (or one without the other), no statistics from any
            source (the message says where to set them), token-id data.
    """
    if not normalize:
        if mean is not None or std is not None:
            raise ValueError("model.mean/model.std are set but model.normalize is false; set model.normalize=true "
                             "to standardize the input inside the model")
        return None
    if (mean is None) != (std is None):
        raise ValueError(f"give both model.mean and model.std (or neither), got mean={mean!r}, std={std!r}")
    if data is not None and getattr(data, "encoding", "") == "ids":
        raise ValueError(f"data set {data.name!r} holds token ids; model.normalize does not apply")
    source = "model.mean/model.std"
    if mean is None and pretrained and model_name.startswith("timm:"):
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(model_name[len("timm:"):])
        if cfg is not None and cfg.mean is not None and cfg.std is not None:
            mean, std, source = cfg.mean, cfg.std, f"timm's pretrained config of {model_name}"
    meta = getattr(data, "meta", None) or {}
    if mean is None and meta.get("mean") is not None and meta.get("std") is not None:
        mean, std, source = meta["mean"], meta["std"], f"data set {data.name!r}"
    if mean is None:
        where = f"data set {data.name!r}" if data is not None else "the data"
        raise ValueError(f"model.normalize=true needs channel statistics, and neither the model nor {where} has "
                         "them: set model.mean=[...] model.std=[...] (pixels in [0, 1]), or data.mean/data.std, or "
                         "use data=imagenet (ImageNet's) or a pretrained timm model (its own)")
    low, high = getattr(data, "domain", (0.0, 1.0)) if data is not None else (0.0, 1.0)
    m = tuple(low + float(v) * (high - low) for v in mean)
    s = tuple(float(v) * (high - low) for v in std)
    log.info("the model standardizes its input with the mean/std of %s: %s / %s (pixels in [0, 1])", source,
             [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std])
    return m, s


# ------------------------------------------------------------------------------------------- local weights


class CheckpointError(ValueError):
    """A weights file that cannot be read, holds no state dict, or does not fit the model."""


#: where timm (and common training scripts) keep the state dict inside a checkpoint, in order of preference
_STATE_KEYS_EMA = ("state_dict_ema", "model_ema", "state_dict", "model")
_STATE_KEYS = ("state_dict", "model")
_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile


def _few(names: Sequence[str], k: int = 5) -> str:
    shown = ", ".join(names[:k])
    return shown + (f" and {len(names) - k} more" if len(names) > k else "")


def _state_dict_of(blob: Any, path: Path, use_ema: bool) -> tuple[Mapping[str, Tensor], str | None]:
    """``(state dict, the key it was found under or None)``; raises :class:`CheckpointError`."""
    if not isinstance(blob, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(blob).__name__}, not a state dict (save "
                              "model.state_dict(), not the model)")
    if blob and all(isinstance(v, Tensor) for v in blob.values()):
        return blob, None
    for key in (_STATE_KEYS_EMA if use_ema else _STATE_KEYS):
        if isinstance(blob.get(key), Mapping):
            state = blob[key]
            bad = [str(k) for k, v in state.items() if not isinstance(v, Tensor)]
            if bad:
                raise CheckpointError(f"checkpoint {path}: the state dict under {key!r} holds non-tensor entries: "
                                      f"{_few(bad)}")
            return state, key
    raise CheckpointError(f"checkpoint {path} holds no state dict: a dict with keys {_few([str(k) for k in blob])}; "
                          "expected a dict of tensors, or one under 'state_dict', 'model' or 'state_dict_ema'")


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def load_checkpoint(model: nn.Module, path: str | os.PathLike, *, use_ema: bool = True) -> nn.Module:
    """Load a weights file saved by ``torch.save`` into ``model`` (in place) and return it.

    The file holds a state dict, or a dict with it under ``state_dict_ema``/``model_ema`` (with ``use_ema``, as timm
    prefers them), ``state_dict`` or ``model`` (timm's and most training scripts' checkpoints; other entries such as
    ``epoch`` are ignored). Key prefixes ``module.`` (``DataParallel``) and ``_orig_mod.`` (``torch.compile``) are
    stripped. Read with ``torch.load(weights_only=True)``: tensors and plain containers only, never code. Every key
    must match the model's ``state_dict()`` (strict; a :class:`Normalize` holds none) with its shape; the values are
    copied into the model's tensors (their device and dtype are kept). The model's train/eval mode is unchanged.

    Raises:
        FileNotFoundError: no file at ``path`` (named).
        CheckpointError: the file cannot be read (or holds objects other than tensors: the message says how to
            re-save it), holds no state dict, or does not fit: missing and unexpected keys (up to 5 of each named,
            the rest counted) and shape mismatches (key, the file's shape and the model's).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (model.checkpoint)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights only" in str(err).lower():
            raise CheckpointError(
                f"checkpoint {path} holds objects other than tensors, which torch.load(weights_only=True) refuses "
                f"({first}); re-save only the weights, e.g. torch.save(ckpt['state_dict'], 'weights.pt')") from err
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from err
    except Exception as err:  # noqa: BLE001  (not a torch file, truncated, ...: named)
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {first}") from err
    state, key = _state_dict_of(blob, path, use_ema)
    state = {_strip(str(k)): v for k, v in state.items()}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items()
                  if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        where = f" (under {key!r})" if key else ""
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) (in the model, not in the file): {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) (in the file, not in the model): {_few(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): "
                         + _few([f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in mismatched]))
        raise CheckpointError(f"checkpoint {path}{where} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    log.info("loaded %d tensors from %s%s", len(state), path, f" (under {key!r})" if key else "")
    return model


# the model families defined in their own modules register themselves on import (after register_model exists)
from bench.core import paper_models, vit  # noqa: E402, F401
