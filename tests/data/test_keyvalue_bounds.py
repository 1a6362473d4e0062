"""Records that blow up Python's JSON or number handling are skipped and counted, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.core.errors import DataError
from fedge.data.keyvalue import read_records

GOOD = '{"client_id": "car-1", "label": "ok", "features": {"a": 1.5}}'
BAD = {
    "JSON nested too deeply": '{"client_id": "car-1", "label": "ok", "features": '
    + "[" * 200_000
    + "]" * 200_000
    + "}",
    "integer too large": '{"client_id": "car-1", "label": "ok", "features": {"a": ' + "9" * 5000 + "}}",
    "feature value out of float range": '{"client_id": "car-1", "label": "ok", "features": {"a": ' + "9" * 400 + "}}",
}


def test_each_explosive_record_is_skipped_and_counted_by_reason(tmp_path: Path) -> None:
    f = tmp_path / "records.jsonl"
    f.write_text("\n".join([GOOD, *BAD.values(), GOOD]) + "\n")
    records, stats = read_records(f)
    assert [r.features for r in records] == [{"a": 1.5}, {"a": 1.5}]
    assert stats.lines == 5 and stats.kept == 2
    assert dict(stats.skipped) == {reason: 1 for reason in BAD}


@pytest.mark.parametrize("reason", sorted(BAD))
def test_strict_mode_names_file_line_and_reason_in_one_line(tmp_path: Path, reason: str) -> None:
    f = tmp_path / "records.jsonl"
    f.write_text(GOOD + "\n" + BAD[reason] + "\n")
    with pytest.raises(DataError) as err:
        read_records(f, strict=True)
    assert str(err.value) == f"{f}:2: {reason}"
