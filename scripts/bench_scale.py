"""Scale, measured: the input-invariance test and the cascading randomization for Gradient on an ImageNet-sized model.

    python scripts/bench_scale.py              # CPU, batch sizes 1, 4, 8; writes benchmarks/scale.md
    python scripts/bench_scale.py --batch-sizes 1,8,32 --n-samples 64 --stages 8
    python scripts/bench_scale.py --device cuda --batch-sizes 8,32,128 --n-samples 256   # fills the GPU section

What is measured, per batch size ``B`` (``run.batch_size``) and per test, each in a fresh Python process (the script
re-invokes itself with ``--one TEST B``) so that memory peaks never mix: the library calls
:func:`bench.experiments.invariance.input_invariance` (Gradient, one shift: the mean shift, ``m = -1``; float64 and
the max-pool tie-break, the test's defaults) and :func:`bench.experiments.model_randomization.model_randomization`
(Gradient, ``RandomizationSpec(mode="cascading", stages=K)``: the first ``K`` stages of the cascade from the logits
down), on ``run.n_samples = N`` inputs of ``3 x 224 x 224``, end to end (predictions, premise checks, maps, scores,
the long table). Reported: samples per second; attribution passes, counted with the cost model
(:func:`bench.core.cost.invariance_passes`, :func:`bench.core.cost.randomization_passes`: passes per sample x N) and
passes per second; the peak resident set size of the process (``resource.getrusage``), with its RSS before the test
(torch, timm and the model loaded), and on CUDA ``torch.cuda.max_memory_allocated`` over the test.

The cost-model cross-check: after the test, the same process times plain Gradient (``methods.create("gradient",
model)``) on one batch of ``B`` inputs in the test's precision (float64 for the invariance test, float32 for the
randomization), the median of ``--repeats`` calls after a warm-up; predicted seconds = passes x that time / B, and
the ratio measured / predicted says how much the harness adds around the passes it is charged for (the premise
checks' forward passes, the tie-break max-pool, the scores, building the twin and the randomized copies).

The model is ``create_model("timm:resnet50", (3, 224, 224), 1000)`` with random weights (a pass costs the same
trained or not; nothing is downloaded); its BatchNorm layers get seeded random affine parameters and statistics, so
that the randomization's premise check sees re-initialized BatchNorm change. The inputs are seeded U[0, 1) images.
The results file keeps one section per device kind: a CPU run rewrites the CPU section and keeps the GPU section,
and the other way round.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (ROOT, HERE):  # run as a plain script from a checkout: the project and the scripts' helpers
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from _machine import describe  # noqa: E402

import methods  # noqa: E402
from bench.core.cost import invariance_passes, randomization_passes  # noqa: E402
from bench.core.data import Dataset  # noqa: E402
from bench.core.explain import method_specs  # noqa: E402
from bench.core.models import create_model  # noqa: E402
from bench.core.settings import RunSettings  # noqa: E402
from bench.experiments.invariance import input_invariance  # noqa: E402
from bench.experiments.model_randomization import RandomizationSpec, model_randomization  # noqa: E402
from bench.twins.shifts import mean_shift  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "scale.md"
TESTS = ("invariance", "randomization")
METHOD = "gradient"
#: sections of the results file, one per device kind (a run rewrites its own and keeps the other)
SECTIONS = {"cpu": "CPU", "cuda": "GPU (CUDA)"}
GPU_PLACEHOLDER = "not measured: no GPU lent to this session."


# ---------------------------------------------------------------------------------------------- one config


def make_model(name: str, size: int, seed: int = 0) -> nn.Module:
    """``name`` (``timm:resnet50``) for ``3 x size x size`` inputs and 1000 classes, eval mode, random weights; every
    BatchNorm's affine parameters and running statistics set to seeded random values (timm's init leaves biases 0
    and the last BatchNorm of a block at weight 0, values a re-initialization would reproduce)."""
    gen = torch.Generator().manual_seed(seed)
    model = create_model(name, (3, size, size), 1000)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.track_running_stats:
                m.weight.copy_(torch.empty_like(m.weight).uniform_(0.5, 1.5, generator=gen))
                m.bias.copy_(torch.empty_like(m.bias).normal_(0.0, 0.1, generator=gen))
                m.running_mean.copy_(torch.empty_like(m.running_mean).normal_(0.0, 0.1, generator=gen))
                m.running_var.copy_(torch.empty_like(m.running_var).uniform_(0.5, 1.5, generator=gen))
    return model.eval()


def make_data(n: int, size: int, seed: int = 0) -> Dataset:
    """``n`` seeded U[0, 1) test images ``3 x size x size`` (labels 0) and two training images (no method here is
    fit on data; the dataset needs a training split)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n + 2, 3, size, size, generator=gen)
    y = torch.zeros(n + 2, dtype=torch.long)
    return Dataset(f"random_3x{size}x{size}", x[n:], y[n:], x[:n], y[:n], num_classes=1000)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports ``ru_maxrss`` in KiB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def current_rss_mib() -> float | None:
    """The resident set size now, MiB (``/proc/self/status``; ``None`` elsewhere)."""
    try:
        match = re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def seconds_per_batch(model: nn.Module, x: torch.Tensor, dtype: torch.dtype, device: torch.device,
                      repeats: int) -> float:
    """Median seconds of plain Gradient on the batch ``x`` in ``dtype`` (one warm-up call first)."""
    model = model.to(device=device, dtype=dtype).eval()
    x = x.to(device=device, dtype=dtype)
    with torch.no_grad():
        target = model(x).argmax(1)
    explain = methods.create(METHOD, model)
    explain(x, target)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        explain(x, target)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_one(test: str, batch: int, args: argparse.Namespace) -> dict:
    """Run ``test`` once at batch size ``batch`` in this process; returns the measurements (see the docstring)."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = make_model(args.model, args.size)
    data = make_data(args.n_samples, args.size)
    run = RunSettings(n_samples=args.n_samples, batch_size=batch, device=args.device, keep_maps=0)
    specs = method_specs([METHOD])
    # warm-up: one pass of one input through the float32 model (imports, allocator, kernels), a small footprint
    warm = model.to(device)
    x1 = data.x_test[:1].to(device)
    methods.create(METHOD, warm)(x1, torch.zeros(1, dtype=torch.long, device=device))
    _sync(device)
    rss_before = current_rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    if test == "invariance":
        result = input_invariance(model, data, [METHOD], {"mean_shift": mean_shift((3, args.size, args.size))},
                                  run=run, model_name=args.model)
        per_sample = invariance_passes(specs, 1)[METHOD]
        dtype, stages = torch.float64, None
    else:
        result = model_randomization(model, data, [METHOD], RandomizationSpec(mode="cascading", stages=args.stages),
                                     run=run, model_name=args.model)
        stages = len(result.stages)
        per_sample = randomization_passes(specs, "cascading", stages)[METHOD]
        dtype = torch.float32
    _sync(device)
    seconds = time.perf_counter() - t0
    if result.errors:
        raise RuntimeError(f"{test} failed: {result.errors}")
    peak_rss = peak_rss_mib()
    cuda_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    calib = data.x_test[: min(batch, args.n_samples)]
    per_batch = seconds_per_batch(model, calib, dtype, device, args.repeats)
    return {
        "test": test, "batch_size": batch, "n_samples": args.n_samples, "stages": stages,
        "stage_names": list(getattr(result, "stages", []) or []), "rows": len(result.table),
        "seconds": seconds, "passes_per_sample": per_sample, "passes": per_sample * args.n_samples,
        "rss_before_mib": rss_before, "peak_rss_mib": peak_rss, "cuda_peak_mib": cuda_peak,
        "dtype": str(dtype).removeprefix("torch."), "seconds_per_batch_pass": per_batch,
        "calibration_batch": len(calib),
    }


# ---------------------------------------------------------------------------------------------- the driver


def child_command(test: str, batch: int, args: argparse.Namespace) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--one", test, str(batch), "--n-samples",
            str(args.n_samples), "--stages", str(args.stages), "--device", args.device, "--model", args.model,
            "--size", str(args.size), "--repeats", str(args.repeats)]


def run_child(test: str, batch: int, args: argparse.Namespace) -> dict:
    """Run one configuration in a fresh Python process; its last stdout line is the JSON record."""
    proc = subprocess.run(child_command(test, batch, args), capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"{test} at batch size {batch} failed (exit status {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mib(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def table(records: list[dict], cuda: bool) -> list[str]:
    head = ("| test | batch size | samples | seconds | samples/s | passes (per sample) | passes/s | RSS before test, "
            "MiB | peak RSS, MiB |" + (" CUDA peak allocated, MiB |" if cuda else ""))
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in records:
        what = "input invariance (mean shift)" if r["test"] == "invariance" else f"cascading, {r['stages']} stages"
        lines.append(
            f"| {what} | {r['batch_size']} | {r['n_samples']} | {r['seconds']:.1f} | "
            f"{r['n_samples'] / r['seconds']:.2f} | {r['passes']} ({r['passes_per_sample']}) | "
            f"{r['passes'] / r['seconds']:.2f} | {_mib(r['rss_before_mib'])} | {_mib(r['peak_rss_mib'])} |"
            + (f" {_mib(r['cuda_peak_mib'])} |" if cuda else ""))
    return lines


def cross_check(records: list[dict]) -> list[str]:
    lines = ["| test | batch size | precision | plain Gradient, s per batch | predicted s (passes x s per pass) | "
             "measured s | measured / predicted |", "|---|---|---|---|---|---|---|"]
    for r in records:
        predicted = r["passes"] * r["seconds_per_batch_pass"] / r["calibration_batch"]
        lines.append(f"| {r['test']} | {r['batch_size']} | {r['dtype']} | {r['seconds_per_batch_pass']:.3f} | "
                     f"{predicted:.1f} | {r['seconds']:.1f} | {r['seconds'] / predicted:.2f}x |")
    return lines


def section(records: list[dict], args: argparse.Namespace, command: str, wall: float) -> str:
    m = describe(args.device)
    cuda = torch.device(args.device).type == "cuda"
    stage_names = next((r["stage_names"] for r in records if r["test"] == "randomization"), [])
    lines = [
        f"- CPU: {m.cpu_model}; {m.cpu_count} CPUs, {m.usable_cpus} usable; torch threads {m.torch_threads}; load "
        f"average at the end {m.load_str('.1f', ', ')} (a shared machine: absolute times move with its load)",
        f"- device: {m.device}" + (f" ({m.gpu})" if m.gpu else ""),
        "- " + ", ".join(f"{lib} {v}" for lib, v in m.versions.items()) + f", Python {m.python}",
        f"- command: `{command}` ({wall / 60:.1f} min wall, {len(records)} fresh processes)",
        f"- model: `{args.model}`, random weights (BatchNorm parameters and statistics seeded random), "
        f"3 x {args.size} x {args.size} inputs (seeded U[0, 1)), 1000 classes; method: Gradient; "
        f"{args.n_samples} samples per test",
        f"- cascade stages measured (K = {args.stages}): {', '.join(f'`{s}`' for s in stage_names)}",
        "",
        *table(records, cuda),
        "",
        "passes: attribution passes charged by the cost model (`bench.core.cost`): input invariance 1 + S maps per "
        "sample for S = 1 shift (the original network's map, the twin's map); the cascade 2 + K (the trained "
        "model's map, its repeat control, one map per stage). Peak RSS: the whole process (Python, torch, timm, "
        "the model, the test); RSS before test: the same process after loading, so the difference is the test's.",
        "",
        "Cost model cross-check (plain Gradient on one batch of the same size and precision, median of "
        f"{args.repeats} after a warm-up; predicted = passes x (seconds per batch / batch size)):",
        "",
        *cross_check(records),
        "",
        "The invariance test runs in float64 (its default, `InvarianceSettings.float64`), so its passes are timed "
        "in float64; the randomization in float32. The ratio's excess over 1 is what the harness does beyond "
        "the charged passes (not broken down here): forward passes the cost "
        "model does not charge (the predictions; the twin premise check, one forward of each network; the "
        "randomization's unit tracing), the tie-break max-pool of the invariance networks, building the twin and "
        "the randomized copies (deep copies, re-initialization, premise checks on the weights), and the scores "
        f"(SSIM, Spearman, HOG, top-k on {args.size} x {args.size} maps).",
    ]
    return "\n".join(lines)


def write_results(out: Path, kind: str, body: str) -> None:
    """Rewrite the section of ``kind`` (``cpu``/``cuda``) in ``out``, keep the other; a missing GPU section gets
    the placeholder."""
    old = out.read_text() if out.exists() else ""
    bodies = {}
    for k in SECTIONS:
        match = re.search(rf"<!-- begin {k} -->\n(.*?)\n<!-- end {k} -->", old, re.S)
        bodies[k] = match.group(1) if match else None
    bodies[kind] = body
    if bodies["cpu"] is None:
        bodies["cpu"] = "not measured yet: run `python scripts/bench_scale.py`."
    if bodies["cuda"] is None:
        bodies["cuda"] = GPU_PLACEHOLDER + " Run `python scripts/bench_scale.py --device cuda` on a GPU machine."
    parts = ["# Scale, measured: Gradient on ResNet-50 at 224 px", "",
             "Written by `scripts/bench_scale.py` (what it measures and how: its docstring). One section per device "
             "kind; each run rewrites its own.", ""]
    for k, title in SECTIONS.items():
        parts += [f"## {title}", "", f"<!-- begin {k} -->", bodies[k], f"<!-- end {k} -->", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="1,4,8", help="comma-separated run.batch_size values")
    parser.add_argument("--n-samples", type=int, default=16, help="run.n_samples of every test")
    parser.add_argument("--stages", type=int, default=4, help="K: the first K stages of the cascade")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--model", default="timm:resnet50")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of plain Gradient per configuration")
    parser.add_argument("--tests", default=",".join(TESTS), help="comma-separated: invariance, randomization")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--one", nargs=2, metavar=("TEST", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        test, batch = args.one
        print(json.dumps(run_one(test, int(batch), args)))
        return
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")
    batches = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    tests = [t.strip() for t in args.tests.split(",") if t.strip()]
    if unknown := set(tests) - set(TESTS):
        parser.error(f"unknown test(s) {sorted(unknown)}; accepted: {', '.join(TESTS)}")
    command = "python scripts/bench_scale.py " + shlex.join(sys.argv[1:])
    start = time.perf_counter()
    records = []
    for batch in batches:
        for test in tests:
            print(f"{test}, batch size {batch} ...", flush=True)
            records.append(run_child(test, batch, args))
            r = records[-1]
            print(f"  {r['seconds']:.1f} s, {r['n_samples'] / r['seconds']:.2f} samples/s, "
                  f"{r['passes'] / r['seconds']:.2f} passes/s, peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
    body = section(records, args, command.strip(), time.perf_counter() - start)
    print("\n" + body)
    if not args.no_write:
        write_results(args.out, "cuda" if torch.device(args.device).type == "cuda" else "cpu", body)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
