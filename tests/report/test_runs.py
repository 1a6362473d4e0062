from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedge.core.errors import DataError
from fedge.report.runs import load_run


def test_reads_a_real_run(real_run: Path) -> None:
    run = load_run(real_run)
    assert len(run.history) == 3
    assert run.label_histogram is not None and len(run.label_histogram) == 6
    assert len(run.client_accuracy()) == 6
    rounds, acc = run.series("test_accuracy")
    assert rounds == [1, 2, 3] and all(0 <= a <= 1 for a in acc)
    assert run.sim_hours() is None


def test_simulated_hours_from_clock_and_from_durations(rich_run: Path, tmp_path: Path) -> None:
    assert load_run(rich_run).sim_hours() == pytest.approx([0.25 * r for r in range(1, 7)])
    lines = []
    for line in (rich_run / "metrics.jsonl").read_text().splitlines():
        d = json.loads(line)
        d["extra"] = {"sim_time_s": 1800.0}
        lines.append(json.dumps(d))
    other = tmp_path / "durations"
    other.mkdir()
    (other / "metrics.jsonl").write_text("\n".join(lines))
    assert load_run(other).sim_hours() == pytest.approx([0.5 * r for r in range(1, 7)])


def test_missing_folder_and_metrics_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such directory"):
        load_run(tmp_path / "absent")
    with pytest.raises(DataError, match=r"metrics\.jsonl: missing"):
        load_run(tmp_path)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("{not json", "corrupt metrics line"),
        ("[1, 2]", "expected a JSON object"),
        ('{"participants": 3}', "'round' must be an integer"),
        ('{"round": "two", "participants": 3}', "'round' must be an integer"),
    ],
)
def test_corrupt_metrics_line_names_file_and_line(rich_run: Path, line: str, why: str) -> None:
    path = rich_run / "metrics.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"metrics\.jsonl:3: {why}"):
        load_run(rich_run)


def test_empty_metrics_and_corrupt_side_files(rich_run: Path) -> None:
    (rich_run / "partition.json").write_text('{"label_histogram": 5}')
    with pytest.raises(DataError, match=r"partition\.json: 'label_histogram'"):
        load_run(rich_run)
    (rich_run / "partition.json").write_text("{")
    with pytest.raises(DataError, match=r"partition\.json:1: corrupt JSON"):
        load_run(rich_run)
    (rich_run / "metrics.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no rounds recorded"):
        load_run(rich_run)
