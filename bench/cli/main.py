"""``salbench``: the Hydra entry point. The only module that reads a DictConfig.

It validates the composed config against the schema (:mod:`bench.cli.config`), converts it once to the typed settings
objects (``OmegaConf.to_object``) and hands them to :func:`bench.cli.job.run`, which records the job's status
(``job.json`` in the job's output folder) so that one failing job never hides the others; in a multi-run sweep a
failed job does not stop the sweep, and the sweep ends with a summary (:mod:`bench.cli.sweep`).

``salbench --dry-run [overrides]`` prints the predicted passes and time of each job (:mod:`bench.cli.dry_run`)
and runs nothing.

Scores (:func:`check_scores`), before any data or model is loaded, in a dry run too: the modules of
``metric.plugins`` are imported (the scores they register can then be named), and every name of ``metric.names`` and
of each randomization's ``scores`` must be registered; a module that cannot be imported or an unknown name is a
configuration error (exit 2) naming it (and the registered scores).

Exit status: 0 every job ok; 1 a job failed (a single run whose methods failed, or any failed job of a sweep:
its ``job.json`` says why); 2 bad input or a crash before results (a config error, a data set that cannot be
loaded, a model below the quality bar, ...: the message names it), or a job folder in use by another run (its lock,
:mod:`bench.cli.lock`: refused at once, before any work; a sweep stops there); 130 / 143 stopped by SIGINT / SIGTERM
(the running job's ``job.json`` says ``interrupted``, its finished chunks are kept, a sweep writes its summary:
run the same command again to resume).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bench._io import DiskFullError
from bench.cli.config import MainConfig, register_configs
from bench.cli.lock import Interrupted, LockHeld, signals_raise

log = logging.getLogger(__name__)


def _output_dir() -> Path:
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # called without Hydra (tests, notebooks)
        return Path.cwd()


def validate(cfg: DictConfig) -> DictConfig:
    """Merge ``cfg`` into the schema: an unknown key or a wrong type raises OmegaConf's error naming it."""
    from bench.cli.config import MainConfig

    # a plain copy: merging the composed config itself would carry the keys that `+` opened up
    plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    return OmegaConf.merge(OmegaConf.structured(MainConfig), plain)


def check_scores(config: MainConfig) -> dict[str, str | None]:
    """Import the modules of ``config.metric.plugins`` (:func:`bench.core.scores.load_plugins`), then check that every
    score the job computes is registered: ``metric.names`` and each randomization's ``scores``. Returns the plugins'
    source hashes (``{module: hash}``). Raises ``ValueError`` (a :class:`~bench.core.scores.PluginError` for a module)
    naming the key and the bad value. Loads no data and no model."""
    from bench.core.scores import check_names, load_plugins

    sources = load_plugins(config.metric.plugins)
    check_names(config.metric.names, "metric.names")
    for label, spec in config.randomization.items():
        check_names(spec.scores, f"randomization.{label}.scores")
    return sources


@hydra.main(version_base="1.3", config_path="pkg://bench.conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    from bench.cli.job import run

    _STATE["job_started"] = True
    # before anything runs: `+key=` overrides bypass Hydra's own struct check
    try:
        config = OmegaConf.to_object(validate(cfg))
    except OmegaConfBaseException as err:
        sys.stderr.write(f"Error in the configuration: {err}\n(`salbench --cfg job` shows the accepted keys)\n")
        sys.exit(2)
    try:  # before any data or model: an unknown score would otherwise fail after the model is trained
        check_scores(config)
    except ValueError as err:
        sys.stderr.write(f"Error in the configuration: {err}\n")
        sys.exit(2)
    if _STATE["dry_run"]:
        from bench.cli.dry_run import report

        report(config)
        return
    try:
        record = run(config, _output_dir(), meta=_wandb_meta(config.run.name))
    except LockHeld as err:  # another run writes this folder: touch nothing, stop (a sweep too)
        sys.stderr.write(f"Refused: {err}{' The sweep stops here.' if _is_multirun() else ''}\n")
        sys.exit(2)
    except DiskFullError as err:  # not even the job's record could be written: say where, no traceback
        sys.stderr.write(f"Stopped: {err.strerror}; the job's finished chunks are kept in {_output_dir()}\n")
        sys.exit(2)
    if record["status"] != "ok":
        log.error("job %s: %s (record: %s)", record["status"],
                  record.get("error") or "; ".join(record.get("errors", {})), _output_dir() / "job.json")
        if not _is_multirun():
            sys.exit(2 if record.get("error") else 1)


def _wandb_meta(run_name: str) -> dict:
    """W&B run name = the job's overrides (or ``run.name``); group = the sweep's name (the sweep folder's name, not
    its local path; :func:`bench.reporting.wandb_log.group_name`)."""
    from bench.reporting.wandb_log import group_name

    try:
        hc = HydraConfig.get()
    except ValueError:
        return {}
    name = hc.job.override_dirname or run_name
    group = hc.sweep.dir if hc.mode.name == "MULTIRUN" else hc.run.dir
    return {"name": str(name), "group": group_name(group)}


def _is_multirun() -> bool:
    try:
        return HydraConfig.get().mode.name == "MULTIRUN"
    except ValueError:
        return False


#: whether the task function was entered: a SystemExit before it is Hydra's (composition, override syntax)
_STATE = {"job_started": False, "dry_run": False}


def main() -> None:
    """Run ``salbench``; the exit status is documented in the module docstring (and the README)."""
    from bench.cli import sweep

    register_configs()
    sweep.forget_summary()  # this run's sweep decides its exit status, never an earlier one in this process
    _STATE["job_started"] = False
    _STATE["dry_run"] = "--dry-run" in sys.argv  # predict the cost (bench.cli.dry_run), run nothing
    if _STATE["dry_run"]:
        sys.argv.remove("--dry-run")
        sys.argv.append("hydra.output_subdir=null")
    try:
        with signals_raise():  # SIGINT/SIGTERM: the job marks itself interrupted and releases its lock
            _hydra_main()
    except SystemExit as exit_:
        if exit_.code == 1 and not _STATE["job_started"]:
            sys.exit(2)  # Hydra could not compose the config: bad input
        raise
    except Interrupted as sig:  # Hydra lets a KeyboardInterrupt through: one line, no traceback
        stopped = sweep.interrupted(sig.name)  # a multi-run: its summary (the job that ran counts as interrupted)
        if not sig.logged and stopped is None:
            log.warning("interrupted by %s%s", sig.name, "" if _STATE["job_started"] else " (before any job ran)")
        sys.exit(sig.exit_status)
    summary = sweep.last_summary()
    if summary.get("failed") or summary.get("unreadable") or summary.get("interrupted"):
        sys.exit(1)


if __name__ == "__main__":
    main()
