"""One benchmark job from a plain config dict (the composed Hydra config as a container): no Hydra here.

Order of work, so that nothing computed is lost: data and model; the input-invariance test; the
randomization tests; the results table written atomically (``results.parquet``); figures; the
leaderboard printed; W&B last. Method failures are recorded and the other methods go on; the job's
record (``job.json``) holds the status, the config hash and every error.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench.results import RESULTS_FILE, concat, config_hash, write_table

__all__ = ["run", "job_hash", "is_done", "JOB_FILE"]

JOB_FILE = "job.json"
_VOLATILE = ("logger", "run.progress", "run.figures", "run.device")  # do not change the results


def job_hash(config: Mapping[str, Any]) -> str:
    """Hash of everything that determines the results (not the logger, progress bars, figures or device)."""
    cfg = json.loads(json.dumps(config, default=str))
    for key in _VOLATILE:
        parts = key.split(".")
        node = cfg
        for p in parts[:-1]:
            node = node.get(p, {})
        node.pop(parts[-1], None)
    return config_hash(cfg)


def is_done(out: str | os.PathLike, chash: str) -> bool:
    """Whether ``out`` already holds a finished job with this config hash (resume after a crash)."""
    out = Path(out)
    try:
        record = json.loads((out / JOB_FILE).read_text())
    except (OSError, ValueError):
        return False
    return record.get("status") == "ok" and record.get("config_hash") == chash and (out / RESULTS_FILE).exists()


def _write_record(out: Path, record: dict) -> None:
    tmp = out / f".{JOB_FILE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, out / JOB_FILE)


def _shifts(transforms: Mapping[str, Mapping], model, data) -> dict[str, torch.Tensor]:
    from bench.shifts import make_shift

    shifts = {}
    for label, spec in transforms.items():
        spec = dict(spec)
        kind = spec.pop("kind")
        x_hat = data.x_test[int(spec.get("sample", 0))]
        shifts[label] = make_shift(kind, data.input_shape, model=model, x_hat=x_hat, **spec)
    return shifts


def run(
    config: Mapping[str, Any], out: str | os.PathLike, *, skip_done: bool = True, meta: Mapping[str, str] | None = None
) -> dict:
    """Run the job described by ``config`` into ``out``; returns its record (also ``out/job.json``).

    ``meta``: ``{"name": ..., "group": ...}`` for the W&B run (the CLI passes the job's overrides and the
    sweep folder)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chash = job_hash(config)
    if skip_done and is_done(out, chash):
        record = json.loads((out / JOB_FILE).read_text())
        print(f"skipped: {out} already holds the results of this config ({chash})")
        return {**record, "skipped": True}
    record: dict[str, Any] = {"status": "running", "config_hash": chash, "started": time.time(), "errors": {}}
    _write_record(out, record)
    try:
        record.update(_run(config, out, chash, record, dict(meta or {})))
        record["status"] = "failed" if record["errors"] else "ok"
    except Exception as err:  # the job fails; a sweep goes on with its other jobs
        record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    record["seconds"] = round(time.time() - record["started"], 3)
    _write_record(out, record)
    return record


def _run(cfg: Mapping[str, Any], out: Path, chash: str, record: dict, meta: dict) -> dict:
    from bench.data import load_dataset
    from bench.explain import method_specs
    from bench.models import TrainConfig, load_or_train

    run_cfg, data_cfg, model_cfg, tc = cfg["run"], cfg["data"], cfg["model"], cfg["train"]
    torch.manual_seed(run_cfg["seed"])
    device = run_cfg["device"]
    data = load_dataset(data_cfg["name"], encoding=data_cfg["encoding"], seed=data_cfg["seed"], root=data_cfg["root"],
                        download=data_cfg["download"], n_test=data_cfg["n_test"])
    train_cfg = TrainConfig(tc["epochs"], tc["lr"], tc["batch_size"], tc["momentum"], tc["weight_decay"], tc["seed"])
    model_kw = dict(model_cfg.get("kwargs") or {})
    if model_cfg.get("pretrained"):
        model_kw["pretrained"] = True
    model, info = load_or_train(model_cfg["name"], data, train_cfg, model_kw=model_kw, cache=tc["cache_dir"],
                                use_cache=tc["use_cache"], device=device, progress=run_cfg["progress"])
    source = "loaded from cache" if info["cached"] else "trained"
    print(f"{model_cfg['name']} on {data.name} ({data.encoding}, {len(data.x_train)} train / {len(data.x_test)} test): "
          f"test accuracy {info['test_acc']:.4f}, train accuracy {info['train_acc']:.4f} [{source}: {info['path']}]")
    summary: dict[str, Any] = {"model": model_cfg["name"], "dataset": data.name, "test_acc": info["test_acc"],
                               "train_acc": info["train_acc"]}
    specs = method_specs(cfg.get("method") or {})
    tests = list(run_cfg["tests"])
    unknown = set(tests) - {"invariance", "randomization"}
    if unknown:
        raise ValueError(f"unknown test(s) {sorted(unknown)} in run.tests; accepted: invariance, randomization")
    common = dict(metrics=list(cfg["metric"]["names"]), normalization=cfg["metric"]["normalization"],
                  n_samples=run_cfg["n_samples"], batch_size=run_cfg["batch_size"], device=device,
                  model_name=model_cfg["name"], seed=run_cfg["seed"], config_hash=chash, progress=run_cfg["progress"])
    frames: list[pd.DataFrame] = []
    figures: list[Path] = []
    fig_dir = out / "figures"
    results: dict[str, Any] = {}

    if "invariance" in tests and cfg.get("transform") and specs:
        from bench.invariance import input_invariance

        inv = cfg["invariance"]
        res = input_invariance(model, data, specs, _shifts(cfg["transform"], model, data),
                               tolerance=inv["tolerance"], ssim_threshold=inv["ssim_threshold"],
                               float64=inv["float64"], tie_break=inv["tie_break"], fit_samples=inv["fit_samples"],
                               premise_rtol=inv["premise_rtol"], **common)
        frames.append(res.table)
        results["invariance"] = res
        summary["premise"] = res.premise
        record["errors"].update({f"{m} / {s}": e for (m, s), e in res.errors.items()})

    if "randomization" in tests and cfg.get("randomization") and specs:
        from bench.sanity import model_randomization, train_on_permuted_labels

        for label, rspec in cfg["randomization"].items():
            mode = str(rspec["mode"])
            kw: dict[str, Any] = {}
            if mode == "labels":
                kw["random_label_model"], _ = train_on_permuted_labels(
                    model_cfg["name"], data, epochs=rspec.get("epochs"), lr=rspec.get("lr"), seed=rspec["seed"],
                    min_train_acc=rspec["min_train_acc"], model_kw=model_kw, device=device, cache=tc["cache_dir"],
                    use_cache=tc["use_cache"], progress=run_cfg["progress"])
            res = model_randomization(model, data, specs, mode, granularity=str(rspec["granularity"]),
                                      init=rspec["init"], stages=rspec.get("stages"),
                                      fit_samples=cfg["invariance"]["fit_samples"], **kw, **common)
            res.table["condition"] = label if label != mode else mode
            frames.append(res.table)
            results[f"randomization:{label}"] = res
            record["errors"].update({f"{m} / {label}": e for m, e in res.errors.items()})

    table = concat(frames)
    path = write_table(table, out)  # results first: figures and loggers are views of this table
    summary["results"] = str(path)
    summary["rows"] = len(table)

    if run_cfg.get("figures", True):
        figures = _figures(results, fig_dir, model_cfg["name"])
    board = _leaderboard(table, cfg)
    if board is not None:
        print(board[1] if isinstance(board, tuple) else board)
    error = _log(cfg, out, table, figures, board[0] if isinstance(board, tuple) else None, meta)
    if error:
        summary["logger_error"] = error
        print(f"warning: {error} (results are in {path})")
    for key, message in record["errors"].items():
        print(f"error: {key}: {message}")
    return summary


def _figures(results: Mapping[str, Any], fig_dir: Path, model_name: str) -> list[Path]:
    from bench.figures import cascade_grid, invariance_grid, similarity_curves

    paths = []
    inv = results.get("invariance")
    if inv is not None:
        ok = {(r.method, r.condition): bool(r.invariant) for r in inv.verdicts.itertuples()}
        for shift, maps in inv.maps.items():
            if maps:
                paths.append(invariance_grid(maps, inv.inputs[shift], fig_dir / f"invariance_{shift}.png",
                                             title=f"{model_name}: {shift}",
                                             verdicts={m: ok.get((m, shift)) for m in maps if (m, shift) in ok}))
    for key, res in results.items():
        if key.startswith("randomization:") and res.stages and len(res.table):
            label = key.split(":", 1)[1]
            maps = {m: v for m, v in res.maps.items() if len(v) == len(res.stages) + 1}
            if maps:
                paths.append(cascade_grid(maps, ["trained", *res.stages], res.inputs,
                                          fig_dir / f"randomization_{label}_grid.png", title=f"{model_name}: {label}"))
            paths.append(similarity_curves(res.table, fig_dir / f"randomization_{label}_curves.png",
                                           title=f"{model_name}: {label}"))
    return paths


def _leaderboard(table: pd.DataFrame, cfg: Mapping[str, Any]) -> tuple[pd.DataFrame, str] | str | None:
    if not len(table):
        return None
    try:
        from bench.leaderboard import build_leaderboard, to_markdown
    except ImportError:  # pragma: no cover - the leaderboard module ships with the package
        return None
    inv = cfg["invariance"]
    names = list(cfg["metric"]["names"])
    metric = "spearman_abs" if "spearman_abs" in names else next((n for n in names if n != "max_rel_diff"), None)
    try:
        board = build_leaderboard(table, tolerance=inv["tolerance"], ssim_threshold=inv["ssim_threshold"],
                                  randomization_metric=metric)
    except ValueError as err:  # a view: the table is already on disk
        return f"(no leaderboard: {err})"
    return board, to_markdown(board)


def _log(cfg: Mapping[str, Any], out: Path, table: pd.DataFrame, figures: list[Path],
         board: pd.DataFrame | None, meta: dict) -> str | None:
    from bench.wandb_log import log_run

    lg = cfg["logger"]
    return log_run(mode=str(lg["mode"]), out=out, config=cfg, table=table, leaderboard=board, figures=figures,
                   project=lg["project"], entity=lg.get("entity"), group=lg.get("group") or meta.get("group"),
                   name=meta.get("name") or cfg["run"]["name"], tags=lg.get("tags") or [])
