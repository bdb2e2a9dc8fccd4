"""One benchmark job from the typed config (:class:`bench.cli.config.MainConfig`): no Hydra here.

Order of work, so that nothing computed is lost: the job folder's lock (``job.lock``: one writer per folder,
:mod:`bench.cli.lock`); data and model; the input-invariance test; the randomization tests, chunk by chunk
(:mod:`bench.cli.stream`); the results table assembled only when every chunk of the plan is there, never replacing
a table of the same configuration by a shorter one, and written atomically (``results.parquet``); figures; the
leaderboard logged; W&B last. Method failures are recorded and the other methods go on; the job's record
(``job.json``) holds the status (``running``, ``ok``, ``failed``, ``interrupted``), the config hash and every error
with its traceback.

Resuming: a job stopped by SIGINT/SIGTERM is marked ``interrupted`` (its finished chunks are kept); one killed after
its ``results.parquet`` was written reuses that table (its rows and SHA-256 are recorded in ``job.json`` as it
replaces the old one, a signal cannot split the two) instead of computing it again.

Maps (``run.save_maps=true``, :mod:`bench.core.maps`): each chunk's maps are written to
``maps/<job hash>/<chunk key>.safetensors`` (atomically) before the chunk counts as done, so a resumed job neither
loses nor duplicates them (a chunk run again overwrites its file); ``job.json`` lists the files (``maps``) with the
table's rows, and once ``results.parquet`` holds this job's table the maps of other configurations are removed (the
maps folder always belongs to the table). ``salbench-rescore`` (:mod:`bench.cli.rescore`) scores them again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from bench._io import atomic_write
from bench.cli.config import MainConfig
from bench.cli.lock import Interrupted, JobLock, deferred, signals_raise
from bench.cli.stream import PARTS_DIR, Parts, chunks, release_memory
from bench.core.maps import MAPS_DIR, MapSink, maps_folder
from bench.core.results import RESULTS_FILE, config_hash, write_table

__all__ = ["run", "job_hash", "row_config", "factory_sources", "is_done", "JOB_FILE", "as_dict",
           "ResultsWouldShrink", "chunk_rows", "MAPS_SUFFIX"]

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
_STAGED = ".results.parquet.staged"  # the assembled table before it replaces results.parquet
_VOLATILE = ("logger", "run.progress", "run.figures", "run.device", "run.keep_maps",  # do not change the results
             "run.max_hours", "figures")
TESTS = ("invariance", "randomization")
MAPS_SUFFIX = ".safetensors"  # a chunk's maps: maps/<job hash>/<chunk key>.safetensors


def as_dict(config: MainConfig) -> dict:
    """The config as plain JSON-able data (enums as their values)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


#: where the source hash of a ``package.module:factory`` model or data set goes in the job's and the rows' configs
_SOURCE_KEYS = {"model": "model.source_sha256", "data": "data.source_sha256"}


def factory_sources(config: MainConfig) -> dict[str, str]:
    """``{"model.source_sha256": ..., "data.source_sha256": ...}``: the hash of the source file of a
    ``package.module:factory`` model and data set (:func:`bench.core.models.factory_sha256`), where it can be read;
    and ``{"metric.<score>.source_sha256": ...}`` for each score the job computes that a module of one's own
    registered (``metric.plugins``: :func:`score_sources`). Never raises: a factory that cannot be imported is left
    out here (the job itself then fails naming it)."""
    from bench.core.models import FactoryError, factory_sha256, is_factory_name

    out: dict[str, str] = {}
    for group, key in _SOURCE_KEYS.items():
        name = getattr(config, group).name
        if not is_factory_name(name):
            continue
        try:
            sha = factory_sha256(name, f"{group}.name")
        except FactoryError:
            continue
        if sha is not None:
            out[key] = sha
    out.update(score_sources(config))
    return out


def score_sources(config: MainConfig) -> dict[str, str]:
    """``{"metric.<score>.source_sha256": hash}`` of each score the job computes (``metric.names`` and each
    randomization's ``scores``) that was registered outside :mod:`bench.core.scores` (a module of
    ``metric.plugins``; :func:`bench.core.scores.score_source`), where its source can be read. Empty for the built-in
    scores, so that no other job's hash changes. Never raises: an unknown name is left out (the entry point refuses
    it before the job)."""
    from bench.core.scores import score_source

    names = [*config.metric.names, *(n for spec in config.randomization.values() for n in spec.scores)]
    out: dict[str, str] = {}
    for name in dict.fromkeys(names):
        try:
            sha = score_source(name)
        except ValueError:
            continue
        if sha is not None:
            out[f"metric.{name}.source_sha256"] = sha
    return out


def job_hash(config: MainConfig, sources: dict[str, str] | None = None) -> str:
    """Hash of everything that determines the results (not the logger, progress bars, figures or device); for a
    ``package.module:factory`` model or data set also the hash of its source (``sources``, default
    :func:`factory_sources`), so that a job of an edited model is not taken for the old one's."""
    cfg = as_dict(config)
    for key, sha in (factory_sources(config) if sources is None else sources).items():
        group, _, leaf = key.partition(".")  # metric.<score>.source_sha256: the leaf holds a dot
        cfg[group][leaf] = sha
    for key in _VOLATILE:
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return config_hash(cfg)


#: config keys that change no score (where the results go, how the job runs, how verdicts are drawn from them)
_NOT_RESULTS = ("train.cache_dir", "train.use_cache", "train.min_test_acc", "data.root", "data.download", "run.name",
                "run.tests",
                "run.batch_size", "run.chunk_size", "run.device", "run.progress", "run.figures", "run.keep_maps",
                "run.max_hours", "run.save_maps", "run.maps_dtype",
                "invariance.ssim_threshold", "invariance.tolerance")


#: data sets whose ``data.root`` is their content (not merely where a fixed set is stored)
_FOLDER_DATA = ("image_folder", "imagenet")


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: "{}"}
    return {prefix[:-1]: json.dumps(node) if isinstance(node, list) else node}


def _data_root_is_content(name: str) -> bool:
    """Whether ``data.root`` is the data set itself: an image folder, or a ``package.module:factory`` that takes
    ``root``."""
    if name in _FOLDER_DATA:
        return True
    from bench.core.models import FactoryError, import_factory, is_factory_name

    if not is_factory_name(name):
        return False
    from bench.core.data import factory_keywords

    try:
        return "root" in factory_keywords(import_factory(name, "data.name"))
    except FactoryError:
        return True  # not importable now: keep the root (rows never pool wrongly)


def row_config(config: MainConfig, experiment: str, method: str, condition: str,
               sources: dict[str, str] | None = None) -> dict[str, Any]:
    """Everything that determines the scores of the rows of one (experiment, method, condition), flattened
    (``train.lr``, ``method.params.n``, ``condition.mode`` ...): model, data, training recipe, samples and seed,
    the method's entry (``method.*``) and the shift's or randomization's entry (``condition.*``), and the
    invariance settings for invariance rows (without ``invariance.noise_level`` where the method sets its own
    SmoothGrad noise: :func:`bench.experiments.invariance.sets_own_noise`). A ``package.module:factory`` model or
    data set adds the hash of its source file (``model.source_sha256``, ``data.source_sha256``; ``sources``, default
    :func:`factory_sources`), so that the rows of an edited model never pool with the old ones. Its hash is the
    rows' ``config_hash``: rows pool only when it is equal (:mod:`bench.reporting.leaderboard`)."""
    d = as_dict(config)
    keep = {"data.root"} if _data_root_is_content(d["data"]["name"]) else set()  # the folder is the data set
    flat = {k: v for k, v in _flat({g: d[g] for g in ("model", "data", "train", "run")}).items()
            if k not in _NOT_RESULTS or k in keep}
    flat.update(factory_sources(config) if sources is None else sources)
    entry = dict(d["method"].get(method) or {})
    if experiment == "input_invariance":
        from bench.experiments.invariance import sets_own_noise

        unused = {"invariance.noise_level"} if sets_own_noise(entry.get("params") or {}) else set()
        flat.update({k: v for k, v in _flat({"invariance": d["invariance"]}).items()
                     if k not in _NOT_RESULTS and k not in unused})
        flat.update(_flat({"condition": d["transform"].get(condition, {})}))
    else:
        flat.update(_flat({"condition": d["randomization"].get(condition, {})}))
    entry.pop("label", None)
    flat.update(_flat({"method": entry}))
    return flat


def is_done(out: str | os.PathLike, chash: str) -> bool:
    """Whether ``out`` already holds a finished job with this config hash (resume after a crash): its record is ok
    and its ``results.parquet`` holds as many rows as the record says (a table overwritten by a shorter one is not
    done)."""
    out = Path(out)
    try:
        record = json.loads((out / JOB_FILE).read_text())
    except (OSError, ValueError):
        return False
    if not (record.get("status") == "ok" and record.get("config_hash") == chash and (out / RESULTS_FILE).exists()):
        return False
    return record.get("rows") is None or _n_rows(out / RESULTS_FILE) == record["rows"]


def _write_record(out: Path, record: dict) -> None:
    with deferred():
        atomic_write(out / JOB_FILE, json.dumps(record, indent=2, default=str))


def _read_record(out: Path) -> dict:
    try:
        record = json.loads((out / JOB_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


class ResultsWouldShrink(RuntimeError):
    """The assembled table has fewer rows than the ``results.parquet`` of the same configuration already there."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _n_rows(path: Path) -> int | None:
    """Rows of a Parquet file from its footer (None: no file, or not readable)."""
    import pyarrow.parquet as pq

    try:
        return int(pq.read_metadata(path).num_rows)
    except Exception:  # noqa: BLE001  (pyarrow raises several types for a damaged file)
        return None


def _results_owner(out: Path, prior: dict) -> str | None:
    """The config hash whose table ``out/results.parquet`` holds, as the previous record says (``"unknown"``
    when a file is there but no record says whose it is; None when there is no file)."""
    if not (out / RESULTS_FILE).exists():
        return None
    if "results_config_hash" in prior:
        return prior["results_config_hash"] or "unknown"
    if prior.get("status") == "ok" and prior.get("config_hash"):  # a record written before this field existed
        return prior["config_hash"]
    return "unknown"


def run(config: MainConfig, out: str | os.PathLike, *, skip_done: bool = True, meta: dict | None = None) -> dict:
    """Run the job described by ``config`` into ``out``; returns its record (also ``out/job.json``).

    ``meta``: ``{"name": ..., "group": ...}`` for the W&B run (the CLI passes the job's overrides and the
    sweep folder). A failure of the job is recorded (``status``, ``error``, ``traceback``), not raised.

    Raises :class:`bench.cli.lock.LockHeld` at once, touching nothing, when another live run holds the folder's
    lock, and :class:`bench.cli.lock.Interrupted` on SIGINT/SIGTERM (in the main thread) after marking the record
    ``interrupted``; the lock is released on every exit path."""
    from bench.core.scores import load_plugins

    load_plugins(config.metric.plugins)  # before the hash: their scores' sources enter it (the CLI imported them)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chash = job_hash(config)
    with signals_raise():
        with deferred():  # a signal while the lock is being taken: raised once it is held (then released)
            lock = JobLock(out)
            lock.acquire()
        try:
            return _run_locked(config, out, chash, skip_done, dict(meta or {}))
        finally:
            lock.release()


def _run_locked(config: MainConfig, out: Path, chash: str, skip_done: bool, meta: dict) -> dict:
    prior = _read_record(out)
    if skip_done and is_done(out, chash):
        record = prior
        log.info("skipped: %s already holds the results of this config (%s)", out, chash)
        record["last_skipped"] = time.time()  # the end-of-sweep summary counts it as skipped
        _write_record(out, record)
        return {**record, "skipped": True}
    if skip_done and prior.get("status") == "ok" and prior.get("config_hash") == chash:
        n = _n_rows(out / RESULTS_FILE) if (out / RESULTS_FILE).exists() else None
        log.warning("%s %s but its job.json records %s rows: computing the job again", out / RESULTS_FILE,
                    f"holds {n} rows" if n is not None else "is missing or unreadable", prior.get("rows"))
    if skip_done:
        reused = _reuse(config, out, chash, prior, meta)
        if reused is not None:
            return reused
    record: dict[str, Any] = {"status": "running", "config_hash": chash, "started": time.time(), "errors": {},
                              "tracebacks": {}}
    owner = _results_owner(out, prior)
    if owner is not None:
        record["results_config_hash"] = owner  # whose table results.parquet holds until this job replaces it
    final = False  # the record's last write began: a signal after it changes nothing on disk
    try:
        _write_record(out, record)
        try:
            record.update(_run(config, out, chash, record, meta))
            record["status"] = "failed" if record["errors"] else "ok"
        except Exception as err:  # the job fails; a sweep goes on with its other jobs
            log.error("job failed: %s: %s", type(err).__name__, err)
            log.debug("traceback of the failed job", exc_info=True)
            record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        record["seconds"] = round(time.time() - record["started"], 3)
        final = True
        _write_record(out, record)
    except Interrupted as sig:
        if not final:
            _mark_interrupted(out, record, sig)
        raise
    return record


def _mark_interrupted(out: Path, record: dict, sig: Interrupted) -> None:
    """Record a job stopped by a signal (status ``interrupted``, the signal, how to resume) and log one line."""
    if record.get("results_sha256"):
        kept = f"its results are complete in {out / RESULTS_FILE} (the next run reuses them)"
    else:
        n = len(list((out / PARTS_DIR).glob("*.json")))
        kept = f"{n} finished chunk(s) kept in {out / PARTS_DIR}"
    record.update(status="interrupted", signal=sig.name, error=f"interrupted by {sig.name}",
                  resume="run the same command again: finished chunks are kept and not computed again",
                  seconds=round(time.time() - record["started"], 3))
    _write_record(out, record)
    log.warning("job interrupted by %s: %s; run the same command again to resume (record: %s)", sig.name, kept,
                out / JOB_FILE)
    sig.logged = True


def _reuse(config: MainConfig, out: Path, chash: str, prior: dict, meta: dict) -> dict | None:
    """A job of this config killed after its ``results.parquet`` was written (its record not yet ``ok``): if the
    file is exactly the table it recorded (rows and SHA-256, written to ``job.json`` as the table replaced the old
    file; the table was assembled only from a complete plan), mark it ok without computing it again, and redo the
    cheap views (leaderboard, W&B; not the figures). None: nothing to reuse."""
    path = out / RESULTS_FILE
    if (prior.get("config_hash") != chash or prior.get("results_config_hash") != chash
            or not prior.get("results_sha256") or prior.get("errors") or not path.exists()):
        return None
    rows = _n_rows(path)
    if rows is None or rows != prior.get("rows") or _sha256(path) != prior["results_sha256"]:
        return None
    record = dict(prior)
    record.pop("error", None)
    record.pop("signal", None)
    record.pop("resume", None)
    record.pop("traceback", None)
    record.update(status="running", reused_from=prior.get("started"), started=time.time())
    log.info("reused: %s holds the complete results of this config (%d rows, as recorded when they were written; "
             "the job had stopped before it was marked ok): not computed again", path, rows)
    _write_record(out, record)
    try:
        from bench.core.results import read_table

        table = read_table(path)
        info = {k: prior[k] for k in ("model", "dataset", "test_acc", "train_acc", "min_test_acc", "premise", "rows",
                                      "results") if k in prior}
        notes = _views(config, out, table, {}, meta, path, None, info=info, chash=chash)  # no figures: no maps
        record.update(notes)
        if config.run.figures:
            record["figures_note"] = "figures were not drawn again (the results were reused)"
    except Interrupted as sig:
        _mark_interrupted(out, record, sig)
        raise
    except Exception as err:  # noqa: BLE001  (a view: the results are on disk)
        log.warning("reused results: the views failed: %s: %s", type(err).__name__, err)
    Parts(out, chash).remove()
    _prune_maps(out, chash if config.run.save_maps else None)
    record["status"] = "ok"
    record["seconds"] = round(time.time() - record["started"], 3)
    _write_record(out, record)
    return record


def _run(cfg: MainConfig, out: Path, chash: str, record: dict, meta: dict) -> dict:
    from bench.core.data import load_dataset
    from bench.core.explain import method_specs
    from bench.core.models import SOURCE_KEY, normalization
    from bench.core.settings import check_run
    from bench.core.training import load_or_train, load_weights
    from methods.registry import check_finite

    run = cfg.run
    unknown = set(run.tests) - set(TESTS)
    if unknown:
        raise ValueError(f"unknown test(s) {sorted(unknown)} in run.tests; accepted: {', '.join(TESTS)}")
    torch.manual_seed(run.seed)
    sources = factory_sources(cfg)  # the factories' source hashes, once: the checkpoint key and the rows' configs
    data = load_dataset(**dataclasses.asdict(cfg.data))
    for split in ("train", "test"):
        check_finite(data.split(split)[0], f"the {split} inputs of data set {data.name!r}")
    check_run(run, len(data.x_test))
    from bench.cli.budget import check as check_budget

    check_budget(cfg, data=data)  # an absurd job (time, memory) is refused before any work
    model_kw = dict(cfg.model.kwargs)
    if _SOURCE_KEYS["model"] in sources:  # in the checkpoint's key: an edited model never loads the old weights
        model_kw[SOURCE_KEY] = sources[_SOURCE_KEYS["model"]]
    mc = cfg.model
    norm = normalization(mc.normalize, mc.mean, mc.std, data=data, model_name=mc.name, pretrained=mc.pretrained)
    if norm is not None:  # the model standardizes its own input: maps, shifts and bounds stay in pixel space
        model_kw["normalize"] = norm
    if mc.pretrained:
        model_kw["pretrained"] = True
    if mc.checkpoint or mc.pretrained:  # given weights: evaluated, never trained over
        model, info = load_weights(mc.name, data, cfg.train, model_kw=model_kw, checkpoint=mc.checkpoint,
                                   device=run.device)
    else:
        model, info = load_or_train(mc.name, data, cfg.train, model_kw=model_kw, device=run.device,
                                    progress=run.progress)
    log.info("%s on %s (%s, %d train / %d test): test accuracy %.4f (required >= %.4f), train accuracy %.4f "
             "[%s: %s]", cfg.model.name, data.name, data.encoding, len(data.x_train), len(data.x_test),
             info["test_acc"], info["min_test_acc"], info["train_acc"],
             "given weights" if info.get("given") else "loaded from cache" if info["cached"] else "trained",
             info["path"])
    summary: dict[str, Any] = {"model": cfg.model.name, "dataset": data.name, "test_acc": info["test_acc"],
                               "train_acc": info["train_acc"], "min_test_acc": info["min_test_acc"]}
    from bench.core.embedding import embedded, has_embedding

    if has_embedding(model):  # token ids: the tests run on the embedding output
        model, data = embedded(model, data)
        log.info("the tests run on the embedding output: inputs %s, domain [%.3g, %.3g]", tuple(data.input_shape),
                 *data.domain)
    specs = method_specs(cfg.method)
    labels = dict(model_name=cfg.model.name)
    results: dict[str, Any] = {}
    parts = Parts(out, chash)
    # whole batches per chunk: a method that seeds its noise per call (SmoothGrad) then sees the same batches
    # whatever the chunk size, so chunking never changes a score
    spans = chunks(run.n_samples, -(-run.chunk_size // run.batch_size) * run.batch_size)
    # the plan: every test x condition x chunk span that this job writes; the table is assembled from all of them
    units = ([("invariance", "all")] if "invariance" in run.tests and cfg.transform and specs else []) + \
        ([("randomization", label) for label in cfg.randomization] if "randomization" in run.tests and specs else [])
    plan = [Parts.key(test, condition, start) for test, condition in units for start, _ in spans]
    bar = tqdm(total=run.n_samples * _n_tests(cfg, specs), desc="samples", unit="sample", disable=not run.progress)

    def chunked(test: str, condition: str, experiment) -> None:
        """Run ``experiment(sub_data, sub_run, sink)`` chunk by chunk; each chunk's maps (``sink``: a
        :class:`~bench.core.maps.MapSink` with ``run.save_maps``, else None), rows and record go to disk at once, in
        that order (a finished chunk of a killed job is not run again)."""
        for start, stop in spans:
            key = Parts.key(test, condition, start)
            if parts.done(key):
                chunk_record = parts.record(key)
                log.info("%s / %s: samples %d-%d already done (%s)", test, condition, start, stop - 1,
                         parts.path(key))
            else:
                sub = dataclasses.replace(data, x_test=data.x_test[start:stop], y_test=data.y_test[start:stop])
                sub_run = dataclasses.replace(run, n_samples=stop - start, progress=False,
                                              keep_maps=run.keep_maps if start == 0 else 0)
                sink = MapSink(run.maps_dtype, condition if test == "randomization" else None) if run.save_maps \
                    else None
                res = experiment(sub, sub_run, sink)
                table = chunk_rows(res.table, test, condition, start)
                if sink is not None:  # before the chunk counts as done: a chunk run again overwrites its file
                    sink.save(maps_folder(out, chash) / f"{key}{MAPS_SUFFIX}", sample_offset=start,
                              meta={"job_hash": chash, "chunk": key, "test": test, "condition": condition,
                                    "start": start, "stop": stop})
                    del sink
                chunk_record = {"errors": {}, "tracebacks": {}, "premise": getattr(res, "premise", {}),
                                "not_applicable": dict(getattr(res, "not_applicable", {}))}
                for where, err in res.errors.items():
                    name = " / ".join(where) if isinstance(where, tuple) else f"{where} / {condition}"
                    chunk_record["errors"][name] = err
                    chunk_record["tracebacks"][name] = res.tracebacks[where]
                parts.write(key, table, chunk_record)
                if start == 0:
                    results[f"{test}:{condition}" if test == "randomization" else test] = res
                del res, table  # before the next chunk runs: one chunk in memory at a time
                release_memory()
            record["errors"].update(chunk_record["errors"])
            record["tracebacks"].update(chunk_record["tracebacks"])
            if chunk_record.get("not_applicable"):  # not failures: the job stays ok, the reason is recorded
                summary.setdefault("not_applicable", {}).update(chunk_record["not_applicable"])
            for shift, err in chunk_record.get("premise", {}).items():
                premise = summary.setdefault("premise", {})
                premise[shift] = max(premise.get(shift, 0.0), err)
            bar.update(stop - start)

    if "invariance" in run.tests and cfg.transform and specs:
        from bench.experiments.invariance import input_invariance
        from bench.twins.shifts import make_shift

        shifts = {label: make_shift(spec, data.input_shape, model=model, x_test=data.x_test)
                  for label, spec in cfg.transform.items()}
        chunked("invariance", "all", lambda sub, sub_run, sink: input_invariance(
            model, sub, specs, shifts, settings=cfg.invariance, run=sub_run, scoring=cfg.metric, sink=sink, **labels))

    if "randomization" in run.tests and cfg.randomization and specs:
        from bench.experiments.label_randomization import train_on_permuted_labels
        from bench.experiments.model_randomization import model_randomization

        for label, rspec in cfg.randomization.items():
            label_models: dict[str, Any] = {}
            if rspec.mode == "labels":  # the permuted-label model and its control: one recipe, the labels differ
                try:
                    for key, permute in (("random_label_model", True), ("retrained_model", False)):
                        label_models[key], _ = train_on_permuted_labels(
                            cfg.model.name, data, epochs=rspec.epochs, lr=rspec.lr, seed=rspec.seed,
                            min_train_acc=rspec.min_train_acc, model_kw=model_kw, device=run.device,
                            cache_dir=cfg.train.cache_dir, use_cache=cfg.train.use_cache, progress=run.progress,
                            permute=permute)
                except RuntimeError as err:  # this test cannot run (the labels not fitted): the others go on
                    name = f"labels / {label}"
                    record["errors"][name] = f"label models: {err}"
                    record["tracebacks"][name] = traceback.format_exc()
                    log.error("the label test %r cannot run: %s", label, err)
                    plan[:] = [k for k in plan if k not in {Parts.key("randomization", label, s) for s, _ in spans}]
                    continue

            def randomization(sub, sub_run, sink, rspec=rspec, label_models=label_models):
                return model_randomization(model, sub, specs, rspec, run=sub_run, scoring=cfg.metric, sink=sink,
                                           **label_models, **labels)

            chunked("randomization", label, randomization)
    bar.close()
    table = parts.collect(plan)  # every chunk of the plan, or an error naming the missing ones
    for label, why in summary.get("not_applicable", {}).items():  # the whole reason is in job.json
        log.warning("%s: not applicable to %s (no rows, not a failure): %s", label, cfg.model.name,
                    str(why).split(": ")[0])

    if len(table):  # each row's config_hash: the configuration that produced it (never pooled with another one)
        keys = table[["experiment", "method", "condition"]].drop_duplicates().itertuples(index=False)
        configs = {tuple(k): row_config(cfg, *k, sources=sources) for k in keys}
        hashes = {k: config_hash(c) for k, c in configs.items()}
        table["config_hash"] = [hashes[k] for k in zip(table.experiment, table.method, table.condition, strict=True)]
        record["row_configs"] = {hashes[k]: c for k, c in configs.items()}
    if run.save_maps:  # recorded with the table's rows: the maps that belong to it
        summary["maps"] = _maps_record(out, chash, plan, run.maps_dtype)
    path = _replace_results(table, out, chash, record, summary)  # results first: figures and loggers are views
    parts.remove()
    _prune_maps(out, chash if run.save_maps else None)
    features = (getattr(data, "meta", None) or {}).get("features")  # a table's column names, for its figures
    return {**summary, **_views(cfg, out, table, results, meta, path, model, info=summary, chash=chash,
                                feature_names=features)}


def chunk_rows(table: pd.DataFrame, test: str, condition: str, start: int) -> pd.DataFrame:
    """The rows of one chunk as the job stores them, changed in place and returned: ``sample`` and ``data_index``
    counted from the job's first sample (the chunk's ``start`` added), and a randomization test's ``condition`` set
    to its config entry's name ``condition`` (the experiment writes the mode there). ``salbench-rescore`` applies
    it to the rows it computes from a chunk's saved maps."""
    table["sample"] = table["sample"] + start
    table["data_index"] = table["data_index"] + start
    if test == "randomization":
        table["condition"] = condition
    return table


def _maps_record(out: Path, chash: str, plan: list[str], dtype: str) -> dict[str, Any]:
    """What ``job.json`` says of the job's maps: their folder (relative to the job), dtype, the files of the plan's
    chunks and their bytes, and the files missing (a finished chunk whose maps file was removed: logged)."""
    folder = maps_folder(out, chash)
    files = [f"{key}{MAPS_SUFFIX}" for key in sorted(plan)]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        log.warning("%d of %d maps file(s) are missing from %s (%s): salbench-rescore refuses this job until it is "
                    "computed again", len(missing), len(files), folder, ", ".join(missing[:4]))
    size = sum((folder / f).stat().st_size for f in files if f not in missing)
    return {"folder": str(folder.relative_to(out)), "dtype": dtype, "files": files, "bytes": size,
            "missing": missing}


def _prune_maps(out: Path, keep: str | None) -> None:
    """Remove the maps of every configuration but ``keep`` (``results.parquet`` now holds its table; ``None``: a
    job without maps) from ``out/maps``, and the folder itself when nothing is left."""
    root = out / MAPS_DIR
    if not root.is_dir():
        return
    for folder in root.iterdir():
        if folder.name != keep:
            log.info("removing the maps of another configuration: %s", folder)
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
            else:
                folder.unlink(missing_ok=True)
    if not any(root.iterdir()):
        root.rmdir()


def _replace_results(table: pd.DataFrame, out: Path, chash: str, record: dict, summary: dict) -> Path:
    """Write ``table`` as ``out/results.parquet``: refused (:class:`ResultsWouldShrink`) when the file there holds
    more rows of this configuration (or of an unknown one); the record notes the new file's rows and SHA-256 as it
    replaces the old one (a signal cannot split the two), so that a job killed after this reuses the file."""
    path = out / RESULTS_FILE
    owner = record.get("results_config_hash")
    if path.exists() and owner in (chash, "unknown"):
        old = _n_rows(path)
        if old is not None and old > len(table):
            raise ResultsWouldShrink(
                f"{path} holds {old:,} rows of {'this configuration' if owner == chash else 'an unknown job'}; the "
                f"table assembled now has {len(table):,}: not replacing it with fewer rows (the new run's errors are "
                f"in job.json). To start over, remove {path} or use another folder")
    staged = write_table(table, out, name=_STAGED)
    try:
        sha = _sha256(staged)
        with deferred():
            os.replace(staged, path)
            summary.update(results=str(path), rows=len(table))
            record.update(summary, results_sha256=sha, results_config_hash=chash)
            _write_record(out, record)
    finally:
        staged.unlink(missing_ok=True)
    return path


def _n_tests(cfg: MainConfig, specs: list) -> int:
    """How many times the job goes through its samples (the progress bar's total is this x ``run.n_samples``)."""
    if not specs:
        return 0
    n = 1 if "invariance" in cfg.run.tests and cfg.transform else 0
    return n + (len(cfg.randomization) if "randomization" in cfg.run.tests else 0)


def _shown(path: Path) -> str:
    """``path`` relative to the working folder when it lies under it (as a person typed it), else absolute."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _views(cfg: MainConfig, out: Path, table: pd.DataFrame, results: dict[str, Any], meta: dict,
           path: Path, model: torch.nn.Module | None = None, info: dict | None = None,
           chash: str | None = None, feature_names: list[str] | None = None) -> dict:
    """Figures, the leaderboard and W&B: views of the table already on disk; a failure here loses no result."""
    from bench.core.scores import RANDOMIZATION_SCORE
    from bench.reporting.aggregate import invariance_verdicts
    from bench.reporting.console import console_summary
    from bench.reporting.figures import invariance_figures, randomization_figures
    from bench.reporting.leaderboard import Leaderboard, build_leaderboard
    from bench.reporting.render import write_leaderboard
    from bench.reporting.wandb_log import group_name, log_run

    inv = cfg.invariance
    figures: list[Path] = []
    notes: dict[str, str] = {}
    for key, res in results.items() if cfg.run.figures else ():
        try:
            if key == "invariance":
                figures += invariance_figures(res, invariance_verdicts(res.table, inv.tolerance, inv.ssim_threshold),
                                              out / "figures", title=cfg.model.name, samples=cfg.figures.samples,
                                              feature_names=feature_names, shifts=cfg.transform)
            else:
                label = key.split(":", 1)[1]
                figures += randomization_figures(res, out / "figures", label=label,
                                                 title=f"{cfg.model.name}: {label}", model=model,
                                                 samples=cfg.figures.samples, feature_names=feature_names)
        except Exception as err:  # noqa: BLE001  (a view: the table is on disk)
            log.warning("no figures for %s: %s: %s", key, type(err).__name__, err)
            notes[f"figure_error:{key}"] = f"{type(err).__name__}: {err}"
    board = None
    if len(table):
        present = set(table.loc[table.experiment == "model_randomization", "metric"])  # SSIM: images only
        candidates = [RANDOMIZATION_SCORE, "spearman_abs_support", *cfg.metric.names]
        metric = next((n for n in candidates if n in present), RANDOMIZATION_SCORE)
        try:
            board = build_leaderboard(table, tolerance=inv.tolerance, ssim_threshold=inv.ssim_threshold,
                                      randomization_metric=metric)
        except ValueError as err:
            log.warning("no leaderboard: %s", err)
        if board is not None:
            lb = Leaderboard(board=board, figures=list(figures), sources=[str(out)])
            try:  # the full tables beside the results (a view: a failure loses nothing)
                files = [_shown(p) for p in write_leaderboard(lb, out).values()]
            except OSError as err:
                log.warning("leaderboard files not written: %s", err)
                files = []
            log.info("\n%s", console_summary(lb, color=False, files=files))
    lg = cfg.logger
    error = log_run(mode=str(lg.mode.value if hasattr(lg.mode, "value") else lg.mode), out=out, config=as_dict(cfg),
                    table=table, leaderboard=board, figures=figures, project=lg.project, entity=lg.entity,
                    group=group_name(meta.get("group"), lg.group), name=meta.get("name") or cfg.run.name,
                    tags=lg.tags, info=info, config_hash=chash)
    if error:
        log.warning("%s (results are in %s)", error, path)
        notes["logger_error"] = error
    return notes
