"""The report of a NASCaps search (a folder written by :func:`capslab.nas.search.run_search`).

What it shows, read from the search's journal: the four objectives (accuracy, energy, memory,
latency) as the six pairwise projections, every successful candidate coloured by the
generation that produced it, the Pareto front of all candidates highlighted and the published
baselines (CapsNet, DeepCaps) drawn where their figures are known; hovering a point shows its
genotype, clicking it shows its hardware breakdown per layer and its training curve (when the
search kept its candidates' runs, ``--keep-candidates``, or finalize trained it); then the
search generation by generation (a slider), the front, the baselines, every candidate and the
finalize table when there is one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capslab.errors import GenotypeError, RunMismatchError
from capslab.genotype import parse_genotype
from capslab.hw import estimate
from capslab.nas.config import RUN_FILE, open_journal
from capslab.nas.report import FINAL_COLUMNS, baseline_hardware, search_front
from capslab.nas.schema import EvaluationRecord, GenerationRecord
from capslab.nas.space import genotype_key
from capslab.report.html import Page, format_value
from capslab.report.run import read_history
from capslab.results import read_json
from capslab.train.callbacks import held_out_split

AXES = ("accuracy", "energy_mJ", "memory_KiB", "latency_ms")
AXIS_TITLES = {"accuracy": "accuracy (%)", "energy_mJ": "energy (mJ)", "memory_KiB": "memory (KiB)",
               "latency_ms": "latency (ms)"}
#: The six projections (x, y): accuracy upwards against each hardware objective, then the
#: hardware objectives against each other.
PAIRS = (("energy_mJ", "accuracy"), ("memory_KiB", "accuracy"), ("latency_ms", "accuracy"),
         ("energy_mJ", "memory_KiB"), ("energy_mJ", "latency_ms"), ("memory_KiB", "latency_ms"))
AXES_LOG = {"accuracy": False, "energy_mJ": True, "memory_KiB": True, "latency_ms": True}
FRONT_NAME = "Pareto front"
FRONT_COLOR = "#d62728"
BASELINE_STYLE = {"CapsNet": ("star", "#ff7f0e"), "DeepCaps": ("diamond", "#2ca02c")}


def is_search(path: Path) -> bool:
    """Does ``path`` hold a search (its ``run.json``)?"""
    try:
        return read_json(path / RUN_FILE, "search-run") is not None
    except RunMismatchError:
        return False


# --------------------------------------------------------------------------- reading the run
@dataclass
class SearchData:
    """Everything the report reads from a search folder and its journal."""

    path: Path
    info: dict[str, Any]  # run.json
    status: str
    records: list[EvaluationRecord]  # journal order
    generations: list[GenerationRecord]
    curves: dict[str, dict[str, list[dict[str, Any]]]]  # key -> {"partial"|"full": history}

    @classmethod
    def read(cls, run_dir: str | Path) -> SearchData:
        path = Path(run_dir)
        journal, info = open_journal(path)
        with journal:
            records = journal.evaluations()
            generations = journal.generations()
            status = journal.run_info()["status"]
        curves: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for kind, folders in (("partial", (path / "candidates").glob("*")),
                              ("full", (path / "final").glob("NASCaps-*"))):
            for key, history in run_histories(folders):
                curves.setdefault(key, {})[kind] = history
        return cls(path, info, status, records, generations, curves)

    @property
    def config(self) -> dict[str, Any]:
        return self.info.get("config", {})


def run_histories(folders: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(genotype key, per-epoch records)`` of every training-run folder in ``folders`` whose
    config names a genotype network (candidates kept by the search, finalize's networks)."""
    out = []
    for folder in sorted(folders):
        try:
            config = read_json(folder / "config.json", "config")
        except RunMismatchError:
            continue
        genotype = (config or {}).get("model_options", {}).get("genotype")
        history = read_history(folder)
        if genotype is None or not history:
            continue
        try:
            out.append((genotype_key(parse_genotype(genotype)), history))
        except GenotypeError:
            continue
    return out


def _ok(records: Sequence[EvaluationRecord]) -> list[tuple[int, EvaluationRecord]]:
    """``(journal index, record)`` of the candidates that have all four objectives."""
    return [(i, r) for i, r in enumerate(records)
            if r.ok and all(v is not None and math.isfinite(v) for v in
                            (r.accuracy, r.energy_mJ, r.memory_KiB, r.latency_ms))]


def _value(r: EvaluationRecord, axis: str) -> float:
    return 100 * r.accuracy if axis == "accuracy" else getattr(r, axis)


def _short(axis: str) -> str:
    return AXIS_TITLES[axis].split(" (")[0]


def _describe(r: EvaluationRecord) -> str:
    try:
        return parse_genotype(r.genotype_nascaps).describe()
    except GenotypeError:
        return str(r.genotype_nascaps)


def _axis_ranges(points: Sequence[EvaluationRecord], baselines: dict[str, dict[str, float]]) -> dict[str, list[float]]:
    """Fixed ranges per objective (log10 for the hardware ones), padded, so that the views of
    every generation share their axes."""
    ranges = {}
    for axis in AXES:
        values = [_value(r, axis) for r in points]
        values += [b[axis] for b in baselines.values() if axis in b]
        if axis == "accuracy":
            lo, hi = min(values, default=0.0), max(values, default=100.0)
            pad = max(1.0, 0.06 * (hi - lo))
            ranges[axis] = [lo - pad, hi + pad]
        else:
            logs = [math.log10(v) for v in values if v > 0] or [0.0]
            lo, hi = min(logs), max(logs)
            pad = max(0.08, 0.06 * (hi - lo))
            ranges[axis] = [lo - pad, hi + pad]
    return ranges


# --------------------------------------------------------------------------- figures
def _customdata(i: int, r: EvaluationRecord) -> list[Any]:
    trained = "" if r.epochs is None else f" after {r.epochs} epoch{'s' if r.epochs != 1 else ''}"
    return [i, r.generation, _describe(r), 100 * r.accuracy, r.energy_mJ, r.memory_KiB,
            r.latency_ms, trained]


_HOVER = ("<b>candidate %{customdata[0]}</b> (generation %{customdata[1]})<br>%{customdata[2]}<br>"
          "accuracy %{customdata[3]:.2f} %%{customdata[7]}, energy %{customdata[4]:.4g} mJ,<br>"
          "memory %{customdata[5]:,.1f} KiB, latency %{customdata[6]:.4g} ms")


def objectives_figure(data: SearchData, front_keys: set[str], baselines: dict[str, dict[str, float]]):
    """Six panels, one per pair of objectives; hardware axes are logarithmic. Trace names:
    ``candidates`` (coloured by generation) and :data:`FRONT_NAME` in every panel, and the
    baselines."""
    from plotly.subplots import make_subplots

    ok = _ok(data.records)
    fig = make_subplots(rows=2, cols=3, horizontal_spacing=0.07, vertical_spacing=0.14,
                        subplot_titles=[f"{_short(y)} vs {_short(x)}" for x, y in PAIRS])
    others = [(i, r) for i, r in ok if r.key not in front_keys]
    front = [(i, r) for i, r in ok if r.key in front_keys]
    gmax = max((r.generation for _, r in ok), default=1) or 1
    ranges = _axis_ranges([r for _, r in ok], baselines)
    for n, (xa, ya) in enumerate(PAIRS):
        row, col = n // 3 + 1, n % 3 + 1
        fig.add_scatter(
            x=[_value(r, xa) for _, r in others], y=[_value(r, ya) for _, r in others], mode="markers",
            name="candidates", legendgroup="candidates", showlegend=n == 0,
            customdata=[_customdata(i, r) for i, r in others],
            hovertemplate=_HOVER + "<extra>candidate</extra>",
            marker=dict(size=8, color=[r.generation for _, r in others], colorscale="Viridis", cmin=0,
                        cmax=gmax, opacity=0.8, line=dict(width=0.5, color="#333"),
                        showscale=n == 0,
                        colorbar=dict(title=dict(text="generation"), len=0.5, y=0.5, thickness=14,
                                      dtick=max(1, round(gmax / 8)))),
            row=row, col=col,
        )
        fig.add_scatter(
            x=[_value(r, xa) for _, r in front], y=[_value(r, ya) for _, r in front], mode="markers",
            name=FRONT_NAME, legendgroup="front", showlegend=n == 0,
            customdata=[_customdata(i, r) for i, r in front],
            hovertemplate=_HOVER + f"<extra>{FRONT_NAME}</extra>",
            marker=dict(size=12, color=FRONT_COLOR, symbol="circle", line=dict(width=1.5, color="#111")),
            row=row, col=col,
        )
        for name, b in baselines.items():
            symbol, color = BASELINE_STYLE.get(name, ("x", "#8c564b"))
            bx, by = b.get(xa), b.get(ya)
            shown = name in {t.name for t in fig.data}
            if bx is not None and by is not None:
                fig.add_scatter(x=[bx], y=[by], mode="markers", name=name, legendgroup=name, showlegend=not shown,
                                marker=dict(size=16, symbol=symbol, color=color, line=dict(width=1, color="#111")),
                                hovertemplate=f"<b>{name}</b> (published)<br>{AXIS_TITLES[xa]} %{{x:.4g}}<br>"
                                              f"{AXIS_TITLES[ya]} %{{y:.4g}}<extra>baseline</extra>",
                                row=row, col=col)
            elif bx is not None:  # accuracy unknown: its hardware figure as a line across the panel
                acc = [10 ** v if AXES_LOG[ya] else v for v in ranges[ya]]
                fig.add_scatter(x=[bx, bx], y=acc, mode="lines", name=name, legendgroup=name, showlegend=not shown,
                                line=dict(dash="dash", color=color, width=1.5),
                                hovertemplate=f"<b>{name}</b> (published; accuracy not measured)<br>"
                                              f"{AXIS_TITLES[xa]} %{{x:.4g}}<extra>baseline</extra>",
                                row=row, col=col)
        fig.update_xaxes(title_text=AXIS_TITLES[xa], type="log" if AXES_LOG[xa] else "linear",
                         range=ranges[xa], row=row, col=col)
        fig.update_yaxes(title_text=AXIS_TITLES[ya], type="log" if AXES_LOG[ya] else "linear",
                         range=ranges[ya], row=row, col=col)
    fig.update_layout(height=760, hovermode="closest", margin=dict(t=70, b=50, l=70, r=20),
                      legend=dict(orientation="h", x=0.5, xanchor="center", y=1.09))
    return fig


def generations_figure(data: SearchData):
    """The search after each generation (a slider): accuracy against each hardware objective,
    with the candidates evaluated before, the new ones, the surviving population and the
    Pareto front of everything evaluated so far."""
    from plotly.subplots import make_subplots

    ok = _ok(data.records)
    gens = sorted({g.generation for g in data.generations} | {r.generation for _, r in ok})
    survivors = {g.generation: set(g.population) for g in data.generations}
    ranges = _axis_ranges([r for _, r in ok], {})
    hw = AXES[1:]
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.06,
                        subplot_titles=[f"accuracy vs {_short(a)}" for a in hw])
    layers = (("earlier", "#b8bcc8", 7, "circle"), ("new in this generation", "#1f77b4", 9, "circle"),
              ("population after this generation", "#ff7f0e", 15, "circle-open"), (FRONT_NAME + " so far", FRONT_COLOR, 11, "x"))
    steps = []
    per_gen = 4 * len(hw)
    for k, g in enumerate(gens):
        seen = [(i, r) for i, r in ok if r.generation <= g]
        front = {r.key for r in search_front([r for _, r in seen], data.config)}
        groups = ([(i, r) for i, r in seen if r.generation < g], [(i, r) for i, r in seen if r.generation == g],
                  [(i, r) for i, r in seen if r.key in survivors.get(g, set())],
                  [(i, r) for i, r in seen if r.key in front])
        for c, axis in enumerate(hw, start=1):
            for (name, color, size, symbol), members in zip(layers, groups, strict=True):
                # the earlier candidates are the bulk of the points: drawn, without hover data
                hover = (dict(hoverinfo="skip") if name == "earlier" else
                         dict(customdata=[_customdata(i, r) for i, r in members],
                              hovertemplate=_HOVER + f"<extra>{name}</extra>"))
                fig.add_scatter(
                    x=[_value(r, axis) for _, r in members], y=[100 * r.accuracy for _, r in members],
                    mode="markers", name=name, legendgroup=name, showlegend=c == 1,
                    visible=k == len(gens) - 1, **hover,
                    marker=dict(size=size, color=color, symbol=symbol,
                                line=dict(width=2 if symbol.endswith("open") else 0.5, color=color if symbol.endswith("open") else "#333")),
                    row=1, col=c,
                )
        visible = [False] * (per_gen * len(gens))
        visible[k * per_gen:(k + 1) * per_gen] = [True] * per_gen
        new = sum(1 for _, r in seen if r.generation == g)
        steps.append(dict(label=str(g), method="update",
                          args=[{"visible": visible},
                                {"title.text": f"After generation {g}: {len(seen)} successful candidates, {new} new, "
                                               f"front of {len(front)}"}]))
    for c, axis in enumerate(hw, start=1):
        fig.update_xaxes(title_text=AXIS_TITLES[axis], type="log", range=ranges[axis], row=1, col=c)
        fig.update_yaxes(title_text="accuracy (%)" if c == 1 else None, range=ranges["accuracy"], row=1, col=c)
    title = steps[-1]["args"][1]["title.text"] if steps else "no generation finished"
    fig.update_layout(
        height=520, title=dict(text=title, x=0.01, y=0.98), margin=dict(t=110, b=40, l=70, r=20),
        legend=dict(orientation="h", x=0.5, xanchor="center", y=1.17),
        sliders=[dict(active=len(steps) - 1, steps=steps, currentvalue=dict(prefix="generation "),
                      pad=dict(t=60), len=1.0)] if steps else [],
    )
    return fig


# --------------------------------------------------------------------------- one candidate
LAYER_COLUMNS = ("#", "layer", "kind", "cycles", "power (mW)", "energy (mJ)", "latency (ms)",
                 "memory (KiB)", "weights")


def candidate_detail(i: int, r: EvaluationRecord, curves: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """What the page shows for candidate ``i``: hardware per layer (bars and table), the
    genotype in words and the training curves (``partial``: the search's; ``full``: finalize's)."""
    g = parse_genotype(r.genotype_nascaps)
    layers = estimate(g).layers
    labels = [f"{n + 1}. {lay.name}" for n, lay in enumerate(layers)]
    table = [
        [n + 1 for n in range(len(layers))], [lay.name for lay in layers], [lay.kind for lay in layers],
        [f"{lay.cycles:,}" for lay in layers], [f"{lay.power_mW:.2f}" for lay in layers],
        [f"{lay.energy_mJ:.4g}" for lay in layers], [f"{lay.latency_ms:.4g}" for lay in layers],
        [f"{lay.memory_bytes / 1024:,.1f}" for lay in layers], [f"{lay.weights:,}" for lay in layers],
    ]
    genes = "\n".join(f"  {n}: {d.kind_name:<4} in {d.in_size}x{d.in_size}x{d.in_channels}x{d.in_capsules}"
                      f"  kernel {d.kernel} stride {d.stride}  out {d.out_size}x{d.out_size}x"
                      f"{d.out_channels}x{d.out_capsules}" for n, d in enumerate(g.layers))

    def curve(kind: str) -> dict[str, list]:
        h = curves.get(kind) or []
        return {"x": [e["epoch"] for e in h],
                "y": [100 * e[f"{held_out_split(e)}_accuracy"] for e in h]}

    return {
        "title": f"Candidate {i} (generation {r.generation}): accuracy {100 * r.accuracy:.2f} %, "
                 f"{r.energy_mJ:.4g} mJ, {r.memory_KiB:,.1f} KiB, {r.latency_ms:.4g} ms",
        "genotype": f"{g.describe()}\nlayers (kind, in HxWxCxcaps, kernel, stride, out):\n{genes}\n"
                    f"NASCaps form: {r.genotype_nascaps}",
        "labels": labels,
        "energy": [lay.energy_mJ for lay in layers],
        "latency": [lay.latency_ms for lay in layers],
        "memory": [lay.memory_bytes / 1024 for lay in layers],
        "table": table,
        "partial": curve("partial"),
        "full": curve("full"),
        "has_curve": bool(curves),
    }


def detail_figure(d: dict[str, Any], table_rows: int | None = None):
    """Per-layer energy, latency and memory, the training curves and the per-layer table of one
    candidate (``table_rows``: the most layers any candidate of the page has, so that the table
    fits them all). Trace order (the page's script relies on it): 0-2 bars, 3-4 curves, 5 table."""
    from plotly.subplots import make_subplots

    table_px = 34 + 22 * (table_rows or len(d["labels"]))
    plots_px = 2 * 290
    height = plots_px + table_px + 200
    fig = make_subplots(
        rows=3, cols=2, row_heights=[290, 290, table_px], vertical_spacing=90 / height,
        horizontal_spacing=0.08,
        specs=[[{}, {}], [{}, {}], [{"type": "table", "colspan": 2}, None]],
        subplot_titles=("Energy per layer (mJ)", "Latency per layer (ms)", "Weight memory per layer (KiB)",
                        "Test accuracy per epoch (%)"),
    )
    for n, (key, color, unit) in enumerate((("energy", "#1f77b4", "mJ"), ("latency", "#ff7f0e", "ms"),
                                            ("memory", "#2ca02c", "KiB"))):
        fig.add_bar(x=d["labels"], y=d[key], marker_color=color, showlegend=False, name=key,
                    hovertemplate=f"%{{x}}: %{{y:.4g}} {unit}<extra></extra>", row=n // 2 + 1, col=n % 2 + 1)
    for key, name, color in (("partial", "partial training (search)", "#9467bd"),
                             ("full", "full training (finalize)", "#d62728")):
        fig.add_scatter(x=d[key]["x"], y=d[key]["y"], mode="lines+markers", name=name,
                        line=dict(color=color), hovertemplate=f"{name}: %{{y:.2f}} %<extra>epoch %{{x}}</extra>",
                        row=2, col=2)
    fig.add_table(header=dict(values=list(LAYER_COLUMNS), align="left", fill_color="#e7eaf2"),
                  cells=dict(values=d["table"], align="left"), columnwidth=[0.3, 1.2, 0.9, 1, 0.8, 0.9, 0.9, 0.9, 1],
                  row=3, col=1)
    fig.add_annotation(text="no training curve recorded for this candidate<br>(search with --keep-candidates, "
                            "or finalize it)", showarrow=False, xref="x domain", yref="y domain", x=0.5, y=0.5,
                       font=dict(color="#777"), visible=not d["has_curve"], row=2, col=2)
    fig.update_xaxes(tickangle=-45, tickfont=dict(size=9))
    fig.update_xaxes(tickangle=0, tickfont=dict(size=11), title_text="epoch", dtick=1, row=2, col=2)
    fig.update_layout(height=height, title=dict(text=d["title"], x=0.01), margin=dict(t=80, b=30, l=60, r=20),
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.04), bargap=0.25)
    return fig


# The only script of the page: a click on a point of the objectives plot shows that candidate.
_CLICK_SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById('candidate-data').textContent);
  var plot = document.getElementById('objectives');
  var detail = document.getElementById('candidate-detail');
  var text = document.getElementById('candidate-genotype');
  function show(i) {
    var c = data.candidates[String(i)];
    if (!c) { return; }
    Plotly.restyle(detail, {x: [c.labels, c.labels, c.labels, c.partial.x, c.full.x],
                            y: [c.energy, c.latency, c.memory, c.partial.y, c.full.y]}, [0, 1, 2, 3, 4]);
    Plotly.restyle(detail, {'cells.values': [c.table]}, [5]);
    var layout = {'title.text': c.title};
    layout['annotations[' + data.no_curve_annotation + '].visible'] = !c.has_curve;
    Plotly.relayout(detail, layout);
    text.textContent = c.genotype;
    detail.setAttribute('data-candidate', String(i));
  }
  detail.setAttribute('data-candidate', String(data.start));
  plot.on('plotly_click', function (event) {
    var p = event.points && event.points[0];
    if (p && p.customdata) { show(p.customdata[0]); }
  });
})();
"""


# --------------------------------------------------------------------------- the page
def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


CANDIDATE_COLUMNS = [
    ("index", "#", ""), ("generation", "gen", ""), ("epochs", "epochs", ""),
    ("accuracy", "accuracy (%)", _pct), ("energy_mJ", "energy (mJ)", ".4g"), ("memory_KiB", "memory (KiB)", ",.1f"),
    ("latency_ms", "latency (ms)", ".4g"), ("seconds", "seconds", ".1f"), ("description", "network", ""),
]


def _row(i: int, r: EvaluationRecord, front_keys: set[str]) -> dict[str, Any]:
    return {"index": i, **r.summary(), "pareto": r.key in front_keys, "description": _describe(r)}


def build_page(run_dir: str | Path) -> Page:
    """The report page of the search in ``run_dir``."""
    data = SearchData.read(run_dir)
    cfg = data.config
    training = cfg.get("training", {})
    records = data.records
    front = search_front(records, cfg)
    front_keys = {r.key for r in front}
    ok = _ok(records)
    page = Page(f"NASCaps search: {data.path.resolve().name}", str(data.path.resolve()))

    page.section("Summary", "summary")
    planned = cfg.get("generations")
    page.key_values([
        ("run id", data.info.get("run_id")),
        ("status", data.status),
        ("dataset", training.get("dataset")),
        ("generations finished", f"{len(data.generations)} of {planned + 1 if planned is not None else '?'} "
                                 "(the initial population is generation 0)"),
        ("population / offspring", f"{cfg.get('population')} / {cfg.get('offspring')}"),
        ("partial training", f"{training.get('epochs')} epoch(s), subset {format_value(training.get('subset'))}, "
                             f"test subset {format_value(training.get('test_subset'))}"),
        ("candidates evaluated", len(records)),
        ("failed", sum(not r.ok for r in records)),
        ("Pareto front (all candidates)", len(front)),
        ("evaluation time (sum)", f"{sum(r.seconds for r in records):.1f} s"),
        ("hardware model", "CapsAcc (capslab.hw), per inference"),
    ])
    if not ok:
        page.note("No candidate has been evaluated successfully yet: nothing to plot.")
        return page

    baselines = baseline_hardware()
    page.section("Pareto front", "front")
    page.text("Every pair of the four objectives (accuracy is maximised; energy, memory and latency "
              "are minimised, on log axes). The published baselines' accuracy is not part of the "
              "search: on the accuracy panels they are dashed lines at their hardware figures. "
              "Hover a point for its genotype; click it to see it below.", "muted")
    page.figure(objectives_figure(data, front_keys, baselines), "objectives")
    page.table([_row(i, r, front_keys) for i, r in enumerate(records) if r.key in front_keys],
               CANDIDATE_COLUMNS, element_id="front-table")

    page.section("Candidate", "candidate")
    details = {str(i): candidate_detail(i, r, data.curves.get(r.key, {})) for i, r in ok}
    start = max((i for i, r in ok if r.key in front_keys), key=lambda i: records[i].accuracy)
    figure = detail_figure(details[str(start)], max(len(d["labels"]) for d in details.values()))
    no_curve = len(figure.layout.annotations) - 1
    page.data("candidate-data", {"candidates": details, "start": start, "no_curve_annotation": no_curve})
    page.text("The most accurate front member is shown first; click any point of the plot above.", "muted")
    page.pre(details[str(start)]["genotype"], element_id="candidate-genotype")
    page.figure(figure, "candidate-detail")
    page.script(_CLICK_SCRIPT)

    page.section("Generations", "generations")
    page.text("Drag the slider to replay the search; the axes stay fixed.", "muted")
    page.figure(generations_figure(data), "generations-plot")
    page.table(generation_rows(data), GENERATION_COLUMNS, element_id="generation-table")

    page.section("Baselines", "baselines")
    page.text("The published networks on the same hardware model (their accuracy is not measured "
              "by the search).", "muted")
    page.table([{"name": k, **v} for k, v in baselines.items()],
               [("name", "network", ""), ("energy_mJ", "energy (mJ)", ".4g"),
                ("memory_KiB", "memory (KiB)", ",.1f"), ("latency_ms", "latency (ms)", ".4g")])

    final = read_json(data.path / "final" / "final.json", "final")
    if final is not None:
        page.section("Fully trained front", "final")
        page.table(final["rows"], [(c.key, c.header or c.key, c.render) for c in FINAL_COLUMNS]
                   + [("description", "network", "")])

    page.section("All candidates", "candidates")
    failed = [r for r in records if not r.ok]
    if failed:
        page.text(f"{len(failed)} candidate(s) failed; their reasons are in the table.", "muted")
    page.details(f"Every candidate ({len(records)}), in the order they were evaluated")
    page.table([_row(i, r, front_keys) for i, r in enumerate(records)],
               [*CANDIDATE_COLUMNS[:-1], ("status", "status", ""), ("pareto", "front", ""),
                ("reason", "reason", ""), CANDIDATE_COLUMNS[-1]],
               element_id="candidate-table",
               highlight=lambda row: "marked" if row["pareto"] else "")
    page.end_details()
    return page


GENERATION_COLUMNS = [
    ("generation", "generation", ""), ("new", "new candidates", ""), ("failed", "failed", ""),
    ("total", "evaluated so far", ""), ("front", "front so far", ""),
    ("best_accuracy", "best accuracy (%)", _pct), ("min_energy", "lowest energy (mJ)", ".4g"),
    ("min_memory", "lowest memory (KiB)", ",.1f"), ("min_latency", "lowest latency (ms)", ".4g"),
]


def generation_rows(data: SearchData) -> list[dict[str, Any]]:
    """Per generation: candidates it added, failures, totals so far and the front so far."""
    gens = sorted({g.generation for g in data.generations} | {r.generation for r in data.records})
    rows = []
    for g in gens:
        seen = [r for r in data.records if r.generation <= g]
        good = [r for r in seen if r.ok]
        rows.append({
            "generation": g,
            "new": sum(r.generation == g for r in data.records),
            "failed": sum(r.generation == g and not r.ok for r in data.records),
            "total": len(seen),
            "front": len(search_front(seen, data.config)),
            "best_accuracy": max((r.accuracy for r in good), default=None),
            "min_energy": min((r.energy_mJ for r in good), default=None),
            "min_memory": min((r.memory_KiB for r in good), default=None),
            "min_latency": min((r.latency_ms for r in good), default=None),
        })
    return rows
