"""Bad settings and damaged result files give clear errors that name the value and what is accepted."""

from __future__ import annotations

import pandas as pd
import pytest

from bench.cli.check import main as check_main
from bench.core.results import read_table
from bench.core.settings import RunSettings, check_run


@pytest.mark.parametrize("field,value,accepted", [
    ("n_samples", -3, "1..1000"), ("n_samples", 0, "1..1000"), ("n_samples", 5000, "1..1000"),
    ("batch_size", 0, ">= 1"), ("seeds", 0, ">= 1"), ("fit_samples", 0, ">= 1"), ("keep_maps", -1, ">= 0"),
])
def test_out_of_range_settings_are_named(field, value, accepted):
    with pytest.raises(ValueError, match=rf"run\.{field}={value} is out of range; accepted: {accepted}"):
        check_run(RunSettings(**{field: value}), n_test=1000)
    check_run(RunSettings(), n_test=1000)  # the defaults are fine


def test_experiments_check_their_settings_before_any_work(toy_data):
    from bench.core.models import create_model
    from bench.experiments.invariance import input_invariance
    from bench.experiments.model_randomization import model_randomization
    from bench.twins.shifts import mean_shift

    data = toy_data(n_test=16, size=12)
    model = create_model("small_cnn", (1, 12, 12), 3, channels=(4, 6), hidden=12).eval()
    with pytest.raises(ValueError, match=r"run\.n_samples=17 is out of range; accepted: 1\.\.16"):
        input_invariance(model, data, ["gradient"], {"m": mean_shift((1, 12, 12))}, run=RunSettings(n_samples=17))
    with pytest.raises(ValueError, match=r"run\.batch_size=0"):
        model_randomization(model, data, ["gradient"], "cascading", run=RunSettings(n_samples=4, batch_size=0))


def test_damaged_results_are_named_and_the_check_exits_2(tmp_path, capsys):
    bad = tmp_path / "job" / "results.parquet"
    bad.parent.mkdir()
    pd.DataFrame({"model": ["m"], "score": [0.5]}).to_parquet(bad)
    with pytest.raises(ValueError, match=r"lacks the results columns \['experiment'"):
        read_table(bad)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="is not a readable results table"):
        read_table(tmp_path / "junk.parquet")
    baseline = tmp_path / "b.csv"
    baseline.write_text("model,method\nm,x\n")
    assert check_main([str(tmp_path / "job"), "--baseline", str(baseline)]) == 2  # a crash is not a regression
    assert "lacks the results columns" in capsys.readouterr().err
