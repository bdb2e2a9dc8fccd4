"""``salbench-report``: the W&B Report of a sweep, built and validated offline, written as JSON; ``--save`` and its
exit codes (the save itself is replaced: no network in tests); the report layer imports no torch."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli.report import main
from bench.reporting.render import _legend
from bench.reporting.wandb_report import build_report, legend_text, read_sweep, report_definition


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open an internet connection fails the test."""

    def refuse(self, address, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access to {address}")
        return real(self, address, *args, **kwargs)

    real = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)


def _blocks(definition: dict, kind: str) -> list[dict]:
    return [b for b in definition["spec"]["blocks"] if b["type"] == kind]


def _panels(definition: dict) -> list[dict]:
    return [p for g in _blocks(definition, "panel-grid") for p in g["metadata"]["panelBankSectionConfig"]["panels"]]


def _text(block: dict) -> str:
    return block.get("content") or "".join(c.get("text", "") for c in block.get("children", []))


def test_the_report_is_built_and_written_offline(make_sweep, tmp_path, no_network, capsys):
    sweep = make_sweep()
    out = tmp_path / "r" / "report.json"
    assert main([str(sweep), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    d = json.loads(out.read_text())
    assert d["displayName"] == "saliency-bench sweep: sweep" and d["project"]["name"] == "saliency-bench"
    assert "3 job(s), 1 failed" in d["description"]
    # the verdict legend, as the leaderboard writes it (the sweep's thresholds)
    info = read_sweep(sweep)
    legend = _legend(info.board.attrs["settings"])
    assert legend == legend_text(info.board) and "input-dominated" in legend
    assert any(_text(b) == legend for b in d["spec"]["blocks"])
    # the runs grid, filtered to the sweep's group; the logged leaderboards; the logged figures
    grids = _blocks(d, "panel-grid")
    assert len(grids) == 3
    for g in grids:
        (runset,) = g["metadata"]["runSets"]
        (flt,) = runset["filters"]["filters"]
        assert flt["key"] == {"section": "run", "name": "group"} and flt["value"] == "sweep" and flt["op"] == "="
    kinds = {p["viewType"]: p for p in _panels(d)}
    assert {"Run Comparer", "Bar Chart", "Weave", "Media Browser"} <= set(kinds)
    assert "summary_metrics.passed/total" in kinds["Bar Chart"]["config"]["metrics"]
    assert '"leaderboard"' in json.dumps(kinds["Weave"]["config"])
    assert kinds["Media Browser"]["config"]["mediaKeys"] == ["figures/cascade"]
    # the local snapshot of the sweep's leaderboard, with the failed job
    (snapshot,) = [_text(b) for b in _blocks(d, "markdown-block") if "## mlp" in _text(b)]
    assert "boom in broken" in snapshot and legend not in snapshot


def test_the_definition_validates_and_round_trips(make_sweep):
    group = "lr=0.1 'b'"  # W&B's filter parser rewrites "=" in a value: the filter keeps the name as it is
    info = read_sweep(make_sweep(failed=False, figure=False), project="p", entity="e", group=group)
    report = build_report(info)
    d = report_definition(report)
    assert d["project"] == {"name": "p", "entityName": "e"} and d["displayName"].endswith(f": {group}")
    grids = _blocks(d, "panel-grid")
    assert [g["metadata"]["runSets"][0]["filters"]["filters"][0]["value"] for g in grids] == [group] * len(grids)
    assert len({g["metadata"]["runSets"][0]["id"] for g in grids}) == len(grids)
    assert "Media Browser" not in {p["viewType"] for p in _panels(d)}  # no figure, no media panel
    from wandb_workspaces.reports.v2 import internal

    assert internal.ReportViewspec.model_validate(d).display_name == d["displayName"]


def test_project_entity_and_group_come_from_the_jobs_config(make_sweep):
    sweep = make_sweep(failed=False)
    (sweep / "0" / ".hydra" / "config.yaml").write_text(
        "logger:\n  mode: online\n  project: mine\n  entity: lab\n  group: paper\n")
    info = read_sweep(sweep)
    assert (info.project, info.entity, info.group) == ("mine", "lab", "paper")
    assert read_sweep(sweep, group="other", project="p2").group == "other"
    day = sweep.parent / "multirun" / "2026-01-02"
    dated = make_sweep(day, failed=False).rename(day / "10-11-12")  # Hydra's default layout
    assert read_sweep(dated).group == "2026-01-02_10-11-12"


def test_save_prints_the_url(make_sweep, tmp_path, monkeypatch, capsys):
    import bench.reporting.wandb_report as wrep

    monkeypatch.setattr(wrep, "save_report", lambda info, timeout: f"https://example.invalid/{info.group}")
    out = tmp_path / "report.json"
    assert main([str(make_sweep()), "--out", str(out), "--save", "--entity", "lab"]) == 0
    assert "report: https://example.invalid/sweep" in capsys.readouterr().out
    assert out.is_file()


def test_a_failed_save_exits_2_and_keeps_the_json(make_sweep, tmp_path, monkeypatch, capsys):
    from wandb_workspaces.reports.v2.interface import Report

    def offline(self, *args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(Report, "save", offline)
    out = tmp_path / "report.json"
    assert main([str(make_sweep()), "--out", str(out), "--save", "--entity", "lab"]) == 2
    err = capsys.readouterr().err
    assert "could not save the report" in err and "no network" in err and str(out) in err
    assert json.loads(out.read_text())["displayName"].endswith("sweep")


def test_a_save_that_hangs_times_out(make_sweep, tmp_path, monkeypatch, capsys):
    from wandb_workspaces.reports.v2.interface import Report

    monkeypatch.setattr(Report, "save", lambda self, *a, **k: time.sleep(5))
    start = time.perf_counter()
    assert main([str(make_sweep()), "--out", str(tmp_path / "r.json"), "--save", "--entity", "lab",
                 "--timeout", "0.3"]) == 2
    assert time.perf_counter() - start < 4
    assert "TimeoutError" in capsys.readouterr().err


def test_no_jobs_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "no job" in capsys.readouterr().err


def test_the_report_layer_imports_no_torch():
    code = ("import sys, bench.cli.report, bench.reporting.wandb_report, bench.reporting.wandb_log; "
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.stdout.strip() == "False"
