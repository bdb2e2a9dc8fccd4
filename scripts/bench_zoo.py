"""The zoo: the field's methods (Captum, pytorch-grad-cam, zennit composites, SmoothGrad-squared, VarGrad) judged on
``small_cnn``; regenerates ``benchmarks/zoo.md`` (and prints the README's table).

Two parts, both from this one run:

* **Verdicts**: the ``+experiment=zoo`` preset (input invariance under the mean shift and the checkerboard, the
  cascading randomization; ``conf/experiment/zoo.yaml``) run as a job (:func:`bench.cli.job.run`, into ``--job``;
  a finished job there is reused), its table judged by the leaderboard's rules
  (:func:`bench.reporting.leaderboard.build_leaderboard`). A method that cannot run on the model is reported with
  the job's reason.
* **Time per method** on this machine: every method's maps of the same ``--samples`` test digits on the trained
  model (float32, batched as the job batches, the median of ``--repeats`` timed calls after a warm-up), side by side
  in one process, with the cost model's passes per map (:func:`bench.core.cost.passes_per_map`) and the ratio to
  Gradient measured in the same run. A job's time per method is about this x (1 + shifts) for the invariance test
  (in float64) plus this x (2 + stages) for the cascade.

Each row also carries what the method's own paper or later work reports where it makes a claim (:data:`LITERATURE`);
where the verdict here disagrees, the table says so in one line. Those lines are written from the measured verdicts,
never by hand.

    python scripts/bench_zoo.py                       # needs the extras: pip install -e '.[all]'; ~5 min on 2 cores
    python scripts/bench_zoo.py --job outputs/zoo     # reuse (or resume) that job folder
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (ROOT, HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from _machine import describe, format_load, load_average  # noqa: E402

log = logging.getLogger("bench_zoo")

DEFAULT_OUT = ROOT / "benchmarks" / "zoo.md"
SHIFTS = ("mean_shift", "checkerboard")
MODE = "cascading"

#: per method label: (library, one line of what the literature says, the verdict it predicts per test or None).
#: Tests: "mean_shift", "checkerboard", "cascading". Only claims a paper makes are pinned; "pass" in a randomization
#: column means "the map follows the model", "not pass" that it survives the randomization or follows the input.
LITERATURE: dict[str, tuple[str, str, dict[str, str]]] = {
    "gradient": ("ours", "Adebayo et al. 2018: changes under the cascade; Kindermans et al. 2017: input invariant",
                 {"mean_shift": "pass", "checkerboard": "pass", "cascading": "pass"}),
    "vargrad": ("ours", "Adebayo et al. 2018: VarGrad changes under the cascade", {"cascading": "pass"}),
    "smoothgrad_squared": ("ours", "Adebayo et al. 2018 (SmoothGrad family): changes under the cascade",
                           {"cascading": "pass"}),
    "captum_saliency": ("captum", "= Gradient (absolute): Adebayo et al. 2018, Kindermans et al. 2017",
                        {"mean_shift": "pass", "checkerboard": "pass", "cascading": "pass"}),
    "captum_input_x_gradient": ("captum", "Kindermans et al. 2017: not input invariant",
                                {"mean_shift": "not pass", "checkerboard": "not pass"}),
    "captum_integrated_gradients": ("captum", "zero baseline: Kindermans et al. 2017: not input invariant",
                                    {"mean_shift": "not pass", "checkerboard": "not pass"}),
    "captum_guided_backprop": ("captum", "Adebayo et al. 2018: survives the cascade (image recovery, Nie et al. "
                               "2018)", {"cascading": "not pass"}),
    "captum_deconvolution": ("captum", "Nie et al. 2018, Sixt et al. 2020: like Guided Backprop, input-driven",
                             {"cascading": "not pass"}),
    "captum_deeplift": ("captum", "zero reference: Kindermans et al. 2017: not input invariant",
                        {"mean_shift": "not pass", "checkerboard": "not pass"}),
    "captum_deeplift_shap": ("captum", "training-set references: no published sanity check", {}),
    "captum_gradient_shap": ("captum", "no published sanity check", {}),
    "captum_noise_tunnel": ("captum", "SmoothGrad: Adebayo et al. 2018 changes under the cascade; Kindermans et al. "
                            "2017 invariant with noise scaled to the input range",
                            {"mean_shift": "pass", "checkerboard": "pass", "cascading": "pass"}),
    "captum_lrp": ("captum", "LRP-epsilon = Gradient x Input on ReLU nets: Kindermans et al. 2017 not invariant",
                   {"mean_shift": "not pass", "checkerboard": "not pass"}),
    "captum_occlusion": ("captum", "zero-valued patches: a fixed reference, not input invariant (Kindermans et al. "
                         "2017's argument)", {}),
    "captum_feature_ablation": ("captum", "zero-valued ablation: a fixed reference", {}),
    "captum_shapley_value_sampling": ("captum", "zero-valued baseline: a fixed reference", {}),
    "captum_lime": ("captum", "no published sanity check on this setting", {}),
    "captum_kernel_shap": ("captum", "no published sanity check on this setting", {}),
    "cam_gradcam_plusplus": ("cam", "Grad-CAM family: Adebayo et al. 2018 tested Grad-CAM (changes under the "
                             "cascade), not Grad-CAM++", {"cascading": "pass"}),
    "cam_scorecam": ("cam", "Wang et al. 2020: class-discriminative through the model's score", {}),
    "cam_xgradcam": ("cam", "Grad-CAM family: Adebayo et al. 2018 (Grad-CAM) changes under the cascade",
                     {"cascading": "pass"}),
    "cam_layercam": ("cam", "Grad-CAM family: Adebayo et al. 2018 (Grad-CAM) changes under the cascade",
                     {"cascading": "pass"}),
    "cam_eigencam": ("cam", "Muhammad & Yeasin 2020: class-agnostic (the activations' first principal component): "
                     "blind to the classifier layers", {"cascading": "not pass"}),
    "cam_hirescam": ("cam", "Draelos & Carin 2020: Grad-CAM without the gradient averaging", {"cascading": "pass"}),
    "cam_fullgrad": ("cam", "Srinivas & Fleuret 2019: input-gradient plus bias-gradients", {}),
    "zennit_epsilon_plus": ("zennit", "z+ in the convolutions, epsilon in the dense layers: Sixt et al. 2020's "
                            "argument (z+ forgets the layers above) covers the z+ layers only", {}),
    "zennit_epsilon_plus_flat": ("zennit", "as EpsilonPlus with the flat rule at the first layer (blind to the "
                                 "input's values)", {}),
    "zennit_epsilon_gamma_box": ("zennit", "gamma rule: disputed (Sixt et al. 2020 vs. Binder et al. 2023)", {}),
    "zennit_epsilon_alpha2_beta1": ("zennit", "alpha-beta in the convolutions, epsilon in the dense layers: the "
                                    "survey's GBP-like alpha-beta result is for alpha-beta everywhere", {}),
    "zennit_excitation_backprop": ("zennit", "z+ (alpha1-beta0) in every layer: Sixt et al. 2020, the survey: like "
                                   "Guided Backprop", {"cascading": "not pass"}),
}


def compose(overrides: list[str]):  # noqa: ANN201
    """The typed config of ``+experiment=zoo`` with ``overrides``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    from bench.cli.config import register_configs

    register_configs()
    with initialize_config_module(config_module="bench.conf", version_base="1.3"):
        return OmegaConf.to_object(hydra_compose(config_name="config", overrides=["+experiment=zoo", *overrides]))


def verdicts(job: Path) -> pd.DataFrame:
    """One row per method: the verdict of each test (the leaderboard's rule) and the job's reason for a method that
    did not run."""
    import json

    from bench.reporting.leaderboard import build_leaderboard

    table = pd.read_parquet(job / "results.parquet")
    board = build_leaderboard(table).set_index("method")
    record = json.loads((job / "job.json").read_text())
    failures = record.get("failures") or record.get("errors") or {}
    rows = []

    def cell(method: str, prefix: str, verdict: str) -> str:  # "<verdict> (mean [95% interval])"
        if verdict not in board or f"{prefix}_lo" not in board:
            return "-"
        v, m = board.at[method, verdict], board.at[method, prefix]
        lo, hi = board.at[method, f"{prefix}_lo"], board.at[method, f"{prefix}_hi"]
        return f"{v} ({m:.2f} [{lo:.2f}, {hi:.2f}])" if pd.notna(m) else str(v)

    for method in board.index:
        row = {"method": method}
        for shift in SHIFTS:
            row[shift] = board.at[method, f"inv/{shift}/verdict"] if f"inv/{shift}/verdict" in board else "-"
            row[f"{shift}_cell"] = cell(method, f"inv/{shift}/ssim", f"inv/{shift}/verdict")
        col = f"rand/{MODE}/verdict"
        row[MODE] = board.at[method, col] if col in board else "-"
        row[f"{MODE}_cell"] = cell(method, f"rand/{MODE}/ssim/top", col)
        rows.append(row)
    out = pd.DataFrame(rows).set_index("method")
    out.attrs["failures"] = failures
    return out


def time_methods(cfg, samples: int, repeats: int) -> pd.DataFrame:  # noqa: ANN001
    """Seconds per map of every method of ``cfg`` on the trained model, measured side by side."""
    from bench.core.cost import passes_per_map
    from bench.core.data import load_dataset
    from bench.core.explain import explain_all, fit_loader, make_explainer, method_specs, predict
    from bench.core.training import load_or_train

    d, run = cfg.data, cfg.run
    data = load_dataset(d.name, encoding=d.encoding, seed=d.seed, root=d.root, download=d.download, n_test=d.n_test)
    model, _ = load_or_train(cfg.model.name, data, cfg.train, model_kw=dict(cfg.model.kwargs), progress=False)
    x = data.x_test[:samples]
    target = predict(model, x)
    fit = fit_loader(data.x_train[: run.fit_samples], data.y_train[: run.fit_samples])
    rows = []
    for spec in method_specs(cfg.method):
        try:
            explainer = make_explainer(spec, model, domain=data.domain, fit_data=fit)
            explain_all(explainer, x[:2], target[:2], run.batch_size)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                explain_all(explainer, x, target, run.batch_size)
                times.append(time.perf_counter() - t0)
            seconds = statistics.median(times) / samples
            error = ""
        except Exception as err:  # noqa: BLE001  (reported in the table, as the job reports it)
            seconds, error = float("nan"), f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
        rows.append({"method": spec.label, "name": spec.name,
                     "passes": passes_per_map(spec, tuple(x.shape[1:]), model), "seconds": seconds,
                     "error": error})
        log.info("%s: %.3g ms per map %s", spec.label, seconds * 1e3, error)
    out = pd.DataFrame(rows).set_index("method")
    out["ratio"] = out["seconds"] / out.at["gradient", "seconds"]
    return out


def agreement(method: str, row: pd.Series) -> str:
    """One line where a verdict here disagrees with :data:`LITERATURE`'s prediction (empty where none does)."""
    _, _, expected = LITERATURE.get(method, ("", "", {}))
    lines = []
    for test, want in expected.items():
        got = row.get(test, "-")
        if got in ("-", "N/A", None):
            continue
        passed = got in ("pass", "exact")
        if (want == "pass") != passed:
            lines.append(f"{test}: {got} here, literature: {want}")
    return "; ".join(lines)


def render(v: pd.DataFrame, t: pd.DataFrame, machine: str, job: Path, cfg) -> str:  # noqa: ANN001
    lines = [
        "# The zoo: the field's methods on small_cnn",
        "",
        "Regenerate: `python scripts/bench_zoo.py` (needs `pip install -e '.[all]'`). Verdicts: the job "
        f"`salbench +experiment=zoo` ({cfg.run.n_samples} test digits, shifts {', '.join(SHIFTS)}, the "
        f"{MODE} randomization; the leaderboard's rules, README \"How verdicts are decided\"; in brackets the mean "
        "SSIM between the two networks' maps (invariance) or to the trained model's map with the top layer "
        "re-initialized (cascading), with its 95% bootstrap interval). Time: ms per map of "
        f"one digit on the trained model, float32, batches of {cfg.run.batch_size}, the median of the timed calls, "
        "all methods in one process; `x grad`: the ratio to Gradient measured in the same run; `passes`: the cost "
        "model's passes per map (what `salbench --dry-run` predicts from); `x grad / passes`: what one of those "
        "passes costs against a Gradient pass (below 1: forward-only passes, batched; above 1: work beside the model, "
        "e.g. Lime's and KernelShap's surrogate fits, DeepLift's hooks).",
        "",
        f"Machine: {machine}",
        "",
        "| method | library | mean shift | checkerboard | cascading | ms / map | x grad | passes | x grad / passes | "
        "where the literature disagrees |",
        "|---|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for method in t.index:
        lib = LITERATURE.get(method, ("?", "", {}))[0]
        row = v.loc[method] if method in v.index else pd.Series(dtype=object)
        cells = [str(row.get(f"{s}_cell", "n/a")) if len(row) else "n/a" for s in (*SHIFTS, MODE)]
        r = t.loc[method]
        ms = "failed" if pd.isna(r.seconds) else f"{r.seconds * 1e3:.3g}"
        ratio = "-" if pd.isna(r.ratio) else f"{r.ratio:.3g}"
        note = agreement(method, row) if len(row) else (r.error or "did not run")
        per_pass = "-" if pd.isna(r.ratio) else f"{r.ratio / r.passes:.2f}"
        lines.append(f"| {method} | {lib} | {' | '.join(cells)} | {ms} | {ratio} | {int(r.passes)} | {per_pass} | "
                     f"{note} |")
    lines += ["", "What the literature says, per method (the claims the last column checks):", ""]
    for method in t.index:
        lib, claim, expected = LITERATURE.get(method, ("?", "(no entry)", {}))
        pinned = ", ".join(f"{k} {w}" for k, w in expected.items()) or "nothing pinned"
        lines.append(f"- `{method}` ({t.at[method, 'name']}): {claim} ({pinned}).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", type=Path, default=ROOT / "outputs" / "zoo", help="the zoo job's folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--samples", type=int, default=32, help="digits timed per method")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the preset (e.g. run.n_samples=16)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    cfg = compose(["logger=disabled", "run.progress=false", "run.figures=false", *args.overrides])
    from bench.cli import job

    t0 = time.perf_counter()
    job.run(cfg, args.job)
    log.info("job: %.0f s (a finished job is reused)", time.perf_counter() - t0)
    from importlib.metadata import version

    m = describe("cpu", {lib: version(lib) for lib in ("captum", "grad-cam", "zennit")})
    timing = time_methods(cfg, args.samples, args.repeats)
    machine = (f"{m.cpu_model}; {m.cpu_count} CPUs, {m.usable_cpus} usable, {m.torch_threads} torch threads; load "
               f"average {m.load_str('.1f', ', ')} before timing, {format_load(load_average(), '.1f', ', ')} after; "
               + ", ".join(f"{lib} {v}" for lib, v in m.versions.items()) + f", Python {m.python}")
    text = render(verdicts(args.job), timing, machine, args.job, cfg)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
