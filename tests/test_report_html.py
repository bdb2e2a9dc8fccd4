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
    assert tables and all("sortable" in t.get("class", "").split() for t in tables)
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


#: a headless browser, when one is installed (the tests that need it are skipped otherwise)
CHROMIUM = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")


@needs_chromium
def test_headers_sort_the_rows_in_a_browser(report_sweep, tmp_path):
    page = render.to_html(lbm.load_leaderboard([report_sweep]))
    probe = """<script>
var t=document.querySelectorAll('table.sortable')[2], out=[];  // the mlp table
function order(){return Array.prototype.map.call(t.tBodies[0].rows,function(r){return r.cells[0].textContent;})}
var ssim=t.querySelector("th[data-key='inv/mean_shift/ssim']"); ssim.click(); out.push(order().join());
ssim.click(); out.push(order().join()); t.querySelector("th[data-col='0']").click(); out.push(order().join());
document.body.insertAdjacentHTML('beforeend','<pre id=probe>'+out.join('|')+'</pre>');
</script></body>"""
    path = tmp_path / "probe.html"
    path.write_text(page.replace("</body>", probe))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    result = re.search(r"<pre id=\"probe\">([^<]*)</pre>", dom)
    assert result, dom[-2000:]
    # mean_shift SSIM (0.6 gxi, 0.997 ig_black, 1.0 gradient); NaN ("—", gbp) last either way
    assert result[1].split("|") == ["gxi,ig_black,gradient,gbp", "gradient,ig_black,gxi,gbp",
                                    "gbp,gradient,gxi,ig_black"]


def test_figures_are_found_in_figures_folders_only(report_sweep):
    found = sweep_files.find_figures([report_sweep])
    assert all(p.parent.name == "figures" and "wandb" not in p.parts for p in found)
    assert len(found) == 5 and len({p.read_bytes() for p in found}) == 5
    counts = Counter(p.parent.parent.name for p in found)
    assert counts == {"0": 2, "1": 2, "2": 1}


# -- layout: verdict colours, grouped headers, a table that fits, figures side by side --------------------------

VERDICTS = ("pass", "exact", "fail", "input-dominated", "inconclusive", "N/A")
SHIFTS = ("mean_shift", "checkerboard", "adversarial_image")


def _wide_board(methods: tuple[str, ...] = ("gradient", "guided_backprop", "integrated_gradients_black",
                                             "pattern_attribution", "gradient_x_input", "smoothgrad"),
                modes: tuple[str, ...] = ("cascading",)):
    """A board shaped like the default job's (three shifts, the given randomization modes, 95% intervals), with
    the widest values a cell takes (negative numbers and intervals) and every verdict word somewhere."""
    import pandas as pd

    rows = []
    for i, method in enumerate(methods):
        row = {"model": "paper_mlp", "method": method, "passed": i % 5, "tests": 4,
               "invariance": VERDICTS[i % 3], "randomization": VERDICTS[2 + i % 4]}
        for j, shift in enumerate(SHIFTS):
            row.update({f"inv/{shift}/ssim": -0.158, f"inv/{shift}/ssim_lo": -0.191, f"inv/{shift}/ssim_hi": -0.121,
                        f"inv/{shift}/verdict": VERDICTS[(i + j) % 3]})
        for k, mode in enumerate(modes):
            for stat in ("repeat", "top", "last", "auc"):
                row.update({f"rand/{mode}/ssim/{stat}": -0.005, f"rand/{mode}/ssim/{stat}_lo": -0.025,
                            f"rand/{mode}/ssim/{stat}_hi": -0.009})
            row[f"rand/{mode}/verdict"] = VERDICTS[(i + k) % len(VERDICTS)]
        rows.append(row)
    return pd.DataFrame(rows)


def _css_rules(page: str) -> list[tuple[list[str], dict[str, str]]]:
    """The page's CSS rules: ``([selectors], {property: value})``."""
    css = re.search(r"<style>(.*?)</style>", page, re.S)[1]
    rules = []
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        decls = dict(d.split(":", 1) for d in body.split(";") if ":" in d)
        rules.append(([s.strip() for s in selectors.split(",")], {k.strip(): v.strip() for k, v in decls.items()}))
    return rules


def _declared(rules, selector: str, prop: str) -> str | None:  # noqa: ANN001
    """The last value ``selector`` (exactly, in a selector list) declares for ``prop``."""
    values = [d[prop] for sels, d in rules if selector in sels and prop in d]
    return values[-1] if values else None


def _board_tables(page: str) -> list[str]:
    return re.findall(r"<div class='board'><table class='sortable board'>(.*?)</table></div>", page, re.S)


def _header_rows(table: str) -> list[list[tuple[dict[str, str], str]]]:
    """The ``thead`` rows of a table: per ``th`` its attributes and its text (tags left out)."""
    thead = re.search(r"<thead>(.*?)</thead>", table, re.S)[1]
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", thead, re.S):
        rows.append([(dict(re.findall(r"([\w-]+)='([^']*)'", attrs)), re.sub(r"<[^>]+>", "", text))
                     for attrs, text in re.findall(r"<th([^>]*)>(.*?)</th>", tr, re.S)])
    return rows


def test_every_verdict_word_has_its_own_class_and_colour():
    page = render.to_html(_wide_board(), meta={})
    rules = _css_rules(page)
    classes = {w: render.VERDICT_CLASSES[w] for w in VERDICTS}
    assert len(set(classes.values())) == len(VERDICTS)  # a class per word
    backgrounds = {w: _declared(rules, f".{c}", "background") for w, c in classes.items()}
    assert None not in backgrounds.values(), backgrounds
    assert len(set(backgrounds.values())) == len(VERDICTS), backgrounds  # a colour per word
    # every cell that holds a verdict word has that word's class, and the word itself (not colour alone)
    cells = re.findall(r"<td( class='[^']*')?>([^<]*)</td>", page)
    verdict_cells = [(set(cls[8:-1].split()), text) for cls, text in cells if text in VERDICTS]
    assert {text for _, text in verdict_cells} == set(VERDICTS)
    for cls, text in verdict_cells:
        assert classes[text] in cls and "v" in cls, (cls, text)
        assert not ({c for w, c in classes.items() if w != text} & cls), (cls, text)
    # the key: each word in its own colour, with its meaning
    key = re.search(r"<ul class='key'>(.*?)</ul>", page, re.S)[1]
    assert re.findall(r"<span class='v ([^']+)'>([^<]+)</span>", key) == [(classes[w], w) for w in VERDICTS]
    assert "input-dominated</span> what survives is what the input alone explains" in key


def test_the_header_groups_columns_by_family_shift_and_statistic():
    board = _wide_board(modes=("cascading", "independent"))
    page = render.to_html(board, meta={})
    tables = _board_tables(page)
    assert len(tables) == 1
    families, groups, leaves = _header_rows(tables[0])
    assert families[0][0] == {"rowspan": "3", "data-col": "0", "data-key": "method", "class": "method"}
    assert [t for _, t in families[1:]] == ["Verdicts", "Input invariance", "Model randomization"]
    # each level spans the columns of the level below
    assert sum(int(a["colspan"]) for a, _ in families[1:]) == sum(int(a["colspan"]) for a, _ in groups) == len(leaves)
    assert [(t, int(a["colspan"])) for a, t in groups] == [
        ("overall", 3), ("invariance", 3), ("randomization", 2), *((s, 1) for s in SHIFTS),
        ("cascading (ssim)", 4), ("independent (ssim)", 4)]
    keys = [a["data-key"] for a, _ in leaves]
    assert [a["data-col"] for a, _ in leaves] == [str(i) for i in range(1, len(leaves) + 1)]
    # every column of the Markdown table once; the verdicts first, labelled by their shift / mode
    assert sorted(keys) == sorted(c for _, cols in render._groups(board) for c, _ in cols)
    assert keys[:8] == ["passed", "invariance", "randomization", *(f"inv/{s}/verdict" for s in SHIFTS),
                        "rand/cascading/verdict", "rand/independent/verdict"]
    assert [t for _, t in leaves][:8] == ["passed", "invariance", "randomization", *SHIFTS, "cascading", "independent"]
    assert [t for _, t in leaves][8:] == ["SSIM"] * 3 + ["repeat", "top", "last", "AUC"] * 2
    # long labels may wrap (the text, what sorting reads, is unchanged)
    assert "adversarial_<wbr>image" in tables[0]
    # a rule before every group: the group's first column, header and cells alike
    starts = [i for i, (a, _) in enumerate(leaves) if "start" in a.get("class", "")]
    assert starts == [0, 3, 6, 8, 9, 10, 11, 15]
    first_row = re.search(r"<tbody>\s*<tr>(.*?)</tr>", tables[0], re.S)[1]
    tds = re.findall(r"<td([^>]*)>", first_row)[1:]
    assert [i for i, attrs in enumerate(tds) if "start" in attrs] == starts


def test_the_table_scrolls_in_its_container_with_a_sticky_header_and_method_column():
    page = render.to_html(_wide_board(), meta={})
    rules = _css_rules(page)
    # every leaderboard table sits in its own container, which scrolls (never the page)
    assert page.count("<table class='sortable board'>") == page.count("<div class='board'><table") == 1
    assert _declared(rules, "div.board", "overflow") == "auto"
    assert _declared(rules, "div.board", "max-width") == "100%"
    assert _declared(rules, "table.board thead", "position") == "sticky"
    assert _declared(rules, "table.board thead", "top") == "0"
    assert _declared(rules, "table.board .method", "position") == "sticky"
    assert _declared(rules, "table.board .method", "left") == "0"
    assert _declared(rules, "table.board .method", "background")  # opaque: scrolled cells pass under it
    # headers wrap, intervals go on a second line; nothing sets a fixed width on a table or its cells
    assert _declared(rules, "table.board th", "white-space") == "normal"
    assert _declared(rules, "table.board td span.ci", "display") == "block"
    assert _declared(rules, "table.board td.v", "white-space") == "normal"  # input-dominated may wrap at its hyphen
    for selectors, decls in rules:
        if any(re.search(r"\b(table|th|td)\b", s) for s in selectors):
            assert not {"width", "min-width"} & decls.keys(), (selectors, decls)


def _two_methods_sweep(tmp_path: Path, invariance_table) -> Path:  # noqa: ANN001
    """A sweep over methods: two jobs of ``mlp`` (``method=gradient``, ``method=gbp``), one of ``cnn``; each
    draws the mean shift and a cascade strip (wide)."""
    inv = invariance_table()
    sweep = tmp_path / "sweep"
    jobs = [("0", "mlp", "gradient"), ("1", "mlp", "gbp"), ("2", "cnn", "gradient")]
    for i, (name, model, method) in enumerate(jobs):
        _job(sweep, name, inv[(inv.model == model) & (inv.method == method)], model=model,
             overrides=["+experiment=smoke", f"method={method}", f"model={model}"],
             figures={"figures/invariance_mean_shift.png": _png(10 + i),
                      "figures/randomization_cascading_grid.png": _png(20 + i, (300, 60))})
    return sweep


def test_figures_of_one_condition_sit_side_by_side(tmp_path, invariance_table):
    lb = lbm.load_leaderboard([_two_methods_sweep(tmp_path, invariance_table)])
    page = render.to_html(lb)
    figures_part = page.split("<h2>Figures (6)</h2>")[1]
    # per model and test; a row per condition where several jobs show it, its jobs side by side in one grid
    assert re.findall(r"<h([345])>([^<]*)</h\1>", figures_part) == [
        ("3", "cnn"), ("4", "Invariance"), ("4", "Randomization"),
        ("3", "mlp"), ("4", "Invariance"), ("5", "mean_shift"), ("4", "Randomization"), ("5", "cascading · maps")]
    grids = re.findall(r"<div class='(figgrid[^']*)' style='--track:(\d+)px'>(.*?)</div>", figures_part, re.S)
    assert sum(g.count("<figure") for *_, g in grids) == figures_part.count("<figure") == 6  # every card in a grid
    # strips (the 300 x 60 cascades) get the widest columns, small figures the narrowest
    assert [(cls, int(track), Page(g).texts["figcaption"]) for cls, track, g in grids] == [
        ("figgrid", 260, ["cnn · invariance · mean_shiftmethod=gradient model=cnn"]),  # one figure: the whole label
        ("figgrid strips", 880, ["cnn · randomization · cascading · mapsmethod=gradient model=cnn"]),
        ("figgrid", 260, ["mlp · invariance · mean_shiftmethod=gbp", "mlp · invariance · mean_shiftmethod=gradient"]),
        ("figgrid strips", 880, ["mlp · randomization · cascading · mapsmethod=gbp",
                                 "mlp · randomization · cascading · mapsmethod=gradient"])]
    titles = [a["title"] for a in Page(figures_part).all("figure")]
    assert titles[2:4] == ["method=gbp model=mlp · click to enlarge", "method=gradient model=mlp · click to enlarge"]
    rules = _css_rules(page)
    assert _declared(rules, "div.figgrid", "display") == "grid"
    assert _declared(rules, "div.figgrid", "grid-template-columns") == (
        "repeat(auto-fit,minmax(min(100%,var(--track,260px)),1fr))")  # as many columns as fit, never wider than 100%
    assert _declared(rules, "figure.card.wide", "grid-column") == "1/-1"  # a click widens a card to the row
    assert "classList.toggle('wide')" in Page(page).texts["script"][0]


def test_grid_columns_follow_the_figures_widths():
    from PIL import Image

    def png(w: int, h: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (w, h)).save(buf, format="PNG")
        return buf.getvalue()

    assert render._png_size(png(693, 462)) == (693, 462) and render._png_size(b"GIF89a" + bytes(30)) is None
    assert render._track_px([png(693, 462)] * 3) == 277  # 0.4 of the widest
    assert render._track_px([png(100, 100)]) == 260 and render._track_px([png(1111, 990), png(2208, 351)]) == 880
    assert render._track_px([png(968, 220), png(2208, 351)]) == 880  # strips only: the widest columns


def test_one_job_shares_a_grid_per_test():
    figs = [sweep_files.Figure(Path(f"j/figures/{n}.png"), "m", t, c, k, "")
            for n, t, c, k in [("a", "invariance", "mean_shift", ""), ("b", "invariance", "checkerboard", ""),
                               ("c", "randomization", "cascading", "maps")]]
    assert render.figure_rows(figs) == [("m", "invariance", [("", figs[:2])]), ("m", "randomization", [("", figs[2:])])]
    other = sweep_files.Figure(Path("k/figures/a.png"), "m", "invariance", "mean_shift", "", "method=x")
    assert render.figure_rows([figs[0], other, figs[1]]) == [
        ("m", "invariance", [("mean_shift", [figs[0], other]), ("checkerboard", [figs[1]])])]


def _browser_probe(page: str, path: Path, width: int, script: str) -> str:
    """Open ``page`` in headless Chromium ``width`` px wide, run ``script`` (which returns a string) after the
    page's own, and return that string."""
    probe = (f"<script>(function(){{var r=(function(){{{script}}})();"
             "document.body.insertAdjacentHTML('beforeend','<pre id=probe>'+r+'</pre>');})();</script></body>")
    path.write_text(page.replace("</body>", probe))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},1000",
                          "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r"<pre id=\"probe\">([^<]*)</pre>", dom)
    assert found, dom[-2000:]
    return found[1]


_MEASURE = """
var d=document.querySelector('div.board'), t=d.querySelector('table'), box=d.getBoundingClientRect();
var verdicts=[].filter.call(t.querySelectorAll('th[data-key]'),function(th){var k=th.getAttribute('data-key');
 return /verdict$/.test(k)||k==='passed'||k==='invariance'||k==='randomization';});
var hidden=verdicts.filter(function(th){return th.getBoundingClientRect().right>box.right+1;}).length;
d.scrollLeft=100000; var m=t.querySelector('td.method').getBoundingClientRect();
return [document.documentElement.scrollWidth, d.scrollWidth-d.clientWidth, hidden, verdicts.length,
        Math.round(m.left-box.left)].join(',');"""


@pytest.mark.slow
@needs_chromium
def test_the_page_fits_1920_px_and_keeps_verdicts_in_view_at_1280(tmp_path, invariance_table):
    page = render.to_html(lbm.Leaderboard(board=_wide_board(), figures=lbm.load_leaderboard(
        [_two_methods_sweep(tmp_path, invariance_table)]).figures), meta={})
    page_width, overflow, hidden, verdicts, method_left = map(int, _browser_probe(
        page, tmp_path / "wide.html", 1920, _MEASURE).split(","))
    assert page_width <= 1920 and overflow == 0 and verdicts == 7 and hidden == 0
    # at 1280 the table may scroll inside its container: the page does not, the verdicts are in view before any
    # scrolling, and the method column stays put when the table is scrolled to its end
    page_width, overflow, hidden, verdicts, method_left = map(int, _browser_probe(
        page, tmp_path / "narrow.html", 1280, _MEASURE).split(","))
    assert page_width <= 1280 and hidden == 0 and verdicts == 7
    assert overflow > 0 and 0 <= method_left <= 2  # scrolled, and the method cell at the container's left edge
