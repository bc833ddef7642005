"""``capslab report``: one self-contained HTML page for a training run, a FasTrCaps study and a
search, checked as files (sections, data, no external address) and in a real browser (Debian's
Chromium through playwright: no script error, no network request, the front's points drawn,
a click on a point shows that candidate)."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capslab.errors import RunMismatchError
from capslab.report import detect_kind, write_report
from capslab.report.run import confusion_matrix, evaluate_classes, per_class_accuracy

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SMALL_SPACE = {  # tests/nas/test_end_to_end.py's space: about a second per candidate
    "conv_layers": [2, 2], "kernels": [3, 5], "strides": [2], "channels": [4, 8],
    "capsules": [4, 8], "conv_channel_exponents": [3, 4], "caps_layers": [2, 3],
    "families": ["sabour"], "resizes": [1], "class_dim": 8,
}


# --------------------------------------------------------------------------- the three folders
@pytest.fixture(scope="module")
def run_dir(mnist_root, tmp_path_factory):
    """A tiny capsnet trained for one epoch on 300 MNIST images (checkpoints and plots on)."""
    from capslab.train import TrainConfig, train

    out = tmp_path_factory.mktemp("report") / "run"
    train(TrainConfig(model="capsnet", model_options={"conv_channels": 16, "primary_types": 8},
                      dataset="mnist", epochs=1, batch_size=32, subset=300, test_subset=200,
                      device="cpu", seed=0, out=str(out)), progress=False)
    return out


def _fake_trainer(config, progress=False, callbacks=()):
    """A run's summary without training: each policy and variant learns at its own pace."""
    from capslab.results import write_json

    speed = {"fixed": 0.1, "warm-adabatch": 0.25}[config.policy]
    ws = bool(config.model_options.get("weight_sharing"))
    history = [{"epoch": e + 1, "test_accuracy": min(0.99, 0.5 + speed * (e + 1) - 0.02 * ws),
                "train_loss": 1.0 / (e + 1), "test_loss": 1.1 / (e + 1), "lr": 1e-3, "batch_size": 128,
                "epoch_seconds": 2.0 - 0.5 * ws} for e in range(config.epochs)]
    summary = {"best_test_accuracy": max(h["test_accuracy"] for h in history), "history": history,
               "parameters": 50_000 if ws else 80_000, "train_size": 1000,
               "config": config.to_dict(), "identity": config.identity()}
    write_json(Path(config.out) / "summary.json", "summary", summary)
    return summary


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """A FasTrCaps study of 2 policies x 2 variants x 2 runs (summaries written, no training)."""
    from capslab.studies.fastrcaps import StudyConfig, run_study

    out = tmp_path_factory.mktemp("report") / "study"
    study = StudyConfig(training={"epochs": 3}, repeats=2, policies=("fixed", "warm-adabatch"), out=str(out))
    run_study(study, progress=False, train_fn=_fake_trainer, plots=False)
    return out


@pytest.fixture(scope="module")
def search_dir(mnist_root, tmp_path_factory):
    """A real search: 3 + 3 candidates, each trained one epoch on 200 images; runs kept."""
    from capslab.nas.config import SearchConfig
    from capslab.nas.search import run_search
    from capslab.train import TrainingSettings

    out = tmp_path_factory.mktemp("report") / "search"
    training = TrainingSettings(model="genotype", dataset="mnist", epochs=1, subset=200, test_subset=100,
                                batch_size=16, lr=3e-3, device="cpu", seed=0)
    run_search(SearchConfig(training=training, generations=1, population=3, offspring=3, seed=0,
                            time_limit=120, space=SMALL_SPACE, keep_candidates=True), out)
    return out


@pytest.fixture(scope="module")
def journal(search_dir):
    """``(records, front)`` read through the search's own API."""
    from capslab.nas.config import open_journal
    from capslab.nas.report import pareto_front

    j, _ = open_journal(search_dir)
    with j:
        records = j.evaluations()
    return records, pareto_front(records)


@pytest.fixture(scope="module")
def reports(run_dir, study_dir, search_dir):
    return {kind: write_report(folder) for kind, folder in
            (("run", run_dir), ("study", study_dir), ("search", search_dir))}


# --------------------------------------------------------------------------- page helpers
class _Parts(HTMLParser):
    """Ids, external references (every src/href) and the JSON data blocks of a page."""

    def __init__(self):
        super().__init__()
        self.ids, self.refs, self.json, self._in_json = set(), [], {}, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        self.refs += [v for k, v in attrs if k in ("src", "href") and v is not None]
        if tag == "script" and a.get("type") == "application/json":
            self._in_json = a["id"]

    def handle_data(self, data):
        if self._in_json:
            self.json[self._in_json] = json.loads(data)

    def handle_endtag(self, tag):
        self._in_json = None


def parts(page: str) -> _Parts:
    p = _Parts()
    p.feed(page)
    return p


def table_rows(page: str, table_id: str) -> int:
    table = re.search(rf'<table class="data" id="{table_id}">(.*?)</table>', page, flags=re.S).group(1)
    return table.split("<tbody>")[1].count("<tr")


# --------------------------------------------------------------------------- pure pieces
def test_confusion_matrix_and_per_class_accuracy_by_hand():
    m = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 4)
    assert m.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert per_class_accuracy(m) == [0.5, 1.0, pytest.approx(2 / 3), None]  # class 3: no sample


def test_folders_of_no_known_kind_are_refused(tmp_path, study_dir):
    assert detect_kind(study_dir) == "study"
    with pytest.raises(RunMismatchError, match="holds no training run"):
        write_report(tmp_path)
    (tmp_path / "config.json").write_text('{"something": "else"}')  # another program's file
    with pytest.raises(RunMismatchError, match="holds no training run"):
        detect_kind(tmp_path)
    with pytest.raises(RunMismatchError, match="is not a folder"):
        detect_kind(tmp_path / "missing")
    assert not (tmp_path / "report.html").exists()


# --------------------------------------------------------------------------- every page
def test_pages_are_self_contained(reports):
    """plotly.js once, inline; every src/href is a data: URI or an anchor; apart from
    plotly.js's own strings the page holds no http(s) address at all."""
    import plotly.offline

    bundle = plotly.offline.get_plotlyjs()
    for kind, path in reports.items():
        page = path.read_text()
        assert page.count(bundle) == 1, kind
        p = parts(page)
        assert p.refs and all(r.startswith(("data:image/png;base64,", "#")) for r in p.refs), (kind, p.refs)
        rest = page.replace(bundle, "")
        assert not re.search(r"https?://", rest), (kind, re.findall(r".{40}https?://.{40}", rest))
        assert "<link" not in rest and "@import" not in rest and "url(" not in rest


# --------------------------------------------------------------------------- training run
def test_run_report(run_dir, reports):
    """Every section is there and the per-class figures come from evaluating best.pt on the
    run's own test subset: their accuracy is the run's recorded best test accuracy."""
    assert detect_kind(run_dir) == "run" and reports["run"] == run_dir / "report.html"
    page = reports["run"].read_text()
    ids = parts(page).ids
    assert {"summary", "curves", "reconstructions", "classes", "timing", "config",
            "curves-plot", "classes-plot", "timing-plot"} <= ids
    images = [r for r in parts(page).refs if r.startswith("data:image/png;base64,")]
    assert len(images) == 1  # reconstructions.png, embedded
    assert base64.b64decode(images[0].split(",", 1)[1]) == (run_dir / "reconstructions.png").read_bytes()
    summary = json.loads((run_dir / "summary.json").read_text())
    ev = evaluate_classes(run_dir / "best.pt")
    assert int(ev.matrix.sum()) == ev.samples == 200  # test_subset
    from capslab.data import load_dataset, stratified_subset

    labels = load_dataset("mnist", "test").labels
    expected = labels[stratified_subset(labels, 200, seed=0)].bincount(minlength=10)
    assert ev.matrix.sum(dim=1).tolist() == expected.tolist()  # the run's stratified subset
    assert ev.accuracy == pytest.approx(summary["best_test_accuracy"], abs=1 / 200)
    assert f"accuracy {100 * ev.accuracy:.2f} %" in page
    assert "capsnet" in page and "model_options.conv_channels" in page  # the config table


def test_run_report_notes_what_it_cannot_show(run_dir, tmp_path, isolated_data):
    # no dataset here (isolated_data hides CAPSLAB_DATA): a note instead of the matrix
    page = write_report(run_dir, tmp_path / "elsewhere.html").read_text()
    assert "test split is not available" in page and 'id="classes-plot"' not in page
    assert 'id="curves-plot"' in page
    # a run trained without checkpoints: nothing to evaluate, said so
    copy = tmp_path / "no-checkpoints"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*.pt", "report.html"))
    page = write_report(copy).read_text()
    assert "No checkpoint in this run" in page and 'id="classes-plot"' not in page


# --------------------------------------------------------------------------- study
def test_study_report(study_dir, reports):
    page = reports["study"].read_text()
    doc = json.loads((study_dir / "study.json").read_text())
    assert {"summary", "table", "pareto", "curves", "tradeoffs", "study-curves"} <= parts(page).ids
    assert table_rows(page, "study-table") == len(doc["rows"]) == 4
    chosen = re.findall(r'<tr class="highlight"><td class="text">([^<]*)</td><td class="text">([^<]*)<', page)
    assert chosen == [(doc["choice"]["policy"], doc["choice"]["variant"])]
    assert page.count('<tr class="marked">') == sum(r["pareto"] for r in doc["rows"]) - doc["choice"]["pareto"]


# --------------------------------------------------------------------------- search
def test_search_report(search_dir, reports, journal):
    """The front table is the journal's front; every candidate's per-layer hardware adds up to
    its journaled totals and its training curve is its own (its best epoch is its accuracy)."""
    records, front = journal
    page = reports["search"].read_text()
    p = parts(page)
    assert {"front", "objectives", "candidate", "candidate-detail", "candidate-genotype",
            "generations-plot", "baselines", "candidates"} <= p.ids
    assert table_rows(page, "front-table") == len(front) >= 1
    assert table_rows(page, "candidate-table") == len(records)
    assert table_rows(page, "generation-table") == 2  # the initial population + 1 generation
    details = p.json["candidate-data"]["candidates"]
    ok = [(i, r) for i, r in enumerate(records) if r.ok]
    assert sorted(map(int, details)) == [i for i, _ in ok]
    for i, r in ok:
        d = details[str(i)]
        assert sum(d["energy"]) == pytest.approx(r.energy_mJ, rel=1e-9)
        assert sum(d["latency"]) == pytest.approx(r.latency_ms, rel=1e-9)
        assert sum(d["memory"]) == pytest.approx(r.memory_KiB, rel=1e-9)
        assert len(d["table"][0]) == len(d["labels"])
        assert d["has_curve"] and max(d["partial"]["y"]) == pytest.approx(100 * r.accuracy)
    start = p.json["candidate-data"]["start"]
    assert records[start].key in {r.key for r in front}
    assert records[start].accuracy == max(r.accuracy for r in front)


# --------------------------------------------------------------------------- command line
def test_report_command(study_dir, tmp_path):
    from capslab.cli.main import app

    runner = CliRunner()
    target = tmp_path / "out" / "study.html"
    res = runner.invoke(app, ["report", str(study_dir), "--out", str(target), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"kind": "study", "report": str(target)}
    assert target.stat().st_size > 1_000_000  # plotly.js is inside
    res = runner.invoke(app, ["report", str(study_dir), "--out", str(target)])
    assert res.exit_code == 0 and res.stdout.strip() == str(target)
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["report", str(empty)])
    assert res.exit_code == 2 and "holds no training run" in res.output


# --------------------------------------------------------------------------- in a browser
@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium (.ci/run does)")
        pytest.skip(f"{CHROMIUM} is not installed (Debian: apt-get install chromium); "
                    "the browser tests use it and never download one")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser, path: Path):
    """The page loaded with every figure drawn; ``(page, errors, requests)`` where errors are
    script errors and console errors, requests every non-file request (all refused)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors, requests = [], []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)

    def route(r):
        if r.request.url.startswith(("file:", "data:")):
            r.continue_()
        else:
            requests.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(path.as_uri())
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.plotly-graph-div'))"
        ".every(d => d._fullLayout && d.querySelector('.main-svg'))", timeout=30_000)
    return page, errors, requests


_DRAWN = "() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(d => d.id)"
_POINTS = """([plot, name]) => Array.from(document.querySelectorAll('#' + plot + ' g.trace.scatter'))
  .filter(g => g.__data__[0].trace.name === name).map(g => g.querySelectorAll('path.point').length)"""
# the point of the first panel farthest from any other point, not the candidate shown now
_PICK = """(shown) => {
  const panel = document.querySelector('#objectives .subplot.xy');
  const pts = Array.from(panel.querySelectorAll('g.trace.scatter')).flatMap(g =>
    Array.from(g.querySelectorAll('path.point')).map(p => {
      const r = p.getBoundingClientRect(), t = g.__data__[0].trace;
      return {x: r.x + r.width / 2, y: r.y + r.height / 2, i: t.customdata ? t.customdata[p.__data__.i][0] : null};
    }));
  let best = null, far = -1;
  for (const p of pts) {
    if (p.i === null || p.i === shown) continue;
    const d = Math.min(...pts.filter(q => q !== p).map(q => Math.hypot(q.x - p.x, q.y - p.y)));
    if (d > far) { far = d; best = p; }
  }
  return best;
}"""


def test_run_page_in_a_browser(browser, reports):
    page, errors, requests = open_page(browser, reports["run"])
    assert errors == [] and requests == []
    assert page.evaluate(_DRAWN) == ["curves-plot", "classes-plot", "timing-plot"]
    assert page.evaluate("() => document.querySelector('img.figure').naturalWidth") > 100
    assert page.locator("#classes-plot .heatmaplayer image, #classes-plot .hm image").count() >= 1
    page.close()


def test_study_page_in_a_browser(browser, reports, study_dir):
    page, errors, requests = open_page(browser, reports["study"])
    assert errors == [] and requests == []
    assert page.evaluate(_DRAWN) == ["tradeoffs", "study-curves"]
    rows = json.loads((study_dir / "study.json").read_text())["rows"]
    assert page.locator("#tradeoffs path.point").count() == 3 * len(rows)  # 3 panels
    page.close()


def test_search_page_in_a_browser(browser, reports, journal):
    """The front's points are drawn in all six panels, and a click on a point shows that
    candidate's genotype and per-layer hardware."""
    from capslab.genotype import Genotype
    from capslab.hw import estimate

    records, front = journal
    page, errors, requests = open_page(browser, reports["search"])
    assert errors == [] and requests == []
    assert page.evaluate(_DRAWN) == ["objectives", "candidate-detail", "generations-plot"]
    assert page.evaluate(_POINTS, ["objectives", "Pareto front"]) == [len(front)] * 6
    ok = [r for r in records if r.ok]
    drawn = page.evaluate(_POINTS, ["objectives", "candidates"])
    assert [n + len(front) for n in drawn] == [len(ok)] * 6
    # the slider starts at the last generation: every successful candidate seen so far
    assert sum(page.evaluate(_POINTS, ["generations-plot", "earlier"])
               + page.evaluate(_POINTS, ["generations-plot", "new in this generation"])) == 3 * len(ok)

    shown = int(page.get_attribute("#candidate-detail", "data-candidate"))
    page.locator("#objectives").scroll_into_view_if_needed()
    target = page.evaluate(_PICK, shown)
    assert target is not None
    record = records[target["i"]]
    genotype = Genotype.from_nascaps(record.genotype_nascaps)
    page.mouse.move(target["x"], target["y"])  # hovering shows the genotype
    page.wait_for_selector("#objectives .hoverlayer .hovertext")
    assert genotype.describe() in page.text_content("#objectives .hoverlayer")
    page.mouse.click(target["x"], target["y"])
    page.wait_for_function(f"() => document.getElementById('candidate-detail')"
                           f".getAttribute('data-candidate') === '{target['i']}'", timeout=10_000)
    assert page.inner_text("#candidate-genotype").startswith(genotype.describe())
    bars = page.evaluate("() => document.getElementById('candidate-detail').data[0].x")
    assert [b.split(". ", 1)[1] for b in bars] == [lay.name for lay in estimate(genotype).layers]
    title = page.evaluate("() => document.getElementById('candidate-detail').layout.title.text")
    assert title.startswith(f"Candidate {target['i']} ")
    assert errors == [] and not math.isnan(record.accuracy)
    page.close()
