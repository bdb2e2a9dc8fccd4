"""``salbench --dry-run +experiment=<preset>`` works for every preset in conf/experiment/: the command line's own path
(Hydra composition, the schema, the score check, :func:`bench.cli.dry_run.report`) run in this process, one preset
after another, and each estimate holds positive passes. Presets that need the optional extras are skipped when they
are missing (``pip install '.[all]'``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.cli import dry_run
from bench.cli import main as cli
from bench.core.data import load_dataset

PRESETS = sorted((Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*.yaml"))
#: the modules a preset's methods need beyond the core dependencies
EXTRAS = {"zoo": ("captum", "pytorch_grad_cam")}
_DATA: dict[str, object] = {}


def _load_once(name, **kwargs):  # noqa: ANN001, ANN202
    """:func:`bench.core.data.load_dataset`, each set read once for all presets (the bundled digits parse in
    seconds, and four presets read them)."""
    key = repr((name, sorted(kwargs.items())))
    if key not in _DATA:
        _DATA[key] = load_dataset(name, **kwargs)
    return _DATA[key]


def test_every_preset_is_listed():
    assert {"smoke", "tokens", "zoo"} <= {p.stem for p in PRESETS}  # the folder was found and globbed


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_the_dry_run_of_every_preset_predicts_positive_passes(preset, tmp_path, monkeypatch, capsys):
    for module in EXTRAS.get(preset.stem, ()):
        pytest.importorskip(module)
    estimates: list[dict] = []

    def report(cfg):  # noqa: ANN001, ANN202
        estimates.append(real(cfg))
        return estimates[-1]

    real = dry_run.report
    monkeypatch.setattr(dry_run, "report", report)
    monkeypatch.setattr("bench.core.data.load_dataset", _load_once)
    monkeypatch.setattr("bench.cli.job.run", lambda *a, **k: pytest.fail("the dry run ran the job"))
    monkeypatch.setattr(sys, "argv", ["salbench", "--dry-run", f"+experiment={preset.stem}", "logger=disabled",
                                      "hydra/job_logging=disabled", "hydra/hydra_logging=disabled",
                                      f"hydra.run.dir={tmp_path / 'job'}"])
    try:
        cli.main()
    except SystemExit as exit_:
        pytest.fail(f"salbench --dry-run +experiment={preset.stem} exited {exit_.code}: {capsys.readouterr().err}")
    assert len(estimates) == 1, "the dry run did not reach its report"
    (est,) = estimates
    assert est["passes"] > 0 and est["seconds_per_pass"] > 0 and est["n_samples"] > 0
    assert est["tests"] and all(sum(per.values()) > 0 for per in est["tests"].values()), est["tests"]
    assert not (tmp_path / "job" / "job.json").exists()  # nothing was run
