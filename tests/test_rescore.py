"""Maps kept and scored again (issue 25): ``run.save_maps=true`` writes every map a job computes per chunk, and
``salbench-rescore`` computes a score from them, without any model, that equals the job's. No training: zero-epoch
models with the quality guard off (as tests/test_stream.py)."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli import job
from bench.cli.config import MainConfig
from bench.cli.rescore import main, rows_from_maps
from bench.cli.stream import PARTS_DIR
from bench.core.explain import MethodSpec
from bench.core.maps import MAPS_DIR, MapSink, read_maps
from bench.core.results import RESULTS_FILE, read_table, write_table
from bench.core.settings import RunSettings, ScoreSettings, check_run
from bench.experiments.model_randomization import RandomizationSpec
from bench.twins.shifts import ShiftSpec

KEY = ["experiment", "method", "condition", "layer", "metric", "sample", "seed"]
# 7 samples in batches of 2, chunks of 4 (whole batches): chunks 0-3 and 4-6, and sample 6 alone in its batch (its
# control:other score is NaN: the saved mask must say so)
N, CHUNKS = 7, [0, 4]


def _config(tmp, dtype: str = "float32", save: bool = True) -> MainConfig:
    cfg = MainConfig()
    cfg.model.kwargs = {"hidden": 8}
    cfg.train.epochs, cfg.train.min_test_acc, cfg.train.cache_dir = 0, 0.0, str(tmp / "ckpt")
    cfg.method = {"gradient": MethodSpec(name="gradient"), "smoothgrad": MethodSpec(name="smoothgrad",
                                                                                    params={"n": 2})}
    cfg.transform = {"mean_shift": ShiftSpec(kind="mean_shift")}
    cfg.randomization = {"top_down": RandomizationSpec(mode="cascading")}  # a config name that is not the mode
    cfg.run.n_samples, cfg.run.chunk_size, cfg.run.batch_size, cfg.run.figures = N, 3, 2, False
    cfg.run.save_maps, cfg.run.maps_dtype = save, dtype
    cfg.logger.mode = "disabled"
    return cfg


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """``jobs(name)``: a finished job folder (made once per module; copy it before changing it): ``float32``, and
    ``float16`` run into a copy of the ``float32`` folder (another configuration: its maps replace the others)."""
    root = tmp_path_factory.mktemp("rescore")
    made: dict[str, tuple] = {}

    def get(name: str):
        if name not in made:
            out = root / name
            if name == "float16":
                shutil.copytree(get("float32")[0], out)
            record = job.run(_config(root, name), out)
            assert record["status"] == "ok", record.get("error")
            made[name] = (out, record)
        return made[name]

    return get


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(KEY).reset_index(drop=True)


def _record(folder) -> dict:
    return json.loads((folder / job.JOB_FILE).read_text())


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------ what a job keeps


def test_every_map_of_the_job_is_kept_per_chunk_with_its_keys(jobs, mnist):
    out, record = jobs("float32")
    folder = out / MAPS_DIR / record["config_hash"]
    names = [f"{t}-{c}-{s:07d}.safetensors" for t, c in (("invariance", "all"), ("randomization", "top_down"))
             for s in CHUNKS]
    assert record["maps"]["folder"] == f"{MAPS_DIR}/{record['config_hash']}" and record["maps"]["missing"] == []
    assert sorted(record["maps"]["files"]) == sorted(names) == sorted(p.name for p in folder.iterdir())
    assert record["maps"]["bytes"] == sum(p.stat().st_size for p in folder.iterdir())
    rows = read_table(out / RESULTS_FILE)
    assert sorted(set(rows["sample"])) == list(range(N)) and (rows["data_index"] == rows["sample"]).all()
    assert rows["label"].tolist() == mnist.y_test[torch.as_tensor(rows["sample"].to_numpy().copy())].tolist()
    for name in names:
        saved = read_maps(folder / name)
        start, stop = saved.meta["start"], saved.meta["stop"]
        prov = saved.provenance()
        assert prov["sample"].tolist() == list(range(start, stop)) == prov["data_index"].tolist()
        assert prov["label"].tolist() == mnist.y_test[start:stop].tolist()
        mine = rows[(rows.experiment == saved.meta["experiment"]) & rows["sample"].between(start, stop - 1)]
        targets = mine.groupby("sample")["target"].unique()
        assert [list(t) for t in targets] == [[t] for t in prov["target"].tolist()]  # one target per sample
        for info in saved.info.values():
            assert set(info) >= {"experiment", "method", "condition", "layer", "seed", "side"}
        sides = {i["side"] for i in saved.info.values()}
        if saved.meta["experiment"] == "input_invariance":
            assert sides == {"f1", "f2"}
            assert sorted((i["method"], i["condition"]) for i in saved.info.values() if i["side"] == "f2") == \
                [("gradient", "mean_shift"), ("smoothgrad", "mean_shift")]
        else:
            assert sides == {"reference", "repeat", "stage", "null"}
            assert {i["condition"] for i in saved.info.values()} == {"top_down"}
            stages = [s for s in dict.fromkeys(mine.layer) if not s.startswith("control:")]
            for method in ("gradient", "smoothgrad", "control:gradient"):  # the reference method's maps too
                kept = [i["layer"] for i in saved.info.values() if i["method"] == method and i["side"] == "stage"]
                assert kept == stages
        for pair in saved.pairs:  # every scored pair names rows of the table (the reference's: in every method's)
            assert saved.map(pair["first"]).shape == saved.map(pair["second"]).shape == (stop - start, 1, 28, 28)
            keys = pair["keys"]
            if keys["method"] == "control:gradient":
                assert f"control:gradient/{keys['layer']}" in set(mine.layer)
            else:
                assert keys["method"] in set(mine.method) and keys.get("layer", "-") in set(mine.layer)


def test_maps_are_off_by_default_and_belong_to_the_table(jobs, tmp_path):
    assert RunSettings().save_maps is False and MainConfig().run.save_maps is False
    out, record = jobs("float16")  # run into a copy of the float32 job's folder: another configuration
    assert [p.name for p in (out / MAPS_DIR).iterdir()] == [record["config_hash"]]
    # a default job (no maps) that replaces the table removes the maps of the table it replaced
    folder = _copy(out, tmp_path / "job")
    cfg = _config(tmp_path, save=False)
    cfg.run.tests, cfg.run.n_samples = ["invariance"], 2
    assert job.run(cfg, folder)["status"] == "ok"
    assert not (folder / MAPS_DIR).exists() and "maps" not in _record(folder)


# ------------------------------------------------------------------------------------ rescoring the job


@pytest.mark.parametrize("metric", ["ssim", "spearman_abs"])
def test_rescore_reproduces_the_jobs_scores_exactly_from_float32_maps(jobs, tmp_path, metric, capsys):
    src, _ = jobs("float32")
    out = _copy(src, tmp_path / "job")
    original = read_table(out / RESULTS_FILE)
    write_table(original[original.metric != metric], out)  # the metric's rows deleted
    assert main([str(out), "--metric", metric]) == 0, capsys.readouterr().err
    assert f"{metric}: " in capsys.readouterr().out
    now = read_table(out / RESULTS_FILE)
    a, b = _sorted(original[original.metric == metric]), _sorted(now[now.metric == metric])
    pd.testing.assert_frame_equal(a.drop(columns="score"), b.drop(columns="score"))  # config hash, provenance too
    rand = (a.experiment == "model_randomization").to_numpy()
    assert rand.sum() > 100 and a.score[~rand].notna().all()
    assert np.array_equal(a.score[rand], b.score[rand], equal_nan=True)  # float32 maps: the job's own bits
    assert b.score[rand].isna().sum() == a.score[rand].isna().sum() > 0  # sample 6's control:other (masked)
    # the invariance maps are computed in float64 and stored as float32
    assert np.allclose(a.score[~rand], b.score[~rand], rtol=0, atol=1e-12)
    # the job's record follows the new table: rows, SHA-256, and the job counts as done
    record = _record(out)
    assert record["rows"] == len(now) and record["results_sha256"] == _sha(out / RESULTS_FILE)
    assert record["rescored"][-1]["metric"] == metric and record["rescored"][-1]["rows"] == len(b)
    assert job.is_done(out, record["config_hash"])


def test_float16_maps_rescore_within_the_documented_bound(jobs, tmp_path):
    src, record = jobs("float16")
    assert record["maps"]["dtype"] == "float16"
    assert record["maps"]["bytes"] < 0.65 * jobs("float32")[1]["maps"]["bytes"]
    out = _copy(src, tmp_path / "job")
    original = read_table(out / RESULTS_FILE)
    for metric, bound in (("ssim", 1e-3), ("spearman", 1e-3), ("hog", 2e-2)):
        assert main([str(out), "--metric", metric, "--force"]) == 0
        now = read_table(out / RESULTS_FILE)
        a, b = _sorted(original[original.metric == metric]), _sorted(now[now.metric == metric])
        pd.testing.assert_frame_equal(a.drop(columns="score"), b.drop(columns="score"))
        diff = (a.score - b.score).abs()
        assert diff.max() <= bound and diff.max() > 0, (metric, diff.max())


def test_a_new_score_is_appended_with_the_rows_config_hashes(jobs, tmp_path):
    src, _ = jobs("float32")
    out = _copy(src, tmp_path / "job")
    before = read_table(out / RESULTS_FILE)
    assert "pearson" not in set(before.metric)
    assert main([str(out), "--metric", "pearson"]) == 0
    after = read_table(out / RESULTS_FILE)
    new = after[after.metric == "pearson"]
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before)  # the old rows are untouched
    ref = before[before.metric == "spearman"]  # scored on every pair, as pearson now is
    assert len(new) == len(ref)
    hashes = before.groupby(["experiment", "method", "condition"])["config_hash"].first()
    keys = zip(new.experiment, new.method, new.condition, strict=True)
    assert list(new.config_hash) == [hashes[k] for k in keys]


def test_refusals_name_the_problem_and_touch_nothing(jobs, tmp_path, capsys):
    src, _ = jobs("float32")
    out = _copy(src, tmp_path / "job")
    sha = _sha(out / RESULTS_FILE)

    def refused(*args: str) -> str:
        assert main([*args]) == 2
        assert _sha(out / RESULTS_FILE) == sha
        return capsys.readouterr().err

    assert "is not a folder" in refused(str(tmp_path / "nothing"), "--metric", "ssim")
    err = refused(str(out), "--metric", "nosuch")
    assert "unknown score 'nosuch'" in err and "registered: ssim, " in err
    err = refused(str(out), "--metric", "ssim")
    assert "'ssim' is already in" in err and "--force replaces them" in err
    from bench.cli.lock import JobLock

    with JobLock(out):  # a running job holds the folder
        assert "lock" in refused(str(out), "--metric", "pearson").lower()
    import bench.cli.rescore as rescore

    with pytest.MonkeyPatch.context() as mp:  # maps that give fewer rows than the table holds: never replaced
        real = rescore.rows_from_maps
        mp.setattr(rescore, "rows_from_maps", lambda path, metric: real(path, metric).iloc[1:])
        assert "not replacing them with fewer" in refused(str(out), "--metric", "ssim", "--force")
    maps = out / MAPS_DIR / _record(out)["config_hash"]
    first = sorted(maps.iterdir())[0]
    first.rename(tmp_path / first.name)
    err = refused(str(out), "--metric", "pearson")
    assert "1 of the 4 maps files" in err and first.name in err
    shutil.rmtree(out / MAPS_DIR)
    assert "rerun the job with run.save_maps=true" in refused(str(out), "--metric", "pearson")


def test_force_replaces_a_scores_rows_with_equal_ones(jobs, tmp_path):
    src, _ = jobs("float32")
    out = _copy(src, tmp_path / "job")
    before = read_table(out / RESULTS_FILE)
    assert main([str(out), "--metric", "spearman", "--force"]) == 0
    after = read_table(out / RESULTS_FILE)
    assert len(after) == len(before)
    pd.testing.assert_frame_equal(_sorted(after), _sorted(before), check_exact=True)


def test_a_score_of_ones_own_is_rescored_through_a_plugin(jobs, tmp_path, monkeypatch):
    src, _ = jobs("float32")
    out = _copy(src, tmp_path / "job")
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "rescore_plugin_scores.py").write_text(
        "from bench.core.scores import Score, register_score\n"
        "register_score(Score('mean_abs_gap', lambda a, b: (a.maps - b.maps).abs().flatten(1).mean(1), 'raw',\n"
        "                     higher_is_similar=False))\n")
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    assert main([str(out), "--metric", "mean_abs_gap", "--plugin", "rescore_plugin_scores"]) == 0
    rows = read_table(out / RESULTS_FILE)
    gap = rows[(rows.metric == "mean_abs_gap") & (rows.layer == "control:repeat")]
    assert len(gap) and (gap.score == 0).all()  # the repeat's maps are the reference's (gradient: deterministic)


# ------------------------------------------------------------------------------ resuming a job with maps


def test_a_resumed_job_neither_loses_nor_duplicates_maps(jobs, tmp_path, monkeypatch):
    """A chunk counts as done only once its maps are on disk: a write that fails (a full disk) leaves the chunk to
    be computed again, and the chunks done before are not."""
    import errno

    from bench._io import DiskFullError

    real = MapSink.save
    calls: list[str] = []

    def full_on_second_chunk(self, path, **kwargs):
        calls.append(path.name)
        if len(calls) == 2:
            raise DiskFullError(errno.ENOSPC, f"no space left to write {path}")
        return real(self, path, **kwargs)

    monkeypatch.setattr(MapSink, "save", full_on_second_chunk)
    record = job.run(_config(tmp_path), tmp_path / "job")
    assert record["status"] == "failed" and record["error"].startswith("DiskFullError: [Errno 28] no space")
    folder = tmp_path / "job" / MAPS_DIR / record["config_hash"]
    first = "invariance-all-0000000.safetensors"
    assert [p.name for p in folder.iterdir()] == [first]
    assert [p.name for p in (tmp_path / "job" / PARTS_DIR).glob("*.parquet")] == ["invariance-all-0000000.parquet"]
    written = (folder / first).stat().st_mtime_ns
    monkeypatch.setattr(MapSink, "save", real)
    assert job.run(_config(tmp_path), tmp_path / "job")["status"] == "ok"
    assert (folder / first).stat().st_mtime_ns == written  # its chunk was not computed again
    ref_out, ref_record = jobs("float32")
    ref_folder = ref_out / MAPS_DIR / ref_record["config_hash"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in ref_folder.iterdir())
    for path in folder.iterdir():  # the same maps as a job that ran straight through
        mine, ref = read_maps(path), read_maps(ref_folder / path.name)
        assert mine.pairs == ref.pairs and mine.tensors.keys() == ref.tensors.keys()
        assert all(torch.equal(mine.tensors[k], ref.tensors[k]) for k in ref.tensors)


# ------------------------------------------------------------------- the experiments and the format (no job)


def _toy_cnn(seed: int = 0):
    from bench.core.models import create_model

    torch.manual_seed(seed)
    return create_model("small_cnn", (1, 12, 12), 3, channels=(4, 6), hidden=12).eval()


@pytest.mark.parametrize("case", ["invariance", "cascading_two_seeds", "labels", "smooth"])
def test_the_experiments_maps_rescore_to_their_own_rows(toy_data, tmp_path, case):
    from bench.experiments.invariance import input_invariance
    from bench.experiments.model_randomization import model_randomization
    from bench.twins.shifts import checkerboard

    data, model = toy_data(), _toy_cnn()
    methods = {"gradient": {"name": "gradient"}, "gbp": {"name": "guided_backprop"}}
    run = RunSettings(n_samples=5, batch_size=2, seeds=2 if case == "cascading_two_seeds" else 1)
    scoring = ScoreSettings(names=["ssim", "spearman", "topk"])
    sink = MapSink("float64")
    if case == "invariance":
        res = input_invariance(model, data, methods, {"cb": checkerboard(data.input_shape)}, run=run,
                               scoring=scoring, sink=sink)
    else:
        spec = RandomizationSpec(mode="labels" if case == "labels" else "cascading",
                                 smooth_samples=2 if case == "smooth" else 0)
        extra = {"random_label_model": _toy_cnn(1), "retrained_model": _toy_cnn(2)} if case == "labels" else {}
        res = model_randomization(model, data, methods, spec, run=run, scoring=scoring, sink=sink, **extra)
    assert not res.errors
    path = sink.save(tmp_path / "maps.safetensors")
    for metric in sorted(set(res.table.metric)):
        mine = res.table[res.table.metric == metric]
        again = rows_from_maps(path, metric)
        pd.testing.assert_frame_equal(_sorted(again), _sorted(mine), check_exact=True)
    if case == "labels":
        assert {i["side"] for i in read_maps(path).info.values()} == {"reference", "repeat", "trained", "stage",
                                                                        "null"}


def test_float64_maps_stored_as_float32_rescore_close_and_float32_maps_lose_nothing(toy_data, tmp_path):
    from bench.experiments.invariance import input_invariance
    from bench.twins.shifts import checkerboard

    data, model = toy_data(), _toy_cnn()
    sink = MapSink("float32")
    res = input_invariance(model, data, ["gradient_x_input"], {"cb": checkerboard(data.input_shape)},
                           run=RunSettings(n_samples=4), scoring=ScoreSettings(names=["spearman"]), sink=sink)
    path = sink.save(tmp_path / "maps.safetensors")
    saved = read_maps(path)
    assert {t.dtype for k, t in saved.tensors.items() if k.startswith("map/")} == {torch.float32}
    assert {saved.map(n).dtype for n in saved.info} == {torch.float64}  # decoded to the dtype it was computed in
    again = rows_from_maps(path, "max_rel_diff")
    mine = res.table[res.table.metric == "max_rel_diff"]
    assert np.allclose(_sorted(again).score, _sorted(mine).score, rtol=1e-6, atol=1e-7)
    # float32 maps asked for as float64 are stored as float32 (nothing to gain) and read back unchanged
    wide = MapSink("float64")
    wide.describe("x", spatial_dims=2, provenance={"data_index": [0], "label": [0], "target": [0]})
    maps = torch.randn(1, 1, 4, 4)
    name = wide.add(maps, method="m", side="stage")
    assert wide.tensors[name].dtype == torch.float32
    wide.save(tmp_path / "wide.safetensors")
    back = read_maps(tmp_path / "wide.safetensors").map(name)
    assert back.dtype == torch.float32 and torch.equal(back, maps)


def test_float16_keeps_tiny_and_huge_maps_to_half_precision(tmp_path):
    sink = MapSink("float16")
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 2, 5, 5, generator=g, dtype=torch.float64)
    maps[0] *= 1e-9  # below float16's smallest normal number (6e-5) unless scaled
    maps[1] *= 1e9  # beyond float16's largest (65504)
    sink.describe("x", spatial_dims=2, provenance={"data_index": [0, 1, 2], "label": [0, 1, 2], "target": [2, 1, 0]})
    name = sink.add(maps, method="m", side="stage")
    scale = sink.tensors[sink.info[name]["scale"]]
    assert torch.equal(torch.log2(scale), torch.log2(scale).round())  # powers of two: exact to undo
    sink.save(tmp_path / "half.safetensors")
    back = read_maps(tmp_path / "half.safetensors").map(name)
    assert back.dtype == torch.float64 and torch.isfinite(back).all()
    peak = maps.flatten(1).abs().amax(1).reshape(-1, 1, 1, 1)
    assert ((back - maps).abs() <= 2.0**-11 * peak).all()  # half precision relative to each sample's peak


def test_the_format_refuses_what_it_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match=r"run.maps_dtype='bfloat16' is not accepted; accepted: float16, float32, "
                                         "float64"):
        MapSink("bfloat16")
    sink = MapSink()
    with pytest.raises(ValueError, match="describe\\(\\) was not called"):
        sink.save(tmp_path / "x.safetensors")
    sink.describe("x", spatial_dims=2, provenance={"data_index": [0], "label": [0], "target": [0]})
    with pytest.raises(ValueError, match="unknown map side 'left'; accepted: f1, f2, reference"):
        sink.add(torch.zeros(1, 1, 2, 2), method="m", side="left")
    with pytest.raises(ValueError, match="2 maps for 1 explained samples"):
        sink.add(torch.zeros(2, 1, 2, 2), method="m", side="f1")
    with pytest.raises(ValueError, match="no map named 'map/f1/m'"):
        sink.pair({"method": "m"}, "map/f1/m", "map/f1/m")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors is not a readable maps file"):
        read_maps(tmp_path / "bad.safetensors")


def test_check_run_validates_the_maps_settings(tmp_path):
    check_run(RunSettings(save_maps=True, maps_dtype="float32"), 100)
    with pytest.raises(ValueError, match=r"run.maps_dtype='float8' is not accepted; accepted: float16, float32, "
                                         "float64"):
        check_run(RunSettings(maps_dtype="float8"), 100)
    with pytest.raises(ValueError, match=r"run.save_maps='yes' is not accepted; accepted: true or false"):
        check_run(RunSettings(save_maps="yes"), 100)
    # the maps settings change no score: the rows' config hashes do not see them
    cfg = _config(tmp_path)
    other = copy.deepcopy(cfg)
    other.run.save_maps, other.run.maps_dtype = False, "float16"
    assert job.row_config(cfg, "input_invariance", "gradient", "mean_shift") == \
        job.row_config(other, "input_invariance", "gradient", "mean_shift")
