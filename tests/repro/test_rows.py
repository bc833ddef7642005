"""The row format of the reproduction tables: values, verdicts, scale notes, Markdown."""

from __future__ import annotations

import pytest

from capslab.errors import ConfigError
from capslab.repro.common import SCALES, format_duration
from capslab.repro.rows import (
    COLUMNS,
    NO_PAPER_NUMBER,
    NOT_MEASURED,
    NOT_REPRODUCED,
    REPRODUCED,
    Row,
    differences,
    format_value,
    judged,
    relative,
    results_markdown,
    row_cells,
    rows_markdown,
    within,
)


def _row(**kw) -> Row:
    base = dict(experiment="capsnet", claim="accuracy", paper=0.9937, source="paper",
                measured=0.9925, unit="accuracy", settings="s", seeds=[0])
    return Row(**{**base, **kw})


def test_values_are_shown_in_their_unit():
    assert format_value(0.99375, "accuracy") == "99.38 %"  # fractions in files, % on screen
    assert format_value(8_215_568, "parameters") == "8.22 M"
    assert format_value(8572.6, "KiB") == "8,572.6 KiB"
    assert format_value(None, "mJ") == format_value(float("nan"), "mJ") == "-"


def test_verdicts():
    assert within(_row(), 0.002).verdict == REPRODUCED  # 0.12 points apart
    assert within(_row(), 0.001).verdict == NOT_REPRODUCED
    assert within(_row(), 0.002).criterion == "|CapsLab - paper| <= 0.20 points"
    # the paper's printed digits: 88.80 reproduces a value that rounds to it
    assert within(_row(unit="mJ", paper=88.80, measured=88.8049), 0.005).verdict == REPRODUCED
    assert within(_row(unit="mJ", paper=88.80, measured=88.806), 0.005).verdict == NOT_REPRODUCED
    assert relative(_row(unit="MiB/block", paper=4.0, measured=5.9), 0.5).verdict == REPRODUCED
    assert relative(_row(unit="MiB/block", paper=4.0, measured=6.1), 0.5).verdict == NOT_REPRODUCED
    assert judged(_row(), False, "x").verdict == NOT_REPRODUCED
    assert _row(paper=None).verdict == NO_PAPER_NUMBER
    missing = within(_row(measured=None), 0.01)
    assert missing.verdict == NOT_MEASURED and missing.criterion


def test_rows_refuse_what_cannot_be_written():
    with pytest.raises(ConfigError, match="unit"):
        _row(unit="percent")
    with pytest.raises(ConfigError, match="variant"):
        _row(variant="theirs")
    with pytest.raises(ValueError, match="not finite"):
        _row(measured=float("inf"))


def test_scale_differences_in_words():
    paper = {"training images": 60_000, "epochs": 30, "runs": 5, "model": "full"}
    assert differences(paper, paper) == ""
    got = differences({"training images": 1000, "epochs": 30, "runs": 1, "model": "tiny"}, paper)
    assert got == "1,000 of 60,000 training images; 1 of 5 runs; model tiny (paper: full)"


def test_markdown_table_has_one_line_per_row_and_escapes_pipes():
    rows = [within(_row(claim="a | b", measured_by=["capsnet/mnist/seed0/summary.json"],
                        key="best_test_accuracy"), 0.002).to_dict(), _row(paper=None).to_dict()]
    text = rows_markdown(rows)
    lines = text.strip().splitlines()
    assert lines[0] == "| " + " | ".join(COLUMNS) + " |"
    assert len(lines) == 2 + len(rows)
    assert all(line.count(" | ") == len(COLUMNS) - 1 for line in lines[2:])  # pipes escaped
    cells = row_cells(rows[0])
    assert cells[2] == "99.37 % (paper)" and cells[3] == "99.25 %"
    assert cells[-1] == "`capsnet/mnist/seed0/summary.json`: best_test_accuracy"
    assert cells[7] == "as in the paper"


def test_results_markdown_names_commands_machine_and_experiments():
    row = within(_row(), 0.002).to_dict()
    result = {"name": "capsnet", "title": "t", "scale": "cpu", "seconds": 3.0, "rows": [row],
              "not_run": ["something"], "notes": []}
    text = results_markdown({
        "scale": "cpu", "commands": ["capslab repro capsnet --scale cpu --out d"],
        "started": "2024-01-01T00:00:00", "finished": "2024-01-01T01:00:00",
        "machine": {"cpu": "AMD EPYC", "threads": 2, "device": "cpu", "torch": "2",
                    "python": "3.11", "platform": "Linux"},
        "experiments": {"capsnet": result}, "rows": [row]})
    assert "capslab repro capsnet --scale cpu --out d" in text
    assert "AMD EPYC, 2 torch threads" in text and "## `capsnet`: t" in text
    assert "- something" in text and "1 reproduced" in text


def test_durations_and_scales():
    assert format_duration(42) == "42 s"
    assert format_duration(45 * 60) == "45 min"
    assert format_duration(3 * 3600 + 5 * 60) == "3 h 05 min"
    assert format_duration(5 * 86400) == "5.0 days"
    assert SCALES == ("smoke", "cpu", "paper")
