"""The HTML report, parsed: one self-contained page with a metadata header, sortable tables, and each of the jobs'
own figures once (never W&B's copies), grouped by model and test, captioned in words."""

from __future__ import annotations

import importlib.metadata
import io
import json
import re
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from bench.core.results import write_table
from bench.reporting import leaderboard as lbm
from bench.reporting import render, sweep_files


def _png(seed: int, size: tuple[int, int] = (60, 40)) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _job(sweep: Path, name: str, table, *, model: str, overrides: list[str], figures: dict[str, bytes],
         acc: float = 0.91) -> Path:
    job = sweep / name
    write_table(table.assign(config_hash=f"h{name}"), job)
    record = {"status": "ok", "model": model, "dataset": "mnist", "test_acc": acc, "train_acc": 0.95,
              "row_configs": {f"h{name}": {"model.name": model, "run.n_samples": 8, "run.seeds": 1}}}
    (job / "job.json").write_text(json.dumps(record))
    (job / ".hydra").mkdir()
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    for rel, data in figures.items():
        (job / rel).parent.mkdir(parents=True, exist_ok=True)
        (job / rel).write_bytes(data)
    return job


@pytest.fixture
def report_sweep(tmp_path, invariance_table, randomization_table):
    """Three jobs as a sweep writes them: figures in ``figures/``, W&B's copies under ``wandb/``, a stray PNG
    elsewhere and a figure whose bytes repeat another job's."""
    inv, rand = invariance_table(), randomization_table()
    a, b, c, d, stray = (_png(i) for i in range(5))
    sweep = tmp_path / "sweep"
    media = "wandb/offline-run-1/files/media/images/figures"
    _job(sweep, "0", inv[inv.model == "mlp"], model="mlp", overrides=["+experiment=smoke", "method=inv"],
         figures={"figures/invariance_mean_shift.png": a, "figures/invariance_checkerboard.png": b,
                  f"{media}/invariance_mean_shift_2_0a1b.png": a, "stray.png": stray})
    _job(sweep, "1", rand[rand.model == "mlp"], model="mlp", overrides=["+experiment=smoke", "method=rand"],
         figures={"figures/randomization_cascading_grid.png": c, "figures/randomization_cascading_curves.png": d,
                  f"{media}/randomization_cascading_grid_3_9f8e.png": c})
    _job(sweep, "2", inv[inv.model == "cnn"], model="cnn", overrides=["+experiment=smoke", "model=cnn"],
         acc=0.97, figures={"figures/invariance_mean_shift.png": _png(9), "figures/copy.png": d})  # d: a repeat
    return sweep


class Page(HTMLParser):
    """Start tags with their attributes, the text of headings, captions, table cells and scripts."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        self.tags.append((tag, dict(attrs)))
        if tag in ("h1", "h2", "h3", "h4", "figcaption", "script", "th", "td", "header", "code"):
            self._open.append(tag)
            self.texts.setdefault(tag, []).append("")

    def handle_endtag(self, tag):  # noqa: ANN001
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data):  # noqa: ANN001
        for tag in set(self._open):
            self.texts[tag][-1] += data

    def all(self, tag: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag]


def test_the_page_parsed(report_sweep, tmp_path):
    lb = lbm.load_leaderboard([report_sweep])
    page = render.to_html(lb)
    dom = Page(page)

    # one self-contained file: nothing loaded from elsewhere
    assert not dom.all("link") and not dom.all("iframe")
    for tag, attrs in dom.tags:
        for key in ("src", "href"):
            assert key not in attrs or attrs[key].startswith("data:"), (tag, attrs)
    assert all("src" not in s for s in dom.all("script"))

    # the metadata header
    header = dom.texts["header"][0]
    assert "saliency-bench leaderboard" in header and "generated 20" in header and " UTC" in header
    assert f"saliency-bench {importlib.metadata.version('saliency-bench')}" in header
    assert str(report_sweep.resolve()) in header  # the sources
    assert dom.texts["h2"][0] == "Models"
    cells = dom.texts["td"]
    model_rows = [cells[i:i + 7] for i in range(0, 14, 7)]
    assert model_rows == [["cnn", "mnist", "0.9700", "0.9500", "8", "1 (seed 0)", "1"],
                          ["mlp", "mnist", "0.9100", "0.9500", "8", "1 (seed 0)", "2"]]

    # sortable tables: the script, and every column header of every table clickable
    scripts = dom.texts["script"]
    assert len(scripts) == 1 and "addEventListener('click'" in scripts[0] and "aria-sort" in scripts[0]
    tables = dom.all("table")
    assert tables and all(t.get("class") == "sortable" for t in tables)
    ths = dom.all("th")
    assert all("data-col" in th for th in ths if "colspan" not in th)
    for table in page.split("<table")[1:]:  # the headers number the columns of the rows: 0 .. cells - 1
        table = table.split("</table>")[0]
        cols = sorted(int(c) for c in re.findall(r"data-col='(\d+)'", table))
        first_row = re.search(r"<tbody>\s*<tr>(.*?)</tr>", table, re.S)[1]
        assert cols == list(range(first_row.count("<td"))), table[:300]

    # each figure once: the jobs' own figures, never W&B's copies, the stray PNG or repeated bytes
    srcs = [a["src"] for a in dom.all("img")]
    assert len(srcs) == len(set(srcs)) == 5
    captions = dom.texts["figcaption"]
    assert captions == ["cnn · invariance · mean_shiftmodel=cnn",
                        "mlp · invariance · mean_shiftmethod=inv",
                        "mlp · invariance · checkerboardmethod=inv",
                        "mlp · randomization · cascading · mapsmethod=rand",
                        "mlp · randomization · cascading · similarity curvesmethod=rand"]
    for text in captions + [a["alt"] for a in dom.all("img")]:
        assert "/" not in text and ".png" not in text and "sweep" not in text
    figures_part = page.split("<h2>Figures (5)</h2>")[1]
    assert re.findall(r"<h[34]>([^<]*)</h[34]>", figures_part) == ["cnn", "Invariance", "mlp", "Invariance",
                                                                   "Randomization"]


def test_the_page_is_about_the_size_of_its_figures(report_sweep):
    lb = lbm.load_leaderboard([report_sweep])
    figures = sum(f.path.stat().st_size for f in lb.figures)
    copies = sum(p.stat().st_size for p in report_sweep.rglob("wandb/**/*.png"))
    page = render.to_html(lb, compact=False)
    assert len(page) < 4 / 3 * figures + 40_000  # base64 of each figure once, and some text
    assert len(page) < 4 / 3 * (figures + copies)
    assert len(render.to_html(lb)) <= len(page)


def test_embedded_figures_are_lossless(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(1, 2, figsize=(3, 1.5))
    axes[0].imshow(np.random.default_rng(0).normal(size=(8, 8)), cmap="seismic")  # many colours
    axes[1].plot([0, 1, 0.5])
    fig.savefig(tmp_path / "many.png", dpi=60)
    axes[0].clear()
    fig.savefig(tmp_path / "few.png", dpi=60)
    plt.close(fig)
    for name in ("many.png", "few.png"):
        path = tmp_path / name
        data = render._png_data(path, compact=True)
        assert len(data) <= path.stat().st_size
        before = np.asarray(Image.open(path).convert("RGB"))
        after = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert np.array_equal(before, after), name


def test_metadata_fails_quietly_without_git(monkeypatch):
    meta = render.report_metadata()
    assert meta["version"] == importlib.metadata.version("saliency-bench")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", meta["generated"])

    def no_git(*args, **kwargs):  # noqa: ANN002, ANN003
        raise FileNotFoundError("git")

    monkeypatch.setattr(render.subprocess, "run", no_git)
    meta = render.report_metadata()
    assert meta["commit"] == "" and meta["version"]
    page = render.to_html(lbm.Leaderboard(board=lbm.build_leaderboard(pd_empty())), meta={"generated": "then",
                                                                                          "version": "9"})
    assert "generated then" in page and "saliency-bench 9" in page and "commit" not in Page(page).texts["header"][0]


def pd_empty():
    from bench.core.results import concat

    return concat([])


def test_plain_figure_paths_still_render(tmp_path, invariance_table):
    path = tmp_path / "figures" / "randomization_labels_curves.png"
    path.parent.mkdir()
    path.write_bytes(_png(1))
    page = render.to_html(lbm.Leaderboard(board=lbm.build_leaderboard(invariance_table()), figures=[path]))
    assert Page(page).texts["figcaption"] == ["unknown model · randomization · labels · similarity curves"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt-get install chromium)")
def test_headers_sort_the_rows_in_a_browser(report_sweep, tmp_path):
    page = render.to_html(lbm.load_leaderboard([report_sweep]))
    probe = """<script>
var t=document.querySelectorAll('table.sortable')[2], out=[];  // the mlp table
function order(){return Array.prototype.map.call(t.tBodies[0].rows,function(r){return r.cells[0].textContent;})}
var ssim=t.querySelector("th[data-col='4']"); ssim.click(); out.push(order().join());
ssim.click(); out.push(order().join()); t.querySelector("th[data-col='0']").click(); out.push(order().join());
document.body.insertAdjacentHTML('beforeend','<pre id=probe>'+out.join('|')+'</pre>');
</script></body>"""
    path = tmp_path / "probe.html"
    path.write_text(page.replace("</body>", probe))
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    result = re.search(r"<pre id=\"probe\">([^<]*)</pre>", dom)
    assert result, dom[-2000:]
    # column 4: mean_shift SSIM (0.6 gxi, 0.997 ig_black, 1.0 gradient); NaN ("—", gbp) last either way
    assert result[1].split("|") == ["gxi,ig_black,gradient,gbp", "gradient,ig_black,gxi,gbp",
                                    "gbp,gradient,gxi,ig_black"]


def test_figures_are_found_in_figures_folders_only(report_sweep):
    found = sweep_files.find_figures([report_sweep])
    assert all(p.parent.name == "figures" and "wandb" not in p.parts for p in found)
    assert len(found) == 5 and len({p.read_bytes() for p in found}) == 5
    counts = Counter(p.parent.parent.name for p in found)
    assert counts == {"0": 2, "1": 2, "2": 1}
