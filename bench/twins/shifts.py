"""Input shifts ``m`` for the input-invariance test (Kindermans et al.), each one input's shape ``C x H x W``.

* :func:`mean_shift`: a constant (``-1`` turns the [0, 1] encoding into [-1, 0]);
* :func:`checkerboard`: squares of ``size`` pixels alternating between 0 and ``amplitude``;
* :func:`adversarial_image`: a picture ``s_hat`` made to appear in Gradient x Input of the twin at one
  sample ``x_hat``: ``m = s_hat / grad f1(x_hat) - x_hat``, clipped to ``[-clip, clip]``;
* :func:`custom`: a tensor file (``torch.save``) of the input's shape.

:func:`make_shift` builds one from a :class:`ShiftSpec` (the entries of the config's ``transform`` group).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Optional  # noqa: UP035  (OmegaConf reads ShiftSpec as a config entry)

import torch
from torch import Tensor, nn

from bench.twins.build import Affine
from methods.registry import check_finite
from methods.state import eval_mode

__all__ = ["mean_shift", "checkerboard", "adversarial_image", "custom", "make_shift", "ShiftSpec", "KINDS",
           "target_picture"]

KINDS = ("mean_shift", "checkerboard", "adversarial_image", "custom", "contrast")


def mean_shift(shape: tuple[int, ...], value: float = -1.0) -> Tensor:
    """A constant shift ``value`` everywhere: ``float32[C, H, W]``."""
    return torch.full(tuple(shape), float(value))


def checkerboard(shape: tuple[int, ...], size: int = 4, amplitude: float = 1.0) -> Tensor:
    """Squares of ``size`` x ``size`` pixels alternating between 0 and ``amplitude`` (top-left square 0); for a signal
    ``C x L`` or a vector ``F``, blocks of ``size`` elements along the last axis (first block 0)."""
    if size < 1:
        raise ValueError(f"checkerboard square size must be a positive number of pixels, got {size}")
    if len(shape) in (1, 2):
        blocks = ((torch.arange(shape[-1]) // size) % 2).float() * float(amplitude)
        return blocks.expand(tuple(shape)).clone()
    if len(shape) != 3:
        raise ValueError(f"checkerboard: expected an image C x H x W, a signal C x L or a vector F, got {shape}")
    c, h, w = shape
    i = torch.arange(h)[:, None] // size
    j = torch.arange(w)[None, :] // size
    board = ((i + j) % 2).float() * float(amplitude)
    return board.expand(c, h, w).clone()


def target_picture(name: str, shape: tuple[int, ...]) -> Tensor:
    """The natural picture ``name`` (``skimage.data``) resized to ``C x H x W`` in [0, 1], grey for ``C == 1``."""
    from bench.core.data import natural_image

    c, h, w = shape
    img = natural_image(name, size=(h, w), grey=(c == 1))
    return img if img.shape[0] == c else img.mean(0, keepdim=True).expand(c, h, w).clone()


def adversarial_image(
    model: nn.Module,
    x_hat: Tensor,
    *,
    image: str | Tensor = "cat",
    clip: float = 0.3,
    target: int | None = None,
    strength: float | None = None,
    min_grad: float = 1e-6,
) -> Tensor:
    """The shift that draws ``image`` into Gradient x Input of the twin at ``x_hat`` (``C x H x W``).

    ``s_hat`` is the picture scaled to a maximum of ``strength`` (default ``clip`` times the 5th percentile
    of ``|g|``, so that ``s_hat / g`` stays inside the clip range almost everywhere: on the trained
    ``paper_mlp`` the rank correlation of the twin's Gradient x Input with the picture is then 0.74-0.85,
    against 0.2 with ``clip * mean|g|``, where most pixels are clipped); then ``m = s_hat / g - x_hat`` with ``g``
    the gradient of the target logit (default: the predicted class) at ``x_hat``, clipped to
    ``[-clip, clip]`` as in the paper. Pixels whose gradient is below ``min_grad * max|g|`` get ``m = 0``
    (no finite shift can draw there).
    """
    param = next(model.parameters())
    x = x_hat.detach().to(device=param.device, dtype=param.dtype)[None].requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
        out = model(x)
        c = int(out.argmax(1)) if target is None else int(target)
        (g,) = torch.autograd.grad(out[0, c], x)
    g = g[0]
    s_hat = image if isinstance(image, Tensor) else target_picture(image, tuple(x_hat.shape))
    s_hat = s_hat.to(g)
    scale = clip * float(torch.quantile(g.abs().flatten().double(), 0.05)) if strength is None else float(strength)
    s_hat = s_hat / s_hat.abs().max().clamp_min(1e-12) * scale
    ok = g.abs() > min_grad * g.abs().max()
    m = torch.where(ok, s_hat / torch.where(ok, g, torch.ones_like(g)) - x.detach()[0], torch.zeros_like(g))
    return m.clamp(-clip, clip).cpu()


#: the config key of the custom shift's file (named in every error about it)
CUSTOM_KEY = "transform.custom.path"


def _custom_error(path: str | os.PathLike, what: str, shape: tuple[int, ...]) -> ValueError:
    return ValueError(f"the custom shift file {path} ({CUSTOM_KEY}) {what}; accepted: a file written by "
                      f"torch.save(tensor, path) holding one finite tensor of one input's shape {tuple(shape)} "
                      "(or one that broadcasts to it)")


def _load_error(err: BaseException) -> str:
    """What was wrong with a file ``torch.load`` could not read, in words (never torch's advice to load it
    unsafely)."""
    import pickle

    if isinstance(err, EOFError):
        return "ends too early (truncated or damaged)"
    if isinstance(err, pickle.UnpicklingError):
        return ("holds Python objects other than tensors and numbers (e.g. a NumPy array or an object of a class), "
                "which are not loaded: loading them could run arbitrary code")
    if isinstance(err, RuntimeError) and "zip archive" in str(err):
        return "is not a complete torch file (a damaged or truncated zip archive)"
    return f"is not a torch file ({type(err).__name__})"


def custom(path: str | os.PathLike, shape: tuple[int, ...]) -> Tensor:
    """A shift stored with ``torch.save`` (a tensor broadcastable to ``C x H x W``; a list of numbers is read as
    one). A file that is missing raises ``FileNotFoundError``; one that is empty, not a torch file, holds something
    other than a tensor (or objects torch does not load safely) or has the wrong shape raises ``ValueError``; one
    that holds NaN or inf raises :class:`~methods.registry.NonFiniteError`. Each names the file, the key
    ``transform.custom.path`` and what is accepted."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"custom shift file {path} ({CUSTOM_KEY}) does not exist (save one with "
                                "torch.save(tensor, path))")
    if os.path.isdir(path):
        raise _custom_error(path, "is a folder", shape)
    try:
        size = os.path.getsize(path)
        if size == 0:
            raise _custom_error(path, "is empty (0 bytes)", shape)
        with open(path, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                raise _custom_error(path, "is a NumPy .npy file, not a torch file (convert it: "
                                    "torch.save(torch.from_numpy(numpy.load(path)), path))", shape)
        with warnings.catch_warnings():  # a plain pickle: torch warns about its protocol before refusing it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except ValueError:
        raise
    except OSError as err:
        raise _custom_error(path, f"cannot be read ({err.strerror or err})", shape) from None
    except Exception as err:  # noqa: BLE001  (torch.load raises many types; its message advises an unsafe load)
        raise _custom_error(path, _load_error(err), shape) from None
    if isinstance(obj, Tensor):
        m = obj
    else:
        try:
            m = torch.as_tensor(obj)
        except (TypeError, ValueError, RuntimeError):
            kind = type(obj).__name__
            keys = f" with the keys {sorted(map(str, obj))[:5]}" if isinstance(obj, dict) else ""
            raise _custom_error(path, f"holds a {kind}{keys}, not a tensor", shape) from None
    if m.is_complex() or m.dtype == torch.bool:
        raise _custom_error(path, f"holds a {m.dtype} tensor, not real numbers", shape)
    m = m.float()
    check_finite(m, f"the custom shift {path}", f"; a shift must be finite everywhere ({CUSTOM_KEY})")
    try:
        return m.expand(tuple(shape)).clone()
    except RuntimeError:
        raise _custom_error(path, f"has shape {tuple(m.shape)}; expected one input's shape {tuple(shape)}",
                            shape) from None


@dataclass
class ShiftSpec:
    """One shift of a run (an entry of the ``transform`` config group): ``kind`` (one of :data:`KINDS`) and the
    parameters of that kind: ``value`` (mean_shift), ``size``/``amplitude`` (checkerboard), ``image``/``clip``/
    ``sample`` (adversarial_image: the target picture, the bound of ``|m|``, the index of ``x_hat`` in the test
    split), ``path`` (custom), ``scale`` (contrast: ``x' = scale * x + value``, ``scale > 0``; not a shift)."""

    kind: str = "mean_shift"
    value: float = -1.0
    size: int = 4
    amplitude: float = 1.0
    image: str = "cat"
    clip: float = 0.3
    sample: int = 0
    path: Optional[str] = None  # noqa: UP045
    scale: float = 0.5


def make_shift(spec: ShiftSpec, shape: tuple[int, ...], *, model: nn.Module | None = None,
               x_test: Tensor | None = None) -> Tensor | Affine:
    """Build the shift of ``spec`` for inputs of ``shape`` (``C x H x W``): a tensor ``m``, or for ``contrast`` the
    :class:`~bench.twins.build.Affine` transform ``(scale, value)``.

    ``model`` and ``x_test`` (the test images; ``x_hat = x_test[spec.sample]``) are needed by
    ``adversarial_image`` only. Raises ``ValueError`` for an unknown kind or a missing argument.
    """
    if spec.kind == "mean_shift":
        return mean_shift(shape, spec.value)
    if spec.kind == "checkerboard":
        return checkerboard(shape, spec.size, spec.amplitude)
    if spec.kind == "adversarial_image":
        if model is None or x_test is None:
            raise ValueError("the adversarial_image shift needs the model and the test images")
        if not 0 <= spec.sample < len(x_test):
            raise ValueError(f"adversarial_image: sample {spec.sample} is not an index of the {len(x_test)} test "
                             "images")
        return adversarial_image(model, x_test[spec.sample], image=spec.image, clip=spec.clip)
    if spec.kind == "contrast":
        if not spec.scale > 0:
            raise ValueError(f"the contrast transform needs scale > 0, got {spec.scale}")
        return Affine(torch.full(tuple(shape), float(spec.scale)), torch.full(tuple(shape), float(spec.value)))
    if spec.kind == "custom":
        if spec.path is None:
            raise ValueError(f"the custom shift needs `path` ({CUSTOM_KEY}=m.pt): a tensor file saved with "
                             "torch.save(tensor, path)")
        return custom(spec.path, shape)
    raise ValueError(f"unknown shift kind {spec.kind!r}; accepted: {', '.join(KINDS)}")
