"""Saliency maps kept on disk (``run.save_maps=true``), so that a new score can be computed later without a model.

An experiment given a :class:`MapSink` (``maps=`` of :func:`~bench.experiments.invariance.input_invariance` and
:func:`~bench.experiments.model_randomization.model_randomization`) adds every map it computes, where it computes
it, and records every pair of maps it scores with the keys of the rows that pair produced. :meth:`MapSink.save`
writes them as one safetensors file; :func:`read_maps` reads it back and :func:`score_saved` scores its pairs with
:func:`bench.core.scoring.score_maps`, the code path of the experiments. The job (:mod:`bench.cli.job`) writes one
file per chunk of its plan, ``<job>/maps/<job hash>/<chunk key>.safetensors`` (the chunk keys of
:class:`bench.cli.stream.Parts`: ``invariance-all-0000000``, ``randomization-<test>-0000064`` ...), each written
atomically before the chunk counts as done; ``salbench-rescore`` (:mod:`bench.cli.rescore`) reads them.

One file (format :data:`FORMAT`) holds one experiment run on one chunk of samples:

* tensors ``sample``, ``data_index``, ``label``, ``target`` (int64 ``[n]``): row ``i`` of every map in the file is
  the job's sample ``sample[i]`` (the results table's ``sample``; ``data_index``, ``label``, ``target``: its
  provenance columns, :mod:`bench.core.results`);
* tensors ``map/<side>/<method>/<condition>/<layer>/<seed>`` (``[n, *input_shape]``, in the stored dtype), and for
  float16 ``scale/...`` of the same name (float32 ``[n]``, a power of two per sample: the map is
  ``map * scale``);
* tensors ``aux/<k>``: the partner index (int64) and the NaN mask (bool) of the ``control:other`` pairs;
* the header's metadata (strings): ``format``, ``dtype``, ``spatial_dims`` and ``experiment``; ``table``
  (JSON: what the experiment's table builder needs besides the scores: model and data set names, seed, mode,
  method order); ``maps`` (JSON: ``{tensor name: {experiment, method, condition, layer, seed, side, computed,
  scale}}``: the authoritative description of each map; ``computed``: the dtype the map was computed in, which
  :meth:`SavedMaps.map` gives back); ``pairs`` (JSON list: ``{"keys": the row keys of the scored entry,
  "first", "second"`` map names, optional ``"index"`` (the second map is ``second[index]``) and ``"mask"``
  (scores NaN where true)``}``); and what the job adds: ``job_hash``, ``chunk``, ``test``, ``condition``,
  ``start``, ``stop``.

Sides: ``f1`` and ``f2`` (input invariance: the reference network's map, shared by every shift, so its
``condition`` is ``"-"``; the twin's map under the shift named in ``condition``); ``reference`` (randomization:
the trained model's map, or the retrained control's in the label test), ``repeat`` (``control:repeat``), ``trained``
(the label test's trained model, ``control:retrained``), ``stage`` (a randomization stage, ``layer`` its name and
``seed`` its re-initialization seed), ``null`` (``control:input`` / ``control:edges``: method ``"-"``). The
reference method's maps are stored under method ``control:gradient``.

Precision: a map is never stored wider than it was computed (float32 maps asked for as float64 stay float32) and is
read back in the dtype it was computed in, so the scores run the job's arithmetic. ``float32`` keeps the maps of the
randomization tests (computed in float32) exactly, ``float64`` also those of the input-invariance test (computed in
float64 by default): a rescored score then equals the job's to the last bit on the same device (float32 storage of
the invariance maps: within about 1e-12 on the bundled models). ``float16`` stores each sample's map divided by a
power of two that brings its largest magnitude into [2^14, 2^15) (no overflow, no underflow of the large values),
so each value keeps a relative precision of 2^-11 (about 5e-4) of its sample's largest one; scores of such maps
differ from the job's by about 1e-4 (SSIM, rank correlations) to 1e-2 (HOG, whose orientation bins are coarse),
bounded in ``tests/test_rescore.py``. Sizes: ``float16`` halves ``float32``; a map holds ``C x H x W`` values per
sample; per sample, the invariance test keeps methods x (1 + shifts) maps (the first network's once per method), and
each randomization test (methods + 1) x (stages + 2) + 2 (the reference method's included; the label test one more
per method: the trained model's).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bench._io import atomic_write
from bench.core.settings import MAP_DTYPES

__all__ = ["FORMAT", "MAPS_DIR", "MAP_DTYPES", "SIDES", "MapSink", "SavedMaps", "read_maps", "score_saved",
           "maps_folder"]

log = logging.getLogger(__name__)

FORMAT = "salbench-maps/1"
#: the folder of a job's maps: ``<job>/maps/<job hash>/``
MAPS_DIR = "maps"
#: the accepted ``run.maps_dtype`` values (:data:`bench.core.settings.MAP_DTYPES`) as torch dtypes
_TORCH_DTYPES = {name: getattr(torch, name) for name in MAP_DTYPES}
SIDES = ("f1", "f2", "reference", "repeat", "trained", "stage", "null")
_PROVENANCE = ("data_index", "label", "target")
#: float16 maps are scaled so that each sample's largest magnitude lies in [2^14, 2^15): below float16's max
_F16_TOP = 15


def maps_folder(out: str | os.PathLike, job_hash: str) -> Path:
    """Where the job in ``out`` whose config hash is ``job_hash`` keeps its maps (module docstring)."""
    return Path(out) / MAPS_DIR / job_hash


def _check_dtype(dtype: str) -> torch.dtype:
    if dtype not in _TORCH_DTYPES:
        raise ValueError(f"run.maps_dtype={dtype!r} is not accepted; accepted: {', '.join(MAP_DTYPES)}")
    return _TORCH_DTYPES[dtype]


class MapSink:
    """The maps of one experiment run, collected in memory (CPU, in the stored dtype) until :meth:`save`.

    ``dtype``: ``float16`` (default), ``float32`` or ``float64`` (module docstring: precision). ``condition``: the
    name the rows give a randomization test (the job's config entry); ``None``: the experiment's own (the mode).
    Raises ``ValueError`` for another dtype, naming the accepted ones."""

    def __init__(self, dtype: str = "float16", condition: str | None = None) -> None:
        self.condition = condition
        self.dtype_name = dtype
        self.dtype = _check_dtype(dtype)
        self.tensors: dict[str, Tensor] = {}
        self.info: dict[str, dict[str, Any]] = {}
        self.pairs: list[dict[str, Any]] = []
        self.table: dict[str, Any] = {}
        self.experiment = ""
        self.spatial_dims: int | None = None
        self._provenance: dict[str, Tensor] = {}
        self._n = 0

    def describe(self, experiment: str, *, spatial_dims: int, provenance: Mapping[str, Tensor],
                 **table: Any) -> None:
        """What the experiment explains: its name, the maps' ``spatial_dims`` (2 images, 1 signals, 0 vectors),
        ``provenance`` (``{data_index, label, target}``, int vectors ``[n]`` of the explained samples) and the
        JSON-able keyword arguments of its table builder (``table``). Raises ``ValueError`` for a provenance
        column missing or of another length."""
        missing = [k for k in _PROVENANCE if k not in provenance]
        if missing:
            raise ValueError(f"MapSink.describe: provenance lacks {missing}; accepted: {', '.join(_PROVENANCE)}")
        lengths = {k: len(provenance[k]) for k in _PROVENANCE}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"MapSink.describe: provenance vectors of different lengths {lengths}")
        self.experiment, self.spatial_dims, self.table = experiment, int(spatial_dims), dict(table)
        self._provenance = {k: torch.as_tensor(provenance[k]).detach().to("cpu", torch.int64).clone()
                            for k in _PROVENANCE}
        self._n = lengths["target"]

    def add(self, maps: Tensor, *, method: str, side: str, condition: str = "-", layer: str = "-",
            seed: int = 0) -> str:
        """Keep ``maps`` (``[n, *input_shape]``, one per explained sample, any device and float dtype): a CPU copy
        in the stored dtype. Returns the tensor's name, to be given to :meth:`pair`. Raises ``ValueError`` for an
        unknown ``side`` or maps of another sample count than :meth:`describe` said."""
        if side not in SIDES:
            raise ValueError(f"unknown map side {side!r}; accepted: {', '.join(SIDES)}")
        if self._n and len(maps) != self._n:
            raise ValueError(f"{len(maps)} maps for {self._n} explained samples ({method}, {side}, {layer})")
        base = f"map/{side}/{method}/{condition}/{layer}/{int(seed)}"
        name, k = base, 1
        while name in self.tensors:
            k += 1
            name = f"{base}#{k}"
        native = maps.dtype if maps.dtype in _TORCH_DTYPES.values() else torch.float32
        stored, scale = _encode(maps.detach(), self.dtype, native)
        self.tensors[name] = stored
        entry = {"experiment": self.experiment, "method": str(method), "condition": str(condition),
                 "layer": str(layer), "seed": int(seed), "side": side, "computed": str(native).split(".")[-1],
                 "scale": None}
        if scale is not None:
            entry["scale"] = "scale/" + name[len("map/"):]
            self.tensors[entry["scale"]] = scale
        self.info[name] = entry
        return name

    def aux(self, values: Tensor) -> str:
        """Keep an index (int) or mask (bool) vector a pair refers to; returns its name."""
        name = f"aux/{sum(n.startswith('aux/') for n in self.tensors)}"
        self.tensors[name] = values.detach().to("cpu").clone().contiguous()
        return name

    def pair(self, keys: Mapping[str, Any], first: str, second: str, *, index: str | None = None,
             mask: str | None = None) -> None:
        """Record that the maps ``first`` and ``second`` (names from :meth:`add`; the second one ``second[index]``
        when ``index`` is given) were scored into the entry whose row keys are ``keys`` (the experiment's entry
        columns: ``method``, ``condition``, ``layer``, ``seed``), the scores NaN where ``mask`` is true."""
        for name in (first, second):
            if name not in self.info:
                raise ValueError(f"MapSink.pair: no map named {name!r}")
        entry: dict[str, Any] = {"keys": {k: (int(v) if k == "seed" else str(v)) for k, v in keys.items()},
                                 "first": first, "second": second}
        if index is not None:
            entry["index"] = index
        if mask is not None:
            entry["mask"] = mask
        self.pairs.append(entry)

    def __len__(self) -> int:
        return len(self.info)

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors held (about the file's size)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def save(self, path: str | os.PathLike, *, sample_offset: int = 0, meta: Mapping[str, Any] | None = None
             ) -> Path:
        """Write the maps to ``path`` (safetensors, atomically: :func:`bench._io.atomic_write`). ``sample_offset``:
        the job's number of the first explained sample (its chunk's start): added to ``sample`` and ``data_index``.
        ``meta``: more header entries (strings; the job's chunk key, test, condition, start, stop, job hash).
        Returns ``path``. Raises :class:`bench._io.DiskFullError` naming the path and the space needed when the disk
        is full, ``ValueError`` when :meth:`describe` was not called."""
        from safetensors.torch import save_file

        if self.spatial_dims is None:
            raise ValueError("MapSink.save: describe() was not called (what the maps explain is unknown)")
        offset = int(sample_offset)
        tensors = dict(self.tensors)
        tensors["sample"] = torch.arange(offset, offset + self._n, dtype=torch.int64)
        tensors["data_index"] = self._provenance["data_index"] + offset
        tensors["label"] = self._provenance["label"].clone()
        tensors["target"] = self._provenance["target"].clone()
        header = {"format": FORMAT, "dtype": self.dtype_name, "experiment": self.experiment,
                  "spatial_dims": str(self.spatial_dims), "table": json.dumps(self.table),
                  "maps": json.dumps(self.info), "pairs": json.dumps(self.pairs)}
        header.update({str(k): str(v) for k, v in (meta or {}).items()})
        needed = sum(t.numel() * t.element_size() for t in tensors.values())
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header), needed=needed)


def _encode(maps: Tensor, dtype: torch.dtype, native: torch.dtype) -> tuple[Tensor, Tensor | None]:
    """``(stored, scale)``: the maps on the CPU in ``dtype``, or in their own ``native`` dtype where that is smaller
    (float32 maps asked for as float64 are stored as float32: nothing is lost) (a copy); for float16 also the
    per-sample power of two they were divided by (float32 ``[n]``; None otherwise)."""
    maps = maps.to("cpu")
    if dtype != torch.float16:
        smaller = native if torch.finfo(native).bits < torch.finfo(dtype).bits else dtype
        return maps.to(dtype=smaller, copy=True).contiguous(), None
    peak = maps.flatten(1).abs().amax(1).double() if maps.numel() else torch.zeros(len(maps), dtype=torch.float64)
    _, exponent = torch.frexp(peak)  # peak in [2^(e-1), 2^e)
    exponent = torch.where((peak > 0) & torch.isfinite(peak), exponent - _F16_TOP, torch.zeros_like(exponent))
    scale = torch.ldexp(torch.ones_like(peak), exponent)
    view = scale.reshape(-1, *([1] * (maps.ndim - 1)))
    stored = (maps.double() / view).to(torch.float16).contiguous()
    return stored, scale.to(torch.float32)


@dataclass
class SavedMaps:
    """One file of saved maps (:func:`read_maps`): ``meta`` the header (``table``, ``maps``, ``pairs`` decoded from
    JSON, ``spatial_dims``, ``start``, ``stop`` as ints), ``info`` per map name, ``pairs``, and ``tensors`` as
    stored. :meth:`map` gives a map decoded."""

    path: Path
    meta: dict[str, Any]
    info: dict[str, dict[str, Any]]
    pairs: list[dict[str, Any]]
    tensors: dict[str, Tensor] = field(repr=False)

    def map(self, name: str) -> Tensor:
        """The map ``name`` (``[n, *input_shape]``) in the dtype it was computed in (float16 ones multiplied by
        their scale), so that a score computed from it runs the job's arithmetic. Raises ``KeyError`` naming the
        file for an unknown name."""
        if name not in self.info:
            raise KeyError(f"{self.path} holds no map named {name!r}")
        info = self.info[name]
        stored, scale = self.tensors[name], info.get("scale")
        native = _TORCH_DTYPES.get(info.get("computed", ""), stored.dtype)
        if scale is None:
            return stored.to(native)
        s = self.tensors[scale].to(native)
        return stored.to(native) * s.reshape(-1, *([1] * (stored.ndim - 1)))

    def provenance(self) -> dict[str, Tensor]:
        """``{sample, data_index, label, target}``: int64 ``[n]``."""
        return {k: self.tensors[k] for k in ("sample", *_PROVENANCE)}


def read_maps(path: str | os.PathLike) -> SavedMaps:
    """Read a file written by :meth:`MapSink.save`. Raises ``ValueError`` naming the file when it is not a
    readable safetensors file of :data:`FORMAT`."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001  (safetensors raises several types for a damaged file)
        raise ValueError(f"{path} is not a readable maps file ({type(err).__name__}: {err})") from err
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a maps file of format {FORMAT!r} (format {header.get('format')!r})")
    meta: dict[str, Any] = dict(header)
    try:
        for key in ("table", "maps", "pairs"):
            meta[key] = json.loads(header[key])
        for key in ("spatial_dims", "start", "stop"):
            if key in header:
                meta[key] = int(header[key])
    except (KeyError, ValueError) as err:
        raise ValueError(f"{path}: a damaged maps header ({type(err).__name__}: {err})") from err
    return SavedMaps(path, meta, meta["maps"], meta["pairs"], tensors)


def score_saved(saved: SavedMaps, names: Sequence[str]) -> list[tuple[dict[str, Any], dict[str, Tensor]]]:
    """The entries ``(row keys, {score: Tensor[n]})`` of every pair in ``saved``, scored with the registered scores
    ``names`` by :func:`bench.core.scoring.score_maps` exactly as the experiment scored them (the first map as a
    :class:`~bench.core.scoring.MapBatch` with the file's ``spatial_dims``; the second one indexed, the scores
    masked). Scores that do not apply to the maps (SSIM, HOG on vectors) are left out, as in the experiments.
    Raises ``ValueError`` for an unknown score, naming the registered ones."""
    from bench.core.scoring import MapBatch, score_maps

    dims = saved.meta["spatial_dims"]
    batches: dict[str, MapBatch] = {}
    entries = []
    for pair in saved.pairs:
        first = pair["first"]
        if first not in batches:
            batches[first] = MapBatch(saved.map(first), spatial_dims=dims)
        second = saved.map(pair["second"])
        if "index" in pair:
            second = second[saved.tensors[pair["index"]]]
        scores = score_maps(batches[first], second, names, spatial_dims=dims)
        if "mask" in pair:
            mask = saved.tensors[pair["mask"]]
            scores = {k: v.masked_fill(mask.to(v.device), float("nan")) for k, v in scores.items()}
        entries.append((dict(pair["keys"]), scores))
    return entries
