"""Streaming memory, measured: the peak RSS of the real command-line job at run.n_samples=64 and 512.

    python scripts/bench_stream_memory.py                      # n = 64, 512; writes benchmarks/stream_memory.md
    python scripts/bench_stream_memory.py --n-samples 64,128,256,512
    python scripts/bench_stream_memory.py --model timm_resnet18 --smoothgrad-n 4 --batch-size 64   # slower

The goal (issue 17): "Peak RSS at run.n_samples=512 is within 1.25x of run.n_samples=64". What runs: the installed
``salbench`` entry point (the venv's, beside this interpreter), in a subprocess per run, on a configuration where
the maps dominate memory: a folder of generated 96 x 96 PNGs (``tests/image_fixtures.py``: 600 validation and 100
training images per class, two classes, written to a temporary folder), ``model=small_cnn``, Gradient and SmoothGrad
(``n`` 2), the mean shift and the checkerboard, the cascading randomization (3 stages), ``train.epochs=0``
(untrained weights: no minutes of training), ``run.batch_size=16`` (a batch's activations stay small beside the
maps of a chunk), logger disabled, no figures. Each run gets its own output folder (a finished job is otherwise
skipped) and a checkpoint cache inside the temporary folder, filled by an unmeasured warm-up run first.

Each n runs twice: streamed (``run.chunk_size`` 64, the default: the samples are explained and scored 64 at a time)
and in one chunk (``run.chunk_size=100000``: what memory did before streaming). Peak RSS of the job: GNU
``/usr/bin/time -v`` ("Maximum resident set size"), else a fresh Python wrapper per run that reads
``resource.getrusage(RUSAGE_CHILDREN)`` after the job ends. While a job runs, this script also samples its
``VmRSS``/``VmHWM`` from ``/proc`` every 0.2 s together with the number of finished chunks in its ``parts/`` folder:
the peak reached by the end of each chunk shows where memory grows (``--no-trace`` turns it off).

Why ``small_cnn`` and not ``timm_resnet18`` by default: on this 2-core machine one ``timm_resnet18`` run at n=64
took 3.4 minutes (float64 invariance passes dominate), so n=512 would take about half an hour; untrained, its
randomization also fails the premise check (re-initializing a BatchNorm that still has its initial values changes
nothing). ``--model timm_resnet18`` still works with ``--train-epochs 1``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (ROOT, HERE, ROOT / "tests"):  # the project, the scripts' helpers, the image-folder fixture
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from _machine import describe  # noqa: E402
from image_fixtures import make_image_folder  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "stream_memory.md"
GOAL = 1.25
#: the results file's line that separates the part this script writes (above) from the part it keeps (below)
KEEP_MARKER = "<!-- scripts/bench_stream_memory.py rewrites everything above this line and keeps what is below -->"
STREAMED = "streamed"
ONE_CHUNK = "one chunk"
GNU_TIME = Path("/usr/bin/time")
#: the fallback measurement: a fresh interpreter runs the job and reports its children's peak RSS (KiB on Linux)
WRAPPER = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
           "print('Maximum resident set size (kbytes):', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
           "file=sys.stderr); sys.exit(rc)")


def salbench() -> str:
    """The ``salbench`` entry point beside this interpreter (the venv's), else the one on ``PATH``."""
    local = Path(sys.executable).with_name("salbench")
    return str(local) if local.exists() else (shutil.which("salbench") or "salbench")


def overrides(args: argparse.Namespace, root: Path, cache: Path) -> list[str]:
    """The job's Hydra overrides, without ``run.n_samples``, ``run.chunk_size`` and the output folder."""
    return [
        "data=image_folder", f"data.root={root}", f"data.size={args.size}", f"model={args.model}",
        "method=[gradient,smoothgrad]", f"method.smoothgrad.params.n={args.smoothgrad_n}",
        "transform=[mean_shift,checkerboard]", "randomization=cascading",
        f"randomization.cascading.stages={args.stages}", f"train.epochs={args.train_epochs}", "train.min_test_acc=0",
        f"train.cache_dir={cache}", "logger=disabled", "run.progress=false", "run.figures=false",
        f"run.batch_size={args.batch_size}",
    ]


@dataclass
class Trace:
    """Samples of the job's ``VmRSS``/``VmHWM`` (MiB) and of its finished chunks, taken from another thread."""

    hwm_at_chunk: dict[int, float] = field(default_factory=dict)  # k finished chunks -> VmHWM when first seen
    max_rss: float = 0.0
    samples: int = 0


def _job_pid(pid: int) -> int:
    """The job's process: ``pid`` itself, or its child when ``pid`` is ``/usr/bin/time`` or the wrapper."""
    for _ in range(50):
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return pid
        if children:
            return int(children[0])
        time.sleep(0.05)
    return pid


def trace(proc: subprocess.Popen, parts: Path, out: Trace, interval: float = 0.2) -> None:
    """Sample the job of ``proc`` until it ends (Linux ``/proc``; does nothing elsewhere)."""
    pid = _job_pid(proc.pid)
    status = Path(f"/proc/{pid}/status")
    while proc.poll() is None:
        try:
            text = status.read_text()
        except OSError:
            break
        rss = re.search(r"VmRSS:\s+(\d+)", text)
        hwm = re.search(r"VmHWM:\s+(\d+)", text)
        if rss and hwm:
            done = len(list(parts.glob("*.parquet"))) if parts.exists() else 0
            if done:  # the peak reached by the time the job had finished `done` chunks
                out.hwm_at_chunk.setdefault(done, int(hwm.group(1)) / 1024)
            out.max_rss = max(out.max_rss, int(rss.group(1)) / 1024)
            out.samples += 1
        time.sleep(interval)


@dataclass
class Run:
    n: int
    mode: str
    chunk_size: int
    command: list[str]
    peak_mib: float = float("nan")
    wall: float = float("nan")
    status: str = "not run"
    rows: int | None = None
    trace: Trace = field(default_factory=Trace)


def measure(run: Run, out_dir: Path, with_trace: bool) -> Run:
    """Run the job once, measuring its peak RSS (see the module docstring)."""
    report = out_dir.with_suffix(".time")
    if GNU_TIME.exists():
        cmd = [str(GNU_TIME), "-v", "-o", str(report), *run.command]
    else:
        cmd = [sys.executable, "-c", WRAPPER, *run.command]
    t0 = time.perf_counter()
    with open(out_dir.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT if GNU_TIME.exists() else subprocess.PIPE,
                                cwd=out_dir.parent, text=True)
        sampler = threading.Thread(target=trace, args=(proc, out_dir / "parts", run.trace), daemon=True)
        if with_trace:
            sampler.start()
        _, err = proc.communicate()
        if with_trace:
            sampler.join()
    run.wall = time.perf_counter() - t0
    text = report.read_text() if GNU_TIME.exists() and report.exists() else (err or "")
    match = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", text)
    run.peak_mib = int(match.group(1)) / 1024 if match else float("nan")
    try:
        record = json.loads((out_dir / "job.json").read_text())
    except (OSError, ValueError):
        record = {}
    run.status = record.get("status", f"exit status {proc.returncode}")
    run.rows = record.get("rows")
    if run.status != "ok":
        print(f"  job {run.mode} n={run.n} ended with status {run.status!r}: see {out_dir.with_suffix('.log')}",
              flush=True)
    return run


def write_images(root: Path, args: argparse.Namespace) -> None:
    size = (args.size, args.size)
    make_image_folder(root, splits=("val",), per_class=args.val_per_class, size=size, seed=0)
    make_image_folder(root, splits=("train",), per_class=args.train_per_class, size=size, seed=1)


def _ratio(runs: list[Run], mode: str, n_lo: int, n_hi: int) -> float:
    lo = next((r for r in runs if r.mode == mode and r.n == n_lo), None)
    hi = next((r for r in runs if r.mode == mode and r.n == n_hi), None)
    return hi.peak_mib / lo.peak_mib if lo and hi else float("nan")


def _fmt(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio == ratio else "not run"


def report(runs: list[Run], args: argparse.Namespace, command: str, base: list[str], wall: float) -> str:
    m = describe("cpu")
    ns = sorted({r.n for r in runs})
    n_lo, n_hi = ns[0], ns[-1]
    lines = [
        "# Streaming memory: peak RSS of the command-line job against run.n_samples",
        "",
        "Written by `scripts/bench_stream_memory.py` (what it measures and how: its docstring). Goal (issue 17): "
        f"peak RSS at run.n_samples=512 within {GOAL}x of run.n_samples=64.",
        "",
        f"- CPU: {m.cpu_model}; {m.cpu_count} CPUs, {m.usable_cpus} usable; load average at the end "
        f"{m.load_str('.1f', ', ')} (a shared machine: wall times move with its load)",
        "- " + ", ".join(f"{lib} {v}" for lib, v in m.versions.items()) + f", Python {m.python}",
        f"- command: `{command}` ({wall / 60:.1f} min wall in all, with the image folder and one warm-up job)",
        "- peak RSS measured with " + ("GNU `/usr/bin/time -v` (Maximum resident set size)" if GNU_TIME.exists()
                                       else "`resource.getrusage(RUSAGE_CHILDREN)` in a fresh Python wrapper"),
        f"- data: {args.val_per_class} validation + {args.train_per_class} training PNGs per class, 2 classes, "
        f"{args.size} x {args.size} (the test split is the {2 * args.val_per_class} validation images)",
        "",
        "Each job (`ROOT` a temporary folder of PNGs, `CACHE` a checkpoint cache filled by the warm-up job):",
        "",
        "```",
        shlex.join([Path(salbench()).name, *base, "run.n_samples=N", "run.chunk_size=C", "hydra.run.dir=..."]),
        "```",
        "",
        "| run.n_samples | mode | run.chunk_size | peak RSS, MiB | / peak at n=" + str(n_lo) + " | wall, s | rows | "
        "status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lo = next((x for x in runs if x.mode == r.mode and x.n == n_lo), None)
        rel = f"{r.peak_mib / lo.peak_mib:.2f}x" if lo else "n/a"
        lines.append(f"| {r.n} | {r.mode} | {r.chunk_size} | {r.peak_mib:,.0f} | {rel} | {r.wall:.0f} | "
                     f"{r.rows if r.rows is not None else 'n/a'} | {r.status} |")
    streamed = _ratio(runs, STREAMED, n_lo, n_hi)
    one = _ratio(runs, ONE_CHUNK, n_lo, n_hi)
    if streamed != streamed:  # NaN: no streamed pair (or a failed run)
        verdict = "**not measured** (no streamed pair in this run)."
    elif streamed <= GOAL:
        verdict = "**it holds** in this run."
    else:
        verdict = f"**it does NOT hold** in this run (over by {(streamed - GOAL) / GOAL:.0%} of the goal)."
    lines += [
        "",
        f"Peak RSS at n={n_hi} / n={n_lo}: streamed **{_fmt(streamed)}**, one chunk {_fmt(one)}. Against the goal "
        f"({GOAL}x, streamed): {verdict}",
    ]
    traced = [r for r in runs if r.trace.hwm_at_chunk and r.mode == STREAMED]
    if traced:
        lines += [
            "",
            "Where the streamed jobs' peak grows: VmHWM (MiB) when the job had finished k chunks (sampled every "
            "0.2 s from `/proc`; the invariance chunks come first, then the randomization's; 'end' is "
            "`/usr/bin/time`'s figure):",
            "",
        ]
        for r in traced:
            series = ", ".join(f"{k}: {v:,.0f}" for k, v in sorted(r.trace.hwm_at_chunk.items()))
            lines.append(f"- n={r.n}: {series}; end: {r.peak_mib:,.0f}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-samples", default="64,512", help="comma-separated run.n_samples (smallest is the base)")
    parser.add_argument("--modes", default="streamed,one", help="streamed (run.chunk_size default) and/or one")
    parser.add_argument("--chunk-size", type=int, default=64, help="run.chunk_size of the streamed runs")
    parser.add_argument("--model", default="small_cnn", help="a conf/model name (small_cnn, timm_resnet18, ...)")
    parser.add_argument("--size", type=int, default=96, help="image side, pixels (data.size)")
    parser.add_argument("--val-per-class", type=int, default=600)
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--smoothgrad-n", type=int, default=2)
    parser.add_argument("--stages", type=int, default=3, help="randomization.cascading.stages")
    parser.add_argument("--batch-size", type=int, default=16, help="run.batch_size")
    parser.add_argument("--train-epochs", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="kept folder for images and outputs")
    parser.add_argument("--no-trace", action="store_true", help="do not sample /proc while the jobs run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    ns = sorted({int(n) for n in args.n_samples.split(",") if n.strip()})
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(modes) - {"streamed", "one"} or not modes:
        parser.error("--modes takes streamed and/or one")
    if ns[-1] > 2 * args.val_per_class:
        parser.error(f"run.n_samples={ns[-1]} needs at least that many test images: raise --val-per-class")
    command = "python scripts/bench_stream_memory.py " + shlex.join(sys.argv[1:])
    start = time.perf_counter()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_stream_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        root, cache = work / "images", work / "cache"
        if not root.exists():
            print(f"writing the image folder {root} ...", flush=True)
            write_images(root, args)
        base = overrides(args, root, cache)
        job = [salbench(), *base]
        print("warm-up job (fills the checkpoint cache; not measured) ...", flush=True)
        warm = measure(Run(4, "warm-up", args.chunk_size, [*job, "run.n_samples=4",
                                                            f"hydra.run.dir={work / 'out_warmup'}"]),
                       work / "out_warmup", with_trace=False)
        if warm.status != "ok":
            sys.exit(f"the warm-up job failed ({warm.status}): see {work / 'out_warmup.log'}")
        runs: list[Run] = []
        for mode in modes:
            label, chunk = (STREAMED, args.chunk_size) if mode == "streamed" else (ONE_CHUNK, 100_000)
            for n in ns:
                out_dir = work / f"out_{mode}_{n}"
                shutil.rmtree(out_dir, ignore_errors=True)  # a finished job in the same folder would be skipped
                cmd = [*job, f"run.n_samples={n}", f"run.chunk_size={chunk}", f"hydra.run.dir={out_dir}"]
                print(f"{label}, n={n} ...", flush=True)
                r = measure(Run(n, label, chunk, cmd), out_dir, with_trace=not args.no_trace)
                print(f"  peak RSS {r.peak_mib:,.0f} MiB, {r.wall:.0f} s, {r.status}", flush=True)
                runs.append(r)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    shown = overrides(args, Path("ROOT"), Path("CACHE"))
    text = report(runs, args, command.strip(), shown, time.perf_counter() - start)
    print("\n" + text)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        old = args.out.read_text() if args.out.exists() else ""
        kept = old.split(KEEP_MARKER, 1)[1] if KEEP_MARKER in old else "\n"
        args.out.write_text(text + "\n" + KEEP_MARKER + kept)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
