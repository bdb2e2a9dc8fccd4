"""Speed benchmark: the cascading model-randomization test, ours against Quantus' MPRT, side by side.

Three runs of the same cascading test (top-down, one stage per parametrized layer) on the same model, inputs,
explained classes (the trained model's predictions), method (``methods.create("gradient", model)``) and
similarity (Spearman rank correlation), interleaved in one process:

- ``ours``: :func:`bench.sanity.model_randomization` end to end (``metrics=["spearman"]``, one batch);
- ``bare``: only the attribution passes of the same cascade: the trained model's map, then one map per stage
  of :func:`bench.randomization.randomized` (its copy, re-initializations and premise checks included);
- ``quantus``: ``quantus.MPRT`` (quantus 0.6) with a custom ``explain_func`` wrapping the same explainer and
  ``quantus.similarity_func.correlation_spearman`` (``abs=False, normalise=False``: the raw maps).

Reported: ``ours / bare`` (goal: <= 1.10) and ``quantus / ours`` (goal: >= 5 on ``paper_mlp``), from the minimum
and the median of ``--repeats`` timings (the runs rotate their order each repeat). Then a score comparison on
the CPU where both compute the same thing: our cascade is re-run with an ``init`` that reproduces Quantus'
re-initialization exactly (``torch.manual_seed(seed + 1); module.reset_parameters()``), so that both see the same
weights at every stage, and the per-sample Spearman scores, the maps and the stage order are compared. The
places where the two differ on purpose are listed in the results file (``benchmarks/randomization.md``).

Quantus is an optional extra (``pip install 'saliency-bench[quantus]'``) used only here. To keep a project venv
untouched, install it elsewhere and put that on the path::

    pip install --no-deps --target /tmp/quantus_pkgs 'quantus>=0.6,<0.7'
    PYTHONPATH=/tmp/quantus_pkgs python scripts/bench_randomization.py

quantus 0.6 imports ``cv2`` (OpenCV) at import time for perturbation functions that MPRT never calls; when OpenCV
is missing, an empty stand-in module is registered so that the import succeeds (said in the output). Without
Quantus the ``ours``/``bare`` side still runs and the Quantus ratio is reported as unavailable.

Options: ``--device`` (``cpu``, ``cuda``), ``--samples`` (default 64), ``--repeats``, ``--models``
(``paper_mlp,resnet18``; ``resnet18`` is timm's, untrained, on seeded random 3x32x32 inputs), ``--quick`` (2 repeats,
16 samples, print only unless ``--out`` is given), ``--out`` (default ``benchmarks/randomization.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import importlib
import os
import platform
import statistics
import sys
import time
import types
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

import methods  # noqa: E402
import metrics  # noqa: E402
from bench.data import Dataset, load_dataset  # noqa: E402
from bench.models import load_or_train  # noqa: E402
from bench.randomization import randomized, units  # noqa: E402
from bench.sanity import model_randomization  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "randomization.md"
QUANTUS_SEED = 42  # quantus.MPRT's default seed
GOAL_BARE = 1.10
GOAL_QUANTUS = 5.0


# ------------------------------------------------------------------------------------------------ Quantus


@dataclass
class QuantusInfo:
    module: types.ModuleType | None = None
    version: str = "unavailable"
    note: str = ""


def import_quantus() -> QuantusInfo:
    """Import quantus; register an empty ``cv2`` stand-in when OpenCV is missing (MPRT never uses it)."""
    note = ""
    try:
        quantus = importlib.import_module("quantus")
    except ModuleNotFoundError as err:
        if err.name == "quantus":
            return QuantusInfo(note="quantus is not installed (pip install 'quantus>=0.6,<0.7')")
        if err.name != "cv2":
            return QuantusInfo(note=f"quantus could not be imported: {err}")
        for name in [m for m in sys.modules if m == "quantus" or m.startswith("quantus.")]:
            del sys.modules[name]
        sys.modules["cv2"] = types.ModuleType("cv2")
        note = ("OpenCV (cv2) is not installed: an empty cv2 module was registered so that quantus imports "
                "(only its rotation/translation perturbations use cv2; MPRT does not)")
        try:
            quantus = importlib.import_module("quantus")
        except Exception as err2:  # noqa: BLE001
            return QuantusInfo(note=f"quantus could not be imported even with a cv2 stand-in: {err2}")
    except Exception as err:  # noqa: BLE001
        return QuantusInfo(note=f"quantus could not be imported: {type(err).__name__}: {err}")
    version = getattr(quantus, "__version__", "?")
    if not hasattr(quantus, "MPRT") and not hasattr(quantus, "ModelParameterRandomisation"):
        return QuantusInfo(note=f"quantus {version} has neither MPRT nor ModelParameterRandomisation")
    return QuantusInfo(module=quantus, version=version, note=note)


def quantus_metric(quantus: types.ModuleType, *, abs_: bool, normalise: bool, seed: int = QUANTUS_SEED):
    cls = getattr(quantus, "MPRT", None) or quantus.ModelParameterRandomisation
    from quantus.functions.similarity_func import correlation_spearman

    return cls(similarity_func=correlation_spearman, layer_order="top_down", seed=seed, abs=abs_,
               normalise=normalise, disable_warnings=True, display_progressbar=False)


class QuantusExplain:
    """Quantus ``explain_func``: numpy in, our gradient explainer, numpy out. Times itself; can keep the maps."""

    def __init__(self, device: torch.device, record: bool = False):
        self.device = device
        self.record = record
        self.maps: list[np.ndarray] = []
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_kw) -> np.ndarray:
        t0 = time.perf_counter()
        x = torch.from_numpy(np.ascontiguousarray(inputs)).to(self.device)
        y = torch.as_tensor(targets, device=self.device)
        out = methods.create("gradient", model)(x, y).cpu().numpy()
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        if self.record:
            self.maps.append(out.copy())
        return out


def quantus_layers(model: nn.Module) -> list[str]:
    """The stages of quantus 0.6's ``get_random_layer_generator(order="top_down")``: every module with a
    ``reset_parameters`` attribute, in ``named_modules`` (registration) order, reversed."""
    return [n for n, m in model.named_modules() if hasattr(m, "reset_parameters")][::-1]


def quantus_like_init(model: nn.Module, seed: int = QUANTUS_SEED) -> Callable[[str, Tensor, torch.Generator], None]:
    """An ``init`` for :func:`bench.randomization.randomized` that draws exactly what quantus 0.6 draws on the CPU:
    ``torch.manual_seed(seed + 1)`` then the owning module's ``reset_parameters()`` (on a CPU copy, inside
    ``fork_rng`` so the caller's global RNG is left alone)."""
    mods = dict(model.named_modules())

    def init(name: str, buf: Tensor, _gen: torch.Generator) -> None:
        mname, _, pname = name.rpartition(".")
        clone = copy.deepcopy(mods[mname]).to("cpu")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            clone.reset_parameters()
        buf.copy_(getattr(clone, pname).detach())

    return init


# -------------------------------------------------------------------------------------------------- cases


@dataclass
class Case:
    name: str
    model: nn.Module
    data: Dataset
    note: str = ""


def paper_mlp_case() -> Case:
    data = load_dataset("mnist_bundled")
    model, info = load_or_train("paper_mlp", data, progress=False)
    return Case("paper_mlp", model.eval(), data,
                f"trained on the bundled MNIST (test accuracy {info['test_acc']:.3f}, cached checkpoint)")


def resnet18_case(n: int) -> Case:
    import timm

    gen = torch.Generator().manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=10, in_chans=3)
    with torch.no_grad():  # untrained; give BatchNorm non-default values so that re-initializing it changes it
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.empty_like(m.weight).uniform_(0.5, 1.5, generator=gen))
                m.bias.copy_(torch.empty_like(m.bias).normal_(0.0, 0.1, generator=gen))
                m.running_mean.copy_(torch.empty_like(m.running_mean).normal_(0.0, 0.1, generator=gen))
                m.running_var.copy_(torch.empty_like(m.running_var).uniform_(0.5, 1.5, generator=gen))
    x = torch.rand(n + 8, 3, 32, 32, generator=gen)
    y = torch.zeros(len(x), dtype=torch.long)
    data = Dataset("random_3x32x32", x[n:], y[n:], x[:n], y[:n], num_classes=10)
    return Case("resnet18", model.eval(), data,
                "timm resnet18, untrained (timm init, BatchNorm affine and statistics set to seeded random values "
                "so that the premise check sees re-initialized BatchNorm change), seeded U[0,1) 3x32x32 inputs")


# ------------------------------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ours(case: Case, n: int, device: torch.device):
    result = model_randomization(case.model, case.data, ["gradient"], "cascading", metrics=["spearman"],
                                 n_samples=n, batch_size=n, device=device, model_name=case.name)
    _sync(device)
    return result


def run_bare(model: nn.Module, x: Tensor, target: Tensor, device: torch.device) -> int:
    methods.create("gradient", model)(x, target)
    passes = 1
    for _stage, stage_model in randomized(model, "cascading", example=x[:2]):
        methods.create("gradient", stage_model)(x, target)
        passes += 1
    _sync(device)
    return passes


def run_quantus(quantus, model: nn.Module, x_np: np.ndarray, y_np: np.ndarray, device: torch.device,
                explain: QuantusExplain) -> dict:
    metric = quantus_metric(quantus, abs_=False, normalise=False)
    scores = metric(model, x_np, y_np, explain_func=explain, batch_size=len(x_np), device=str(device))
    _sync(device)
    return scores


@dataclass
class Timings:
    seconds: dict[str, list[float]] = field(default_factory=dict)
    quantus_explain_share: list[float] = field(default_factory=list)
    passes: dict[str, int] = field(default_factory=dict)

    def stat(self, key: str, fn) -> float:
        return fn(self.seconds[key]) if self.seconds.get(key) else float("nan")


def time_case(case: Case, n: int, repeats: int, device: torch.device, quantus, log) -> tuple[Timings, object]:
    model = case.model.to(device).eval()
    x = case.data.x_test[:n].to(device)
    with torch.no_grad():
        target = model(x).argmax(1)
    x_np, y_np = x.cpu().numpy(), target.cpu().numpy()
    last: dict[str, object] = {}

    def ours():
        last["ours"] = run_ours(case, n, device)

    def bare():
        last["bare_passes"] = run_bare(model, x, target, device)

    qexp = QuantusExplain(device)

    def quant():
        qexp.seconds, qexp.calls = 0.0, 0
        last["quantus"] = run_quantus(quantus, model, x_np, y_np, device, qexp)

    runs: list[tuple[str, Callable[[], None]]] = [("ours", ours), ("bare", bare)]
    if quantus is not None:
        runs.append(("quantus", quant))
    t = Timings(seconds={k: [] for k, _ in runs})
    for _k, fn in runs:  # warm-up (imports, allocator, caches)
        fn()
    for r in range(repeats):
        order = runs[r % len(runs):] + runs[: r % len(runs)]
        for key, fn in order:
            gc.collect()
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            t.seconds[key].append(dt)
            if key == "quantus":
                t.quantus_explain_share.append(qexp.seconds / dt)
        log(f"  [{case.name}] repeat {r + 1}/{repeats}: "
            + ", ".join(f"{k} {t.seconds[k][-1]:.3f}s" for k, _ in runs))
    t.passes["bare"] = int(last["bare_passes"])
    t.passes["ours"] = len(last["ours"].stages) + 1
    if quantus is not None:
        t.passes["quantus"] = qexp.calls
    return t, last.get("ours")


# --------------------------------------------------------------------------------------- score comparison


@dataclass
class Comparison:
    stages_ours: list[str]
    stages_quantus: list[str]
    explain_calls_quantus: int
    max_map_diff: float
    rows: list[dict]  # per stage: means and max diffs
    max_diff_f64: float
    max_diff_f32: float
    max_diff_table_spearman: float
    max_diff_abs_f64: float
    max_diff_table_spearman_abs: float
    original_scores: tuple[float, float]
    duplicate_weights_quantus: list[tuple[str, str]]
    duplicate_weights_ours: list[tuple[str, str]]
    global_seed_after: int
    notes: list[str] = field(default_factory=list)


def _identical_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Pairs of same-shape, non-constant parameters that hold identical values."""
    params = [(n, p.detach().cpu()) for n, p in model.named_parameters() if p.numel() > 1]
    out = []
    for i, (na, a) in enumerate(params):
        if bool((a == a.flatten()[0]).all()):
            continue
        out += [(na, nb) for nb, b in params[i + 1:] if a.shape == b.shape and torch.equal(a, b)]
    return out


def compare_scores(case: Case, n: int, quantus) -> Comparison:
    """Same weights at every stage (``quantus_like_init``), CPU; see the module docstring."""
    cpu = torch.device("cpu")
    model = copy.deepcopy(case.model).to(cpu).eval()
    x = case.data.x_test[:n]
    with torch.no_grad():
        target = model(x).argmax(1)
    x_np, y_np = x.numpy(), target.numpy()

    rec = QuantusExplain(cpu, record=True)
    q_raw = quantus_metric(quantus, abs_=False, normalise=False)(model, x_np, y_np, explain_func=rec,
                                                                 batch_size=n, device="cpu")
    global_seed_after = torch.initial_seed()
    q_abs = quantus_metric(quantus, abs_=True, normalise=True)(model, x_np, y_np,
                                                               explain_func=QuantusExplain(cpu),
                                                               batch_size=n, device="cpu")
    torch.manual_seed(0)  # Quantus re-seeded the global RNG (seed + 1)

    ours = model_randomization(model, case.data, ["gradient"], "cascading", metrics=["spearman", "spearman_abs"],
                               n_samples=n, batch_size=n, keep_maps=n, init=quantus_like_init(model),
                               model_name=case.name)
    maps = ours.maps["gradient"]
    stages_q = [k for k in q_raw if k != "original"]
    comparison_notes = []
    # Quantus' recorded passes: the original model twice (custom_preprocess and layer 0), then one per stage.
    q_maps = rec.maps
    if len(q_maps) != len(stages_q) + 2:
        comparison_notes.append(f"Quantus made {len(q_maps)} explain calls for {len(stages_q)} stages")
    pairs = [(maps[0], q_maps[0]), (maps[0], q_maps[1])] + list(zip(maps[1:], q_maps[2:], strict=False))
    max_map_diff = max(float(np.abs(m.numpy() - qm).max()) for m, qm in pairs)

    tab = ours.table
    rows = []
    d64 = d32 = dtab = dabs = dtab_abs = 0.0
    common = [s for s, q in zip(ours.stages, stages_q, strict=False) if s == q]
    if common != ours.stages or len(ours.stages) != len(stages_q):
        comparison_notes.append(f"stage orders differ: ours {ours.stages}, Quantus {stages_q}; only the common "
                                f"prefix {common} is compared")
    ref = maps[0]
    for k, stage in enumerate(common, start=1):
        q = np.asarray(q_raw[stage], dtype=np.float64)
        qa = np.asarray(q_abs[stage], dtype=np.float64)
        s64 = metrics.spearman(ref.double(), maps[k].double()).numpy()
        s32 = metrics.spearman(ref, maps[k]).double().numpy()
        sa64 = metrics.spearman(ref.double(), maps[k].double(), absolute=True).numpy()
        sel = tab[tab.layer == stage].sort_values("sample")
        t_sp = sel[sel.metric == "spearman"].score.to_numpy(np.float64)
        t_spa = sel[sel.metric == "spearman_abs"].score.to_numpy(np.float64)
        d64 = max(d64, float(np.nanmax(np.abs(s64 - q))))
        d32 = max(d32, float(np.nanmax(np.abs(s32 - q))))
        dabs = max(dabs, float(np.nanmax(np.abs(sa64 - qa))))
        dtab = max(dtab, float(np.nanmax(np.abs(t_sp - q))))
        dtab_abs = max(dtab_abs, float(np.nanmax(np.abs(t_spa - qa))))
        rows.append(dict(stage=stage, quantus=float(np.mean(q)), ours_raw=float(np.mean(s64)),
                         ours_table=float(np.mean(t_sp)), quantus_abs=float(np.mean(qa)),
                         ours_abs_raw=float(np.mean(sa64)), ours_table_abs=float(np.mean(t_spa)),
                         table_vs_quantus=float(np.max(np.abs(t_sp - q)))))

    # Weights at the last stage: Quantus' generator run to the end vs ours.
    from quantus.helpers.model.pytorch_model import PyTorchModel

    with torch.random.fork_rng(devices=[]):
        q_stages = PyTorchModel(model, channel_first=True).get_random_layer_generator("top_down", QUANTUS_SEED)
        q_last = deque(q_stages, maxlen=1)
    ours_last = deque(randomized(model, "cascading", example=x[:2]), maxlen=1)
    qmodel = q_last[0][1] if q_last else None
    return Comparison(
        stages_ours=list(ours.stages), stages_quantus=stages_q, explain_calls_quantus=len(q_maps),
        max_map_diff=max_map_diff, rows=rows, max_diff_f64=d64, max_diff_f32=d32, max_diff_table_spearman=dtab,
        max_diff_abs_f64=dabs, max_diff_table_spearman_abs=dtab_abs,
        original_scores=(float(np.mean(q_raw["original"])), float(np.mean(q_abs["original"]))),
        duplicate_weights_quantus=_identical_pairs(qmodel) if qmodel is not None else [],
        duplicate_weights_ours=_identical_pairs(ours_last[0][1]) if ours_last else [],
        global_seed_after=global_seed_after, notes=comparison_notes,
    )


def coverage(model: nn.Module, example: Tensor) -> dict:
    """Which parameters quantus 0.6's generator re-initializes, and its stage order against execution order."""
    reset = [n for n, m in model.named_modules() if hasattr(m, "reset_parameters")]
    covered = set()
    for mname in reset:
        prefix = f"{mname}." if mname else ""
        covered |= {prefix + n for n, _ in dict(model.named_modules())[mname].named_parameters()}
    never = [n for n, _ in model.named_parameters() if n not in covered]
    empty = [n for n in reset if next(dict(model.named_modules())[n].parameters(), None) is None]
    ours = [u.name for u in units(model, "module", example=example) if u.executed]
    return dict(quantus_stages=len(reset), ours_stages=len(ours), never=never, empty=empty,
                same_order=reset == ours, params=sum(1 for _ in model.parameters()))


# ---------------------------------------------------------------------------------------------- reporting


def machine(device: torch.device, quantus: QuantusInfo) -> list[tuple[str, str]]:
    cpu_model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import scipy

    rows = [
        ("CPU", f"{cpu_model}; os.cpu_count() = {os.cpu_count()}, usable = {affinity}, "
                f"torch threads = {torch.get_num_threads()}"),
        ("device", str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")),
        ("python", platform.python_version()),
        ("torch / numpy / scipy", f"{torch.__version__} / {np.__version__} / {scipy.__version__}"),
        ("quantus", quantus.version + (f" ({quantus.note})" if quantus.note else "")),
    ]
    with contextlib.suppress(OSError):
        rows.append(("load average at start (1/5/15 min)", " / ".join(f"{v:.2f}" for v in os.getloadavg())))
    return rows


def _fmt_ratio(r: float) -> str:
    return "unavailable" if not np.isfinite(r) else f"{r:.2f}x"


def ratios(t: Timings) -> dict[str, float]:
    """Ratios of the minima, of the medians, and the median of the per-repeat ratios (``paired``: the runs of
    one repeat are adjacent in time, so they share the machine's load best)."""
    out = {}
    for label, fn in (("min", min), ("median", statistics.median)):
        ours, bare, q = t.stat("ours", fn), t.stat("bare", fn), t.stat("quantus", fn)
        out[f"ours/bare {label}"] = ours / bare
        out[f"quantus/ours {label}"] = q / ours if np.isfinite(q) else float("nan")
    s = t.seconds
    out["ours/bare paired"] = statistics.median(o / b for o, b in zip(s["ours"], s["bare"], strict=True))
    out["quantus/ours paired"] = (statistics.median(q / o for q, o in zip(s["quantus"], s["ours"], strict=True))
                                  if s.get("quantus") else float("nan"))
    return out


def render(args, mach, quantus: QuantusInfo, results: dict, comparisons: dict, coverages: dict,
           load_end: str) -> str:
    lines = ["# Cascading model randomization: ours vs. Quantus MPRT (speed and scores)", ""]
    lines += [f"Produced by `scripts/bench_randomization.py` ({' '.join(sys.argv[1:]) or 'default options'}); "
              f"{args.samples} samples in one batch, {args.repeats} timed repeats per run after one warm-up, "
              "the three runs interleaved and rotated every repeat. Issue 6, section \"Speed\".", ""]
    lines += ["## Machine", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in mach]
    lines += [f"| load average at end | {load_end} |", ""]
    lines += ["The CPU is shared with other processes: timings are noisy; the ratios use the minimum (least "
              "disturbed run) and the median. Absolute times are context only.", ""]
    lines += ["## What is timed", "",
              "- **ours**: `bench.sanity.model_randomization(model, data, [\"gradient\"], \"cascading\", "
              "metrics=[\"spearman\"], n_samples=N, batch_size=N)`, end to end (targets, reference map, copy, "
              "unit tracing, re-initializations, premise checks, maps, scores, long table, fingerprints).",
              "- **bare**: the attribution passes of the same cascade and nothing else: "
              "`methods.create(\"gradient\", model)` on the trained model, then on each stage of "
              "`bench.randomization.randomized(model, \"cascading\", example=x[:2])` (which itself copies the "
              "model once, traces it, re-initializes and checks each stage).",
              "- **quantus**: `quantus.MPRT(similarity_func=correlation_spearman, layer_order=\"top_down\", "
              "abs=False, normalise=False)` called with the same model, inputs, targets (the trained model's "
              "predictions) and an `explain_func` that wraps the same `methods.create(\"gradient\", model)` "
              "(numpy in, numpy out), `batch_size=N`.", ""]
    lines += ["## Ratios", "",
              f"Goals (issue 6): ours / bare <= {GOAL_BARE:.2f}; quantus / ours >= {GOAL_QUANTUS:.0f} on paper_mlp.",
              "",
              "| model | stages | passes (ours / bare / quantus) | ours / bare (min) | ours / bare (median) "
              "| ours / bare (paired) | quantus / ours (min) | quantus / ours (median) | quantus / ours (paired) "
              "| Quantus time in attributions |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, (t, _res, _case) in results.items():
        r = ratios(t)
        share = (f"{100 * statistics.median(t.quantus_explain_share):.0f}%" if t.quantus_explain_share
                 else "unavailable")
        passes = f"{t.passes.get('ours', '?')} / {t.passes.get('bare', '?')} / {t.passes.get('quantus', '-')}"
        cells = [_fmt_ratio(r[f"{k} {stat}"]) for k in ("ours/bare", "quantus/ours")
                 for stat in ("min", "median", "paired")]
        lines.append(f"| {name} | {t.passes.get('ours', 1) - 1} | {passes} | " + " | ".join(cells)
                     + f" | {share} |")
    lines += ["", "Against the goals (paired ratios):", ""]
    for name, (t, _res, _case) in results.items():
        r = ratios(t)
        bare, quant = r["ours/bare paired"], r["quantus/ours paired"]
        line = f"- {name}: ours / bare {_fmt_ratio(bare)} ({'met' if bare <= GOAL_BARE else 'not met'})"
        if np.isfinite(quant):
            goal = f"{'met' if quant >= GOAL_QUANTUS else 'not met'}" if name == "paper_mlp" else "no goal set"
            line += f"; Quantus / ours {_fmt_ratio(quant)} ({goal})"
        lines.append(line)
    lines += ["", "Where the difference between ours and bare goes: scoring every stage (the paper's per-sample "
              "normalization and a Spearman correlation of N maps), the long table, and the fingerprint check of "
              "the trained model. These are fixed costs per stage and per run; on `paper_mlp` a gradient pass on "
              "64 digits takes about 11 ms on 2 cores, so they weigh (measured with a profiler: about 4 ms of "
              "scoring per stage, 2 ms for the table, 4 ms for the fingerprints); on a model whose attributions "
              "cost more (resnet18) they weigh less than the run-to-run noise of a shared machine (ours / bare "
              "between 0.94x and 1.12x over three runs of this script).", ""]
    lines += ["", "paired: the median over the repeats of the ratio of two runs of the same repeat (adjacent in "
              "time).", "", "Absolute times (seconds; min / median / max over the repeats):", "",
              "| model | ours | bare | quantus |", "|---|---|---|---|"]
    for name, (t, _res, _case) in results.items():
        cells = []
        for key in ("ours", "bare", "quantus"):
            s = t.seconds.get(key)
            cells.append(f"{min(s):.3f} / {statistics.median(s):.3f} / {max(s):.3f}" if s else "unavailable")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Models and data:", ""]
    lines += [f"- {name}: {case.note}" for name, (_t, _r, case) in results.items()]
    lines += ["- \"passes\" counts gradient calls on the whole batch: ours and bare make one on the trained "
              "model plus one per stage; Quantus makes one more (it explains the trained model twice: once in "
              "`custom_preprocess` for `a_batch`, again at layer 0 for its \"original\" entry).",
              "- \"Quantus time in attributions\": the share of Quantus' wall time spent inside its "
              "`explain_func` (our explainer plus the numpy/tensor conversions), median over the repeats.", ""]

    if comparisons:
        lines += ["## Score comparison (same weights at every stage, CPU)", "",
                  "Our cascade re-run with `init=quantus_like_init(model)`, which draws exactly what Quantus "
                  "draws on the CPU (`torch.manual_seed(43)` then the module's `reset_parameters()`), so both "
                  "see the same model at every stage. Quantus run twice: raw (`abs=False, normalise=False`) and "
                  "with its defaults (`abs=True, normalise=True`). Ours: `metrics.spearman` on the raw maps "
                  "(`RandomizationResult.maps`, `keep_maps=N`) and the long table's `spearman` / `spearman_abs` "
                  "(the paper's post-processing). Differences are max |ours - Quantus| over samples and stages.",
                  ""]
        lines += ["| model | same stage order | max map diff | raw Spearman, float64 | raw Spearman, float32 "
                  "| table `spearman` | abs Spearman, float64 | table `spearman_abs` |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, c in comparisons.items():
            lines.append(f"| {name} | {c.stages_ours == c.stages_quantus} | {c.max_map_diff:.1e} "
                         f"| {c.max_diff_f64:.1e} | {c.max_diff_f32:.1e} | {c.max_diff_table_spearman:.1e} "
                         f"| {c.max_diff_abs_f64:.1e} | {c.max_diff_table_spearman_abs:.1e} |")
        lines += ["", "- raw Spearman, float64: `metrics.spearman(ref.double(), stage.double())` vs Quantus raw; "
                  "float32: the same on the float32 maps (the correlation is then computed in float32).",
                  "- abs Spearman: `metrics.spearman(..., absolute=True)` vs Quantus defaults (`normalise_by_max` "
                  "then `np.abs`); the batch-global positive scaling does not change ranks, so these agree.",
                  "- table `spearman` / `spearman_abs`: ranks of the per-sample normalized maps, clipped at the 99th "
                  "percentile (the sanity-checks paper's post-processing): the clipped top 1% tie, so these "
                  "differ from plain Spearman on purpose (see below).", ""]
        for name, c in comparisons.items():
            lines += [f"Per-stage means on {name} (stage order {', '.join(c.stages_ours[:8])}"
                      f"{', ...' if len(c.stages_ours) > 8 else ''}; Quantus' \"original\" entry: raw "
                      f"{c.original_scores[0]:.3f}, abs {c.original_scores[1]:.3f}):", "",
                      "| stage | Quantus raw | ours raw | ours table `spearman` | Quantus abs | ours abs "
                      "| ours table `spearman_abs` |", "|---|---|---|---|---|---|---|"]
            shown = c.rows if len(c.rows) <= 12 else c.rows[:6] + c.rows[-6:]
            for i, row in enumerate(shown):
                if len(c.rows) > 12 and i == 6:
                    lines.append("| ... | | | | | | |")
                lines.append(f"| {row['stage']} | {row['quantus']:.4f} | {row['ours_raw']:.4f} "
                             f"| {row['ours_table']:.4f} | {row['quantus_abs']:.4f} | {row['ours_abs_raw']:.4f} "
                             f"| {row['ours_table_abs']:.4f} |")
            lines.append("")
            dup_q = c.duplicate_weights_quantus
            lines += [f"Identical random weights at the last stage on {name}: Quantus {len(dup_q)} pair(s) of "
                      f"same-shape parameters"
                      + (f" (e.g. {', '.join(f'`{a}` = `{b}`' for a, b in dup_q[:4])})" if dup_q else "")
                      + f"; ours {len(c.duplicate_weights_ours)}. Global torch seed after Quantus' run: "
                      f"{c.global_seed_after} (Quantus calls `torch.manual_seed(seed + 1)`)."]
            lines += [f"Note: {n}" for n in c.notes]
            lines.append("")

    if coverages:
        lines += ["## Layers each one randomizes", "",
                  "| model | parameter tensors | Quantus stages | our stages (module granularity) "
                  "| registration order = execution order | parameters Quantus never re-initializes "
                  "| Quantus stages with no parameters |", "|---|---|---|---|---|---|---|"]
        for name, cov in coverages.items():
            never = ", ".join(f"`{n}`" for n in cov["never"][:6]) + (" ..." if len(cov["never"]) > 6 else "")
            lines.append(f"| {name} | {cov['params']} | {cov['quantus_stages']} | {cov['ours_stages']} "
                         f"| {cov['same_order']} | {len(cov['never'])} {never} | {len(cov['empty'])} |")
        lines.append("")

    lines += differences_section()
    return "\n".join(lines) + "\n"


#: (aspect, Quantus 0.6 MPRT, ours), read from the quantus 0.6.0 source
DIFFERENCES: list[tuple[str, str, str]] = [
    ("stage order",
     "every module with a `reset_parameters` attribute, in `named_modules()` (registration) order, reversed for "
     "`top_down` (`PyTorchModel.get_random_layer_generator`)",
     "execution order, traced with hooks on one forward pass (`bench.randomization.units`)"),
    ("what a stage randomizes",
     "`module.reset_parameters()`: a non-leaf module with that method resets its whole subtree (and its children "
     "are stages again); parameters owned by a module without it (ViT `cls_token`, `pos_embed`, custom layers) are "
     "never re-initialized; a module with the method but no parameters is a stage that changes nothing",
     "one unit per module that registers parameters directly; every parameter in exactly one unit "
     "(`check_partition`); units never executed are not stages"),
    ("random values",
     "`torch.manual_seed(seed + 1)` before every layer: layers of the same shape get identical random weights "
     "(measured above); it re-seeds the caller's global RNG; on CUDA the draws come from the CUDA RNG, so CPU and "
     "GPU runs differ",
     "a private `torch.Generator` per unit, seeded from SHA-256 of (seed, module name); drawn on the CPU, the same "
     "on every device"),
    ("BatchNorm",
     "`reset_parameters()`: weight 1, bias 0, running statistics reset",
     "the same by default (`reset_norm_stats=True`); `False` keeps the trained statistics"),
    ("premise checks",
     "none (the original model is deep-copied, but nothing checks that a stage changed any weight)",
     "every randomized parameter must differ from its trained value; the trained model's fingerprint must be "
     "unchanged at the end"),
    ("trained-model map",
     "computed twice (`custom_preprocess` for `a_batch`, then again at layer 0) and compared with itself: an "
     "`\"original\"` entry, 1.0 for a deterministic method",
     "computed once; no self-comparison row"),
    ("explained class",
     "the `y_batch` the caller gives (usually the labels)",
     "the trained model's prediction, at every stage (this benchmark gives Quantus the same predictions)"),
    ("map post-processing",
     "`explain_batch`: `normalise_by_max` over all axes of the batch array (one max-|a| scalar for the whole batch: "
     "batch-global, a sample's map depends on the other samples of its batch; a float32 division, which can merge "
     "neighbouring values into ties), then `np.abs` (defaults `normalise=True, abs=True`); no channel sum",
     "per sample, the paper's: `abs` = sum over channels of |a|, clipped at the 99th percentile, scaled to [0, 1]; "
     "`signed` = channel sum divided by the 99th percentile of |s|, clipped to [-1, 1] (`metrics.normalize`)"),
    ("Spearman",
     "`scipy.stats.spearmanr(a, b, axis=1)` on `B x F` arrays: the full `2B x 2B` correlation matrix, then the "
     "diagonal of its off-diagonal block (work and memory quadratic in the batch size); over all C x H x W elements",
     "per sample, one sort per row; the table's `spearman` / `spearman_abs` rank the paper's normalized maps "
     "(channel-summed, clipped at the 99th percentile: the top 1% tie), so they differ from plain Spearman by "
     "design; `metrics.spearman` on the raw maps equals SciPy (table above)"),
    ("SSIM",
     "`quantus.similarity_func.ssim` receives the maps flattened to `B x F` (`MPRT` reshapes before every "
     "similarity call): 1-D SSIM along the row-major pixel sequence, uniform 7-sample window, `data_range` = "
     "max - min of the pair",
     "2-D SSIM per sample with a Gaussian window (sigma 1.5), the paper's scikit-image call, on per-sample "
     "normalized maps, data range 1 (`abs`) or 2 (`signed`)"),
    ("model mode",
     "not set by `MPRT` (left to the explain function; Quantus' captum/zennit explainers call `model.eval()`)",
     "every stage in eval mode; each module's flag restored after"),
    ("result",
     "`{layer name: [score per sample]}` plus `\"original\"`; optional average or last score per sample",
     "long table, one row per sample x stage x metric (`bench.results`)"),
    ("data in between",
     "numpy: every batch goes numpy -> tensor and every map tensor -> numpy in the `explain_func`",
     "tensors stay on the device from the inputs to the scores"),
]


def differences_section() -> list[str]:
    lines = ["## Where Quantus 0.6 MPRT and ours differ on purpose", "",
             "Read from the quantus 0.6.0 source (`quantus/metrics/randomisation/mprt.py`, `quantus/metrics/base.py`, "
             "`quantus/helpers/model/pytorch_model.py`, `quantus/functions/similarity_func.py`, "
             "`quantus/functions/normalise_func.py`); the measured rows above show the effects.", "",
             "| | Quantus 0.6 `MPRT` | ours (`bench.sanity.model_randomization`) |", "|---|---|---|"]
    lines += [f"| {a} | {q} | {o} |" for a, q, o in DIFFERENCES]
    return lines


# ---------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    p.add_argument("--samples", type=int, default=None, help="inputs explained, in one batch (default 64)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per run (default 7; 2 with --quick)")
    p.add_argument("--models", default="paper_mlp,resnet18", help="comma-separated: paper_mlp, resnet18")
    p.add_argument("--quick", action="store_true", help="2 repeats, 16 samples; prints only unless --out is given")
    p.add_argument("--out", type=Path, default=None, help=f"results file (default {DEFAULT_OUT.relative_to(ROOT)})")
    p.add_argument("--no-compare", action="store_true", help="skip the score comparison")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.samples = args.samples or (16 if args.quick else 64)
    args.repeats = args.repeats or (2 if args.quick else 7)
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)
    device = torch.device(args.device)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in ("paper_mlp", "resnet18")]
    if unknown:
        p.error(f"unknown model(s) {unknown}; accepted: paper_mlp, resnet18")

    def log(msg: str) -> None:
        print(msg, flush=True)

    qinfo = import_quantus()
    log(f"quantus: {qinfo.version}" + (f" ({qinfo.note})" if qinfo.note else ""))
    mach = machine(device, qinfo)
    results: dict[str, tuple[Timings, object, Case]] = {}
    comparisons: dict[str, Comparison] = {}
    coverages: dict[str, dict] = {}
    for name in names:
        case = paper_mlp_case() if name == "paper_mlp" else resnet18_case(args.samples)
        log(f"{name}: timing ({args.repeats} repeats, {args.samples} samples, {device})")
        t, res = time_case(case, args.samples, args.repeats, device, qinfo.module, log)
        results[name] = (t, res, case)
        case.model.to("cpu")
        if qinfo.module is not None and not args.no_compare:
            log(f"{name}: score comparison (CPU)")
            comparisons[name] = compare_scores(case, args.samples, qinfo.module)
        coverages[name] = coverage(case.model, case.data.x_test[:2])
    if "resnet18" in names or not args.quick:
        with contextlib.suppress(Exception):  # a ViT shows the parameters Quantus never re-initializes
            import timm

            vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32,
                                    patch_size=8).eval()
            coverages["vit_tiny (timm, 32x32, patch 8; static check)"] = coverage(vit, torch.rand(2, 3, 32, 32))
    load_end = " / ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"

    print()
    keys = [f"{k} {stat}" for k in ("ours/bare", "quantus/ours") for stat in ("min", "median", "paired")]
    print(f"{'model':<10}" + "".join(f"{k:>21}" for k in keys))
    for name, (t, _r, _c) in results.items():
        r = ratios(t)
        print(f"{name:<10}" + "".join(f"{_fmt_ratio(r[k]):>21}" for k in keys))
    for name, c in comparisons.items():
        print(f"{name}: same stages {c.stages_ours == c.stages_quantus}; max map diff {c.max_map_diff:.1e}; "
              f"Spearman vs Quantus: raw float64 {c.max_diff_f64:.1e}, float32 {c.max_diff_f32:.1e}, "
              f"table spearman {c.max_diff_table_spearman:.1e}; abs float64 {c.max_diff_abs_f64:.1e}, "
              f"table spearman_abs {c.max_diff_table_spearman_abs:.1e}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(args, mach, qinfo, results, comparisons, coverages, load_end))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
