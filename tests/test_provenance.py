"""Per-sample provenance in the results table (issue 25): each row records its sample's index in the test split, its
label and the class its maps explain; tables written before these columns existed still read (with -1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from bench.core.results import COLUMNS, MISSING, PROVENANCE, concat, provenance, read_table, score_table, write_table
from bench.core.settings import RunSettings, ScoreSettings


def test_the_contract_names_the_provenance_columns():
    assert PROVENANCE == ("data_index", "label", "target")
    assert COLUMNS[COLUMNS.index("sample"):COLUMNS.index("score")] == ["sample", *PROVENANCE]


def test_score_table_writes_each_samples_provenance_and_refuses_what_does_not_fit():
    scores = {"ssim": torch.tensor([0.1, 0.2, 0.3]), "spearman": torch.tensor([0.4, 0.5, 0.6])}
    where = provenance(torch.tensor([7, 8, 9, 1]), torch.tensor([2, 8, 4]))
    assert {k: v.tolist() for k, v in where.items()} == {"data_index": [0, 1, 2], "label": [7, 8, 9],
                                                         "target": [2, 8, 4]}
    const = dict(experiment="e", model="m", dataset="d", condition="c")
    t = score_table([({"method": "g"}, scores)], sample_offset=10, provenance=where, **const)
    assert t["sample"].tolist() == [10, 11, 12] * 2
    assert t["data_index"].tolist() == [0, 1, 2] * 2  # by position: the job adds the chunk's start to both
    assert t["label"].tolist() == [7, 8, 9] * 2 and t["target"].tolist() == [2, 8, 4] * 2
    assert {t[c].dtype for c in PROVENANCE} == {np.dtype("int64")}
    bare = score_table([({"method": "g"}, scores)], **const)
    assert (bare[list(PROVENANCE)] == MISSING).all().all()
    with pytest.raises(ValueError, match=r"unknown provenance column\(s\) \['index'\]; accepted: data_index, label"):
        score_table([({"method": "g"}, scores)], provenance={"index": [0, 1, 2]}, **const)
    with pytest.raises(ValueError, match="the provenance column 'label' holds 2 values for 3 samples"):
        score_table([({"method": "g"}, scores)], provenance={"label": [0, 1]}, **const)
    with pytest.raises(ValueError, match="3 explained samples but only 2 labels"):
        provenance([0, 1], [0, 1, 2])


def test_a_table_written_before_the_provenance_columns_reads_with_minus_one(tmp_path):
    t = score_table([({"method": "g"}, {"ssim": torch.tensor([0.5, 0.6])})], experiment="e", model="m",
                    dataset="d", condition="c")
    t.drop(columns=list(PROVENANCE)).to_parquet(tmp_path / "results.parquet", index=False)  # an old writer's file
    old = read_table(tmp_path / "results.parquet")
    assert list(old.columns) == COLUMNS and (old[list(PROVENANCE)] == MISSING).all().all()
    assert {old[c].dtype for c in PROVENANCE} == {np.dtype("int64")}
    pd.testing.assert_frame_equal(old.drop(columns=list(PROVENANCE)), t.drop(columns=list(PROVENANCE)))
    assert len(concat([old, t])) == 4


def _toy_cnn(seed: int = 0):
    from bench.core.models import create_model

    torch.manual_seed(seed)
    return create_model("small_cnn", (1, 12, 12), 3, channels=(4, 6), hidden=12).eval()


@pytest.mark.parametrize("experiment", ["invariance", "cascading", "labels"])
def test_every_row_records_its_samples_index_label_and_explained_class(toy_data, experiment):
    from bench.core.explain import predict
    from bench.experiments.invariance import input_invariance
    from bench.experiments.model_randomization import model_randomization
    from bench.twins.shifts import mean_shift

    data, model = toy_data(n_test=9), _toy_cnn()
    run, scoring = RunSettings(n_samples=7, batch_size=3), ScoreSettings(names=["spearman", "topk"])
    if experiment == "invariance":
        res = input_invariance(model, data, ["gradient"], {"m": mean_shift(data.input_shape)}, run=run,
                               scoring=scoring)
        explained = predict(model.double(), data.x_test[:7].double())
    else:
        extra = {"random_label_model": _toy_cnn(1), "retrained_model": _toy_cnn(2)} if experiment == "labels" else {}
        res = model_randomization(model, data, ["gradient"], experiment, run=run, scoring=scoring, **extra)
        explained = predict(model, data.x_test[:7])  # the trained model's class, at every stage and control
    t = res.table
    index = torch.as_tensor(t["data_index"].to_numpy().copy())
    assert len(t) and (t["data_index"] == t["sample"]).all()
    assert t["label"].tolist() == data.y_test[index].tolist()
    assert t["target"].tolist() == explained[index].tolist()
    assert t.groupby("sample")[list(PROVENANCE)].nunique().eq(1).all().all()  # every layer and metric agree


def test_provenance_changes_which_rows_pool_nowhere(full_table, tmp_path):
    """The leaderboard reads the same cells with and without the columns, and the same configuration found in two
    job folders still enters once (rows are deduplicated whole: the provenance of one sample is one value)."""
    from bench.reporting.leaderboard import build_leaderboard, load_leaderboard

    table = full_table()
    rich = table.assign(data_index=table["sample"], label=table["sample"] % 3, target=(table["sample"] + 1) % 3)
    for name in ("a", "b"):
        write_table(rich, tmp_path / name)
    board = build_leaderboard(table)
    pd.testing.assert_frame_equal(build_leaderboard(rich), board)
    pd.testing.assert_frame_equal(load_leaderboard([tmp_path], figures=False).board, board)


def test_an_old_table_and_a_new_run_of_the_same_configuration_pool_once(tmp_path):
    """A table written before the provenance columns (read with -1 there) and a new run of the same configuration in
    one sweep are the same scores: the leaderboard counts each once (before, whole-row duplicates only: both)."""
    from bench.core.results import MISSING, PROVENANCE
    from bench.reporting.sweep_files import distinct_rows

    new = pd.DataFrame({"experiment": ["input_invariance"] * 2, "model": "m", "dataset": "d", "method": "g",
                        "condition": "mean_shift", "mode": "-", "layer": "-", "metric": "ssim", "sample": [0, 1],
                        "data_index": [0, 1], "label": [3, 7], "target": [3, 1], "score": [0.9, 0.8], "seed": 0,
                        "config_hash": "h", "job": "b"})
    old = new.assign(**{c: MISSING for c in PROVENANCE}, job="a")
    both = distinct_rows(pd.concat([old, new], ignore_index=True))
    assert len(both) == 2 and "job" not in both.columns
    assert len(distinct_rows(pd.concat([old, new.assign(score=[0.9, 0.7])], ignore_index=True))) == 3
