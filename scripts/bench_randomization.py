"""Speed benchmark: the cascading model-randomization test, ours against Quantus' MPRT, side by side.

Three runs of the same cascading test (top-down, one stage per parametrized layer) on the same model, inputs,
explained classes (the trained model's predictions), method (``methods.create("gradient", model)``) and
similarity (Spearman), interleaved in one process: ``ours`` (:func:`bench.experiments.model_randomization`, end
to end), ``bare`` (only the attribution passes of the same cascade, on the stages of
:func:`bench.randomization.randomized`) and ``quantus`` (``quantus.MPRT`` 0.6 with an ``explain_func`` wrapping
the same explainer, Spearman on the raw maps). Reported: ``ours / bare`` (goal <= 1.10) and ``quantus / ours``
(goal >= 5 on ``paper_mlp``) from the minima, the medians and the paired ratios of ``--repeats`` timings (the runs
rotate their order every repeat), and which layers each one randomizes (a static check, also on a timm ViT).
That both give the same Spearman scores for the same weights is checked by ``tests/test_quantus_parity.py``
(``pytest -m slow``), not here.

The results file (``--out``, default ``benchmarks/randomization.md``; none with ``--quick`` unless given) is
rewritten above the line :data:`KEEP_MARKER`; the hand-written part below it is kept (for a new file, the default
file's is copied).

Quantus is an optional extra (``saliency-bench[quantus]``) used only here; to leave the venv untouched::

    pip install --no-deps --target /tmp/quantus_pkgs 'quantus>=0.6,<0.7'
    PYTHONPATH=/tmp/quantus_pkgs python scripts/bench_randomization.py      # or --quick, --device cuda, ...

Without OpenCV, an empty ``cv2`` stand-in is registered for quantus' import (only perturbations MPRT never calls
use it; said in the output); without Quantus, ``ours``/``bare`` still run and the Quantus ratios read
"unavailable". ``--no-compare`` is still accepted and does nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import statistics
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (ROOT, HERE):  # run as a plain script from a checkout: the project and the scripts' helpers
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from _machine import describe, format_load, load_average  # noqa: E402

import methods  # noqa: E402
from bench.core.data import Dataset, load_dataset  # noqa: E402
from bench.core.settings import RunSettings, ScoreSettings  # noqa: E402
from bench.core.training import load_or_train  # noqa: E402
from bench.experiments.model_randomization import model_randomization  # noqa: E402
from bench.randomization import randomized, units  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "randomization.md"
#: the results file's line that separates the part this script writes (above) from the part it keeps (below)
KEEP_MARKER = "<!-- scripts/bench_randomization.py rewrites everything above this line and keeps what is below -->"
QUANTUS_SEED = 42  # quantus.MPRT's default seed
GOAL_BARE = 1.10
GOAL_QUANTUS = 5.0


# ------------------------------------------------------------------------------------------------ Quantus


@dataclass
class QuantusInfo:
    """The imported ``quantus`` module (``None`` when unavailable), its version and a remark on the import."""

    module: types.ModuleType | None = None
    version: str = "unavailable"
    note: str = ""


def import_quantus() -> QuantusInfo:
    """Import quantus, registering an empty ``cv2`` stand-in when OpenCV is missing (quantus 0.6 imports it for
    perturbations that MPRT never calls). Never raises: when unavailable, ``module`` is ``None``, ``note`` says why."""
    if importlib.util.find_spec("quantus") is None:
        return QuantusInfo(note="quantus is not installed (pip install 'quantus>=0.6,<0.7')")
    note = ""
    if importlib.util.find_spec("cv2") is None:
        sys.modules["cv2"] = types.ModuleType("cv2")
        note = ("OpenCV (cv2) is not installed: an empty cv2 module was registered so that quantus imports "
                "(only its rotation/translation perturbations use cv2; MPRT does not)")
    try:
        quantus = importlib.import_module("quantus")
    except Exception as err:  # noqa: BLE001
        return QuantusInfo(note=f"quantus could not be imported: {type(err).__name__}: {err}")
    version = getattr(quantus, "__version__", "?")
    if not hasattr(quantus, "MPRT") and not hasattr(quantus, "ModelParameterRandomisation"):
        return QuantusInfo(note=f"quantus {version} has neither MPRT nor ModelParameterRandomisation")
    return QuantusInfo(module=quantus, version=version, note=note)


def quantus_metric(quantus: types.ModuleType, seed: int = QUANTUS_SEED):
    """Quantus' cascading test as timed here: top-down, Spearman on the raw maps (``abs=False, normalise=False``)."""
    cls = getattr(quantus, "MPRT", None) or quantus.ModelParameterRandomisation
    from quantus.functions.similarity_func import correlation_spearman

    return cls(similarity_func=correlation_spearman, layer_order="top_down", seed=seed, abs=False,
               normalise=False, disable_warnings=True, display_progressbar=False)


class QuantusExplain:
    """Quantus ``explain_func``: numpy in, our gradient explainer, numpy out. Adds its own time to ``seconds``
    and counts its ``calls`` (reset them between runs)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **_kw) -> np.ndarray:
        t0 = time.perf_counter()
        x = torch.from_numpy(np.ascontiguousarray(inputs)).to(self.device)
        y = torch.as_tensor(targets, device=self.device)
        out = methods.create("gradient", model)(x, y).cpu().numpy()
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


# -------------------------------------------------------------------------------------------------- cases


@dataclass
class Case:
    """A model in eval mode, its data (the first test inputs are explained) and a line on where they come from."""

    name: str
    model: nn.Module
    data: Dataset
    note: str = ""


def paper_mlp_case() -> Case:
    """``paper_mlp`` trained on the bundled MNIST by :func:`load_or_train` (trains once, then the cached checkpoint)."""
    data = load_dataset("mnist_bundled")
    model, info = load_or_train("paper_mlp", data, progress=False)
    return Case("paper_mlp", model.eval(), data,
                f"trained on the bundled MNIST (test accuracy {info['test_acc']:.3f}, cached checkpoint)")


def resnet18_case(n: int) -> Case:
    """timm's ``resnet18``, untrained and seeded, on ``n`` seeded random 3x32x32 test inputs (needs timm)."""
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
    """``ours``: the whole cascading experiment on the first ``n`` test inputs, in one batch."""
    result = model_randomization(case.model, case.data, ["gradient"], "cascading",
                                 run=RunSettings(n_samples=n, batch_size=n, device=str(device)),
                                 scoring=ScoreSettings(names=["spearman"]), model_name=case.name)
    _sync(device)
    return result


def run_bare(model: nn.Module, x: Tensor, target: Tensor, device: torch.device) -> int:
    """``bare``: the trained model's map and one map per cascade stage, nothing else; returns the passes made."""
    methods.create("gradient", model)(x, target)
    passes = 1
    for _stage, stage_model in randomized(model, "cascading", example=x[:2]):
        methods.create("gradient", stage_model)(x, target)
        passes += 1
    _sync(device)
    return passes


def run_quantus(quantus, model: nn.Module, x_np: np.ndarray, y_np: np.ndarray, device: torch.device,
                explain: QuantusExplain) -> dict:
    """``quantus``: ``MPRT`` on the same inputs and targets; returns its ``{layer: [score per sample]}``."""
    metric = quantus_metric(quantus)
    scores = metric(model, x_np, y_np, explain_func=explain, batch_size=len(x_np), device=str(device))
    _sync(device)
    return scores


@dataclass
class Timings:
    """Per run (``ours``, ``bare``, ``quantus``): the seconds of each repeat; Quantus' share of time in its
    ``explain_func`` per repeat; the attribution passes each run made."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    quantus_explain_share: list[float] = field(default_factory=list)
    passes: dict[str, int] = field(default_factory=dict)

    def stat(self, key: str, fn) -> float:
        """``fn`` (``min``, ``statistics.median``) of run ``key``'s seconds; NaN when it did not run."""
        return fn(self.seconds[key]) if self.seconds.get(key) else float("nan")


def time_case(case: Case, n: int, repeats: int, device: torch.device, quantus, log) -> tuple[Timings, object]:
    """Time the runs on ``case`` (one warm-up each, then ``repeats`` rounds, their order rotated every round);
    ``quantus=None`` leaves Quantus out. Returns the timings and the last ``ours`` result."""
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


# ---------------------------------------------------------------------------------------- layer coverage


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


def machine_rows(device: torch.device, quantus: QuantusInfo) -> list[tuple[str, str]]:
    """The results file's machine table as ``(what, value)`` rows (from :func:`_machine.describe`)."""
    m = describe(device)
    v = m.versions
    return [
        ("CPU", f"{m.cpu_model}; os.cpu_count() = {m.cpu_count}, usable = {m.usable_cpus}, "
                f"torch threads = {m.torch_threads}"),
        ("device", m.device + (f" ({m.gpu})" if m.gpu else "")),
        ("python", m.python),
        ("torch / numpy / scipy", f"{v['torch']} / {v['numpy']} / {v['scipy']}"),
        ("quantus", quantus.version + (f" ({quantus.note})" if quantus.note else "")),
        ("load average at start (1/5/15 min)", m.load_str()),
    ]


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


def render(args, mach, results: dict, coverages: dict, load_end: str) -> str:
    """The generated part of the results file (everything above :data:`KEEP_MARKER`), ending in a blank line."""
    lines = ["# Cascading model randomization: ours vs. Quantus MPRT (speed and scores)", ""]
    lines += [f"Produced by `scripts/bench_randomization.py` ({' '.join(sys.argv[1:]) or 'default options'}); "
              f"{args.samples} samples in one batch, {args.repeats} timed repeats per run after one warm-up, "
              "the three runs interleaved and rotated every repeat.", ""]
    lines += ["## Machine", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in mach]
    lines += [f"| load average at end | {load_end} |", ""]
    lines += ["The CPU is shared with other processes: timings are noisy; the ratios use the minimum (least "
              "disturbed run) and the median. Absolute times are context only.", ""]
    lines += ["## What is timed", "",
              "- **ours**: `bench.experiments.model_randomization(model, data, [\"gradient\"], \"cascading\", "
              "run=RunSettings(n_samples=N, batch_size=N), scoring=ScoreSettings(names=[\"spearman\"]))`, end to "
              "end (targets, reference map, copy, unit tracing, re-initializations, premise checks, maps, scores, "
              "long table, fingerprints).",
              "- **bare**: the attribution passes of the same cascade and nothing else: "
              "`methods.create(\"gradient\", model)` on the trained model, then on each stage of "
              "`bench.randomization.randomized(model, \"cascading\", example=x[:2])` (which itself copies the "
              "model once, traces it, re-initializes and checks each stage).",
              "- **quantus**: `quantus.MPRT(similarity_func=correlation_spearman, layer_order=\"top_down\", "
              "abs=False, normalise=False)` called with the same model, inputs, targets (the trained model's "
              "predictions) and an `explain_func` that wraps the same `methods.create(\"gradient\", model)` "
              "(numpy in, numpy out), `batch_size=N`.", ""]
    lines += ["## Ratios", "",
              f"Goals: ours / bare <= {GOAL_BARE:.2f}; quantus / ours >= {GOAL_QUANTUS:.0f} on paper_mlp.",
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
    return "\n".join(lines) + "\n"


def kept_part(out: Path) -> str:
    """The hand-written part of the results file: from :data:`KEEP_MARKER` (included) to the end, taken from
    ``out`` when it has the marker, else from :data:`DEFAULT_OUT`; ``""`` when neither has it."""
    for path in (out, DEFAULT_OUT):
        text = path.read_text() if path.is_file() else ""
        if KEEP_MARKER in text:
            return text[text.index(KEEP_MARKER):]
    return ""


# ---------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, time every model, print the ratios, write the results file (unless ``--quick`` without
    ``--out``); returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    p.add_argument("--samples", type=int, default=None, help="inputs explained, in one batch (default 64)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per run (default 7; 2 with --quick)")
    p.add_argument("--models", default="paper_mlp,resnet18", help="comma-separated: paper_mlp, resnet18")
    p.add_argument("--quick", action="store_true", help="2 repeats, 16 samples; prints only unless --out is given")
    p.add_argument("--out", type=Path, default=None, help=f"results file (default {DEFAULT_OUT.relative_to(ROOT)})")
    p.add_argument("--no-compare", action="store_true",
                   help="no effect, kept for old command lines: the score comparison with Quantus is now the test "
                        "tests/test_quantus_parity.py (pytest -m slow)")
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
    mach = machine_rows(device, qinfo)
    results: dict[str, tuple[Timings, object, Case]] = {}
    coverages: dict[str, dict] = {}
    for name in names:
        case = paper_mlp_case() if name == "paper_mlp" else resnet18_case(args.samples)
        log(f"{name}: timing ({args.repeats} repeats, {args.samples} samples, {device})")
        t, res = time_case(case, args.samples, args.repeats, device, qinfo.module, log)
        results[name] = (t, res, case)
        case.model.to("cpu")
        coverages[name] = coverage(case.model, case.data.x_test[:2])
    if "resnet18" in names or not args.quick:
        with contextlib.suppress(Exception):  # a ViT shows the parameters Quantus never re-initializes
            import timm

            vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32,
                                    patch_size=8).eval()
            coverages["vit_tiny (timm, 32x32, patch 8; static check)"] = coverage(vit, torch.rand(2, 3, 32, 32))
    load_end = format_load(load_average())

    print()
    keys = [f"{k} {stat}" for k in ("ours/bare", "quantus/ours") for stat in ("min", "median", "paired")]
    print(f"{'model':<10}" + "".join(f"{k:>21}" for k in keys))
    for name, (t, _r, _c) in results.items():
        r = ratios(t)
        print(f"{name:<10}" + "".join(f"{_fmt_ratio(r[k]):>21}" for k in keys))
    if out is not None:
        kept = kept_part(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(args, mach, results, coverages, load_end) + kept)
        print(f"wrote {out}" + ("" if kept else f" (no {KEEP_MARKER!r} part to keep)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
