"""Calibration of the randomization verdict on a family of models: regenerates ``benchmarks/calibration.md``.

Every member of the family (:func:`family`: MLPs of 2-6 hidden layers and VGG-style CNNs of 2-8 convolutions on the
bundled digits, the bundled ``paper_mlp`` and ``small_cnn`` with their own recipes, a small residual network, and
the tabular and signal models on their data) is trained at two levels: ``weak``, the first (samples, epochs) of
:data:`WEAK_SCHEDULE` that clears the quality guard by :data:`WEAK_MARGIN` (just above the guard), and ``well`` (the
full recipe). Each trained model runs the cascading randomization test
(:func:`bench.experiments.model_randomization.model_randomization`, ``n`` test samples, all stages) on the methods
with known answers and the negative controls (:data:`KNOWN`), and the verdicts are drawn from its rows by
:func:`bench.reporting.aggregate.randomization_verdicts`. The known answers (Adebayo et al. 2018 and the design's
negative controls): Gradient, SmoothGrad and Grad-CAM (where it applies) pass; Guided Backprop does not (its map
survives the top layers); Gradient x Input does not; noise, the input, the input times noise and noise seeded by the
model object never pass. Deconvnet, Integrated Gradients, LRP-alpha-beta and Guided Grad-CAM are reported with no
answer pinned.

Outputs: the per-sample scores of the verdict score (``ssim`` on images, ``spearman`` elsewhere) at every stage and
control (``--scores``, default ``benchmarks/calibration_scores.parquet``: the default test suite re-derives every
verdict from it) and the Markdown table (``--out``). ``--from-scores`` re-renders the table from the stored scores
without training (for a change of the rule). Checkpoints are cached (``--cache``, default the project's cache).

    python scripts/calibrate_verdicts.py                 # train (or load) the family, about 15-25 min on 2 cores
    python scripts/calibrate_verdicts.py --from-scores   # the table from the stored scores, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("calibrate_verdicts")

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "calibration.md"
SCORES = ROOT / "benchmarks" / "calibration_scores.parquet"
#: (training samples, epochs) of the weak level, tried in order: the first whose model clears the guard by the margin
#: (None: all training samples)
WEAK_SCHEDULE = ((250, 1), (500, 1), (1000, 1), (2000, 1), (None, 1), (None, 2), (None, 3), (None, 5), (None, 8))
WEAK_MARGIN = 0.1
#: the family's recipe (the bundled models keep their own): Adam trains the deep plain nets that SGD at the default
#: initialization does not (8 convolutions, 6 hidden layers)
ADAM = dict(optimizer="adam", lr=1e-3, batch_size=32, epochs=5)

#: method label -> (spec, the known answer: "pass", "not pass", or None for reported only)
NULLS = "methods.nulls"
KNOWN: dict[str, tuple[dict, str | None]] = {
    "gradient": ({"name": "gradient"}, "pass"),
    "smoothgrad": ({"name": "smoothgrad", "params": {"base": "gradient", "n": 20, "noise_level": 0.15}}, "pass"),
    "grad_cam": ({"name": "grad_cam"}, "pass"),
    "guided_backprop": ({"name": "guided_backprop"}, "not pass"),
    "gradient_x_input": ({"name": "gradient_x_input"}, "not pass"),
    "null_noise": ({"_target_": f"{NULLS}:noise_map"}, "not pass"),
    "null_input": ({"_target_": f"{NULLS}:input_map"}, "not pass"),
    "null_input_x_noise": ({"_target_": f"{NULLS}:input_times_noise"}, "not pass"),
    "null_model_seeded": ({"_target_": f"{NULLS}:model_seeded_noise"}, "not pass"),
    "deconvnet": ({"name": "deconvnet"}, None),
    "integrated_gradients": ({"name": "integrated_gradients", "params": {"steps": 16}}, None),
    "lrp_alpha_beta": ({"name": "lrp_alpha_beta"}, None),
    "guided_grad_cam": ({"name": "guided_grad_cam"}, None),
}
#: methods that need a Conv2d (Grad-CAM reads a conv layer's activations)
CONV_ONLY = ("grad_cam", "guided_grad_cam")


@dataclass
class Member:
    """One model of the family: a registered model with its arguments, on a data set, with a recipe."""

    label: str
    model: str
    kw: dict = field(default_factory=dict)
    data: str = "mnist_bundled"
    recipe: dict = field(default_factory=lambda: dict(ADAM))
    conv2d: bool = False


def family() -> list[Member]:
    """The calibration family (module docstring)."""
    members = [Member(f"mlp{d}", "paper_mlp", {"depth": d, "hidden": 256}) for d in (2, 4, 6)]
    members.append(Member("paper_mlp", "paper_mlp", recipe={}))  # the bundled model, its own recipe (SGD)
    members.append(Member("small_cnn", "small_cnn", recipe={}, conv2d=True))
    members += [Member(f"vgg{c}", "vgg_cnn", {"convs": c}, conv2d=True) for c in (2, 4, 6, 8)]
    members.append(Member("resnet", "small_resnet", conv2d=True))
    # the tabular and signal presets' recipes (conf/experiment/tabular.yaml, signals.yaml)
    members.append(Member("tabular_mlp", "tabular_mlp", data="breast_cancer", recipe={"epochs": 30, "lr": 0.1}))
    members.append(Member("signal_cnn", "signal_cnn", data="signals", recipe={"epochs": 30, "lr": 0.1}))
    return members


def _train(member: Member, data, cache: str | None) -> list[tuple[str, object, dict]]:  # noqa: ANN001
    """``[(level, model, info)]``: the weak and the well-trained model of ``member`` (cached checkpoints)."""
    from bench.core.training import ModelQualityError, TrainConfig, default_min_test_acc, load_or_train

    guard = default_min_test_acc(data)
    well_cfg = TrainConfig(**member.recipe, cache_dir=cache)
    out = []
    for n, epochs in WEAK_SCHEDULE:
        n = len(data.x_train) if n is None else min(n, len(data.x_train))
        sub = dataclasses.replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])
        cfg = dataclasses.replace(well_cfg, epochs=epochs, min_test_acc=0.0)
        model, info = load_or_train(member.model, sub, cfg, model_kw=member.kw, progress=False)
        if info["test_acc"] >= guard + WEAK_MARGIN:
            out.append(("weak", model, {**info, "train_samples": n, "epochs": epochs}))
            break
    else:
        log.warning("%s: no weak level within the schedule", member.label)
    try:
        model, info = load_or_train(member.model, data, well_cfg, model_kw=member.kw, progress=False)
    except ModelQualityError as err:
        log.warning("%s: the well-trained level is below the guard: %s", member.label, err)
    else:
        out.append(("well", model, {**info, "train_samples": len(data.x_train), "epochs": well_cfg.epochs}))
    return out


#: torch's intra-op threads: the trained weights (and so the scores) depend on them in the last digits, which a
#: convolution's training amplifies to about 0.04 in SSIM; the stored scores were made with this many
THREADS = 2


def measure(n: int, cache: str | None, only: list[str] | None, threads: int = THREADS
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train the family and run its cascades with ``threads`` torch threads: ``(scores, models)`` (per-sample
    verdict-score rows; one row per trained model with its accuracy, guard and times)."""
    import torch

    from bench.core.data import load_dataset
    from bench.core.explain import MethodSpec
    from bench.core.settings import RunSettings, ScoreSettings
    from bench.core.training import default_min_test_acc
    from bench.experiments.model_randomization import model_randomization

    torch.set_num_threads(threads)
    frames, models = [], []
    datasets: dict[str, object] = {}
    for member in family():
        if only and member.label not in only:
            continue
        data = datasets.setdefault(member.data, load_dataset(member.data))
        metric = ["ssim"] if len(data.input_shape) == 3 else ["spearman", "spearman_abs"]
        specs = {label: MethodSpec(label, spec.get("name"), spec.get("_target_"), dict(spec.get("params", {})))
                 for label, (spec, _) in KNOWN.items() if member.conv2d or label not in CONV_ONLY}
        t0 = time.perf_counter()
        trained = _train(member, data, cache)
        t_train = time.perf_counter() - t0
        for level, model, info in trained:
            t1 = time.perf_counter()
            run = RunSettings(n_samples=n, batch_size=n, fit_samples=1000, progress=False)
            res = model_randomization(model, data, specs, "cascading", run=run, scoring=ScoreSettings(metric),
                                      model_name=f"{member.label}/{level}")
            for method, err in res.errors.items():
                log.warning("%s/%s: %s failed: %s", member.label, level, method, err)
            frames.append(res.table)
            models.append(dict(model=f"{member.label}/{level}", member=member.label, level=level,
                               architecture=f"{member.model}{member.kw or ''}", data=member.data,
                               test_acc=info["test_acc"], guard=default_min_test_acc(data),
                               train_samples=info["train_samples"], epochs=info["epochs"],
                               stages=len(res.stages), seconds=round(time.perf_counter() - t1, 1)))
            log.info("%s/%s: test accuracy %.3f, %d stages, %.0f s", member.label, level, info["test_acc"],
                     len(res.stages), time.perf_counter() - t1)
        log.info("%s: trained in %.0f s", member.label, t_train)
    return pd.concat(frames, ignore_index=True), pd.DataFrame(models)


def verdict_score(dataset: str) -> str:
    """The verdict score of a data set: SSIM of the absolute maps on images, the rank correlation of the absolute maps
    (``spearman_abs``, the paper's) where SSIM does not apply; ``spearman`` (signed) is stored beside it."""
    return "ssim" if dataset == "mnist_bundled" else "spearman_abs"


def applies(method: str, dataset: str) -> str | None:
    """The known answer of ``method`` on ``dataset`` (:data:`KNOWN`), or None where none is pinned: Gradient x Input's
    known failure is the input's structure on images with a zero background (its absolute map keeps the digit's
    support); on tables and 1-D signals it is reported, not pinned."""
    answer = KNOWN.get(method, ({}, None))[1]
    if method == "gradient_x_input" and dataset != "mnist_bundled":
        return None
    return answer


def outcome(answer: str | None, verdict: str) -> str | None:
    """``met``; ``inconclusive`` (a pass-answer judged inconclusive, with its reason: weak evidence, never a wrong
    fail); ``violated`` (a pass-answer that fails, or a not-pass answer that passes); None without an answer."""
    if not isinstance(answer, str):  # None, or NaN once in a frame
        return None
    if answer == "pass":
        return "met" if verdict == "pass" else "inconclusive" if verdict == "inconclusive" else "violated"
    return "violated" if verdict == "pass" else "met"


def verdicts(scores: pd.DataFrame) -> pd.DataFrame:
    """The verdict of every (model, method) of the stored scores, with its known answer and its outcome."""
    from bench.reporting.aggregate import randomization_verdicts

    out = []
    for (dataset, metric), g in scores.groupby(["dataset", "metric"]):
        if metric == verdict_score(dataset):
            out.append(randomization_verdicts(g, metric))
    v = pd.concat(out, ignore_index=True)
    v["known"] = [applies(m, d) for m, d in zip(v.method, v.dataset, strict=True)]
    v["outcome"] = [outcome(k, verdict) for k, verdict in zip(v.known, v.verdict, strict=True)]
    return v


_SHORT = {"pass": "pass", "fail": "FAIL", "input-dominated": "input", "inconclusive": "inc."}
_MARK = {"violated": " (!)", "inconclusive": " (~)"}


def render(v: pd.DataFrame, models: pd.DataFrame, seconds: float | None) -> str:
    """The Markdown of ``benchmarks/calibration.md`` from the verdicts and the models' table."""
    from bench.reporting.aggregate import MODEL_CHANGE_BAR, PASS_BAR, RULE_SUMMARY

    methods = [m for m in KNOWN if m in set(v.method)]
    known = v[v.known.notna()]
    count = known.outcome.value_counts()
    lines = ["# Calibration of the randomization verdict on a model family", "",
             "Regenerated by `python scripts/calibrate_verdicts.py` (training and cascades) or `--from-scores` (this "
             "file from `benchmarks/calibration_scores.parquet`, which the default tests also read); do not edit by "
             "hand. The rule lives in `bench.reporting.aggregate`.", "",
             "## The rule", "", RULE_SUMMARY, "",
             "## The family", "",
             "Each architecture at two training levels: `weak`, the first (samples, epochs) that clears the quality "
             f"guard by {WEAK_MARGIN:g}, and `well`, the full recipe (the family: Adam, lr 1e-3, 5 epochs; "
             "`paper_mlp` and `small_cnn`: the bundled SGD recipe; the tabular and signal presets: their own). "
             "Cascading randomization, every unit a stage, 32 test samples; verdict score SSIM on the digits, "
             "`spearman_abs` on the table and the signals.", "",
             "| model | architecture | data | training | test acc (guard) | stages | cascade s |",
             "|---|---|---|---|---|---|---|"]
    for r in models.itertuples():
        lines.append(f"| {r.model} | `{r.architecture}` | {r.data} | {r.epochs} ep. on {r.train_samples} | "
                     f"{r.test_acc:.3f} ({r.guard:.3f}) | {r.stages} | {r.seconds:g} |")
    pinned = ", ".join(f"`{m}` {KNOWN[m][1]}" for m in methods if KNOWN[m][1])
    lines += ["", "## Verdicts", "",
              f"Known answers: {pinned} (Gradient x Input on the digits only, see below). Outcomes over "
              f"{len(known)} pinned cells: **{int(count.get('met', 0))} met, {int(count.get('violated', 0))} "
              f"violated**, {int(count.get('inconclusive', 0))} pass-answers `inconclusive` with their reason (weak "
              "evidence, never a wrong `fail`; marked `(~)`). A violation is marked `(!)`.", "",
              "Cell: the verdict, then the lower bound of the relative change `c` at the deciding stage / the "
              "smallest lower bound of the model's change `m` over the checked stages.", "",
              "| model | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for model, g in v.groupby("model", sort=False):
        by = g.set_index("method")
        cells = []
        for m in methods:
            if m not in by.index:
                cells.append("n/a")
                continue
            r = by.loc[m]
            cells.append(f"{_SHORT.get(r.verdict, r.verdict)}{_MARK.get(r.outcome, '')} "
                         f"{r.drop_lcb:.2f}/{r.model_change_lcb:.2f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    odd = known[known.outcome != "met"]
    if len(odd):
        lines += ["", "Not met, with the rule's reason:", ""]
        lines += [f"- {r.model} `{r.method}`: {r.verdict}: {r.reason}" for r in odd.itertuples()]
    lines += ["", "## Margins", "",
              f"The closest calls over the family. `pass` needs the lower bound of `c` >= {PASS_BAR:g} and of `m` >= "
              f"{MODEL_CHANGE_BAR:g} at every checked stage; a `not pass` answer must keep `c`'s lower bound below "
              f"{PASS_BAR:g} (or be decided otherwise: not repeatable, input-dominated).", "",
              "| method | answer | closest model | lower bound of c | lower bound of m | closest where m >= "
              f"{MODEL_CHANGE_BAR:g} |", "|---|---|---|---|---|---|"]
    for m in methods:
        g = known[(known.method == m) & known.drop_lcb.notna()]
        if not len(g):
            continue
        answer = g.known.iloc[0]
        pick = (lambda d: d.loc[d.drop_lcb.idxmin()]) if answer == "pass" else (lambda d: d.loc[d.drop_lcb.idxmax()])
        r = pick(g)
        changed = g[g.model_change_lcb >= MODEL_CHANGE_BAR]
        c = pick(changed) if len(changed) else None
        lines.append(f"| {m} | {answer} | {r.model} | {r.drop_lcb:.3f} | {r.model_change_lcb:.3f} | "
                     + (f"{c.model}: {c.drop_lcb:.3f} |" if c is not None else "- |"))
    passed = known[(known.known == "pass") & (known.verdict == "pass")]
    if len(passed):
        r = passed.loc[passed.model_change_lcb.idxmin()]
        lines.append(f"| (model's change, passes) | pass | {r.model} ({r.method}) | {r.drop_lcb:.3f} | "
                     f"{r.model_change_lcb:.3f} | |")
    unpinned = v[v.known.isna()]
    if len(unpinned):
        lines += ["", "## Reported, not pinned", "",
                  "| method | pass | fail | input-dominated | inconclusive |", "|---|---|---|---|---|"]
        for m, g in unpinned.groupby("method", sort=False):
            c = g.verdict.value_counts()
            lines.append(f"| {m} | " + " | ".join(str(int(c.get(w, 0))) for w in
                                                  ("pass", "fail", "input-dominated", "inconclusive")) + " |")
    if seconds is None and "run_seconds" in models.columns:
        seconds = float(models.run_seconds.iloc[0])
    if seconds is not None:
        lines += ["", f"Measured in {seconds / 60:.1f} min on this machine (2 cores; training, where not cached, and "
                  "the cascades)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=32, help="test samples per model (default 32)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--scores", type=Path, default=SCORES)
    p.add_argument("--cache", default=None, help="checkpoint cache folder (default: the project's)")
    p.add_argument("--only", nargs="*", help="family members to run (default: all)")
    p.add_argument("--from-scores", action="store_true", help="render the table from --scores, no training")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    models_path = args.scores.with_name(args.scores.stem + "_models.csv")
    if args.from_scores:
        scores, models, seconds = pd.read_parquet(args.scores), pd.read_csv(models_path), None
    else:
        scores, models = measure(args.samples, args.cache, args.only)
        seconds = time.perf_counter() - t0
        scores = scores[["model", "dataset", "method", "condition", "mode", "layer", "metric", "sample", "score",
                         "seed"]].assign(experiment="model_randomization", config_hash="")
        scores.to_parquet(args.scores, index=False)
        models.assign(run_seconds=round(seconds, 1)).to_csv(models_path, index=False)
    v = verdicts(scores)
    args.out.write_text(render(v, models, seconds))
    known = v[v.known.notna()]
    bad = known[known.outcome == "violated"]
    log.info("%d of %d known answers met, %d violated; wrote %s", int((known.outcome == "met").sum()), len(known),
             len(bad), args.out)
    return 1 if len(bad) else 0


if __name__ == "__main__":
    raise SystemExit(main())
