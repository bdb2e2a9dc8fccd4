"""The console format of the job's log (bench.cli.console_log, wired by conf/hydra/job_logging/salbench.yaml): no
line over 120 characters, warnings named, long words kept whole; the log file keeps the full format."""

from __future__ import annotations

import logging

import pytest

from bench.cli.console_log import WIDTH, ConsoleFormatter


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("bench.cli.job", level, __file__, 1, message, None, None)


def test_a_long_message_is_wrapped_at_spaces_to_the_width():
    words = " ".join(f"word{i:03d}" for i in range(80))  # 639 characters
    text = ConsoleFormatter().format(_record(words))
    lines = text.splitlines()
    assert len(lines) > 1 and max(map(len, lines)) <= WIDTH
    assert all(line.startswith("  ") for line in lines[1:])  # continuation lines indented
    assert text.replace("\n  ", " ") == words  # nothing lost, nothing reordered


def test_short_lines_and_multi_line_messages_stay_as_they_are():
    table = "paper_mlp (3 methods)\n# method  verdict\n1 gradient  pass"
    assert ConsoleFormatter().format(_record(table)) == table


def test_a_warning_is_named_and_a_long_path_is_kept_whole():
    path = "/" + "a" * 150 + "/results.parquet"
    text = ConsoleFormatter(width=60).format(_record(f"no figures for {path} here", logging.WARNING))
    assert text.startswith("WARNING: no figures for")
    assert path in text.splitlines()[1]  # on a line of its own, not cut


def test_the_job_config_uses_the_console_format():
    from hydra import compose, initialize_config_module

    from bench.cli.config import register_configs

    register_configs()
    with initialize_config_module(config_module="bench.conf", version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=True)
    logging_cfg = cfg.hydra.job_logging
    assert logging_cfg.handlers.console.formatter == "console"
    assert logging_cfg.formatters.console["()"] == "bench.cli.console_log.ConsoleFormatter"
    assert logging_cfg.handlers.file.formatter == "full"  # the job folder's log keeps time, logger and level


@pytest.mark.slow  # the smoke job in a subprocess (about 30 s)
def test_the_jobs_console_output_has_no_line_over_120_characters(salbench, tmp_path):
    res = salbench("+experiment=smoke", "logger=disabled", f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path,
                   timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = (res.stdout + res.stderr).replace("\r", "\n")  # a progress bar redraws its line
    lines = out.splitlines()
    assert max(map(len, lines)) <= 120, max(lines, key=len)
    assert any(line.startswith("1 gradient") for line in lines)  # the console summary is there
    log = (tmp_path / "job" / "salbench.log").read_text()
    assert "][bench.cli.job][INFO] - " in log  # the file keeps the full format
