"""The trace loader admits plain values in bounded numbers: no pickle can call or allocate its way out."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest

from fedge.core.errors import DataError
from fedge.devices import availability
from fedge.devices.availability import load_trace

TRACE = {1: {"active": [0.0, 50.0], "inactive": [10.0, 60.0], "finish_time": 100.0, "model": "x"}}


def _bytes_of(n: int) -> bytes:
    """A 28-byte pickle that calls ``bytes(n)``: n bytes allocated by a tiny file."""
    return b"\x80\x04\x8c\x08builtins\x8c\x05bytes\x93J" + struct.pack("<i", n) + b"\x85R."


def test_a_tiny_pickle_asking_for_a_huge_allocation_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "bomb.pkl"
    f.write_bytes(_bytes_of(1_500_000_000))
    assert f.stat().st_size < 43
    with pytest.raises(DataError, match=r"bomb\.pkl: not a FedScale trace pickle: refusing to load builtins\.bytes$"):
        load_trace(f)


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("reduce", b"\x80\x04]\x94)R.", "refusing opcode REDUCE"),
        ("truncated", pickle.dumps(TRACE)[:-9], "not a FedScale trace pickle"),
        ("bytes8 claims 1 TiB", b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"ab.", "not a FedScale trace pickle"),
        ("long text number", b"\x80\x02L" + b"9" * 6000 + b"L\n.", "not a FedScale trace pickle"),
    ],
)
def test_malformed_or_calling_pickles_are_one_line_errors(tmp_path: Path, name: str, data: bytes, problem: str) -> None:
    f = tmp_path / "t.pkl"
    f.write_bytes(data)
    with pytest.raises(DataError) as err:
        load_trace(f)
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_counts_of_values_containers_and_windows_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "t.pkl"
    f.write_bytes(pickle.dumps(TRACE))
    assert len(load_trace(f).traces) == 1
    monkeypatch.setattr(availability, "MAX_TRACE_CONTAINERS", 3)
    with pytest.raises(DataError, match="containers"):
        load_trace(f)
    monkeypatch.undo()
    shared = [float(i) for i in range(100)]
    many = {i: {"active": shared, "inactive": shared, "finish_time": 1e3} for i in range(50)}
    f.write_bytes(pickle.dumps(many))  # the pickle memo shares one list among every client
    monkeypatch.setattr(availability, "MAX_TRACE_WINDOWS", 1000)
    with pytest.raises(DataError, match="more than 1000 online windows"):
        load_trace(f)


def test_file_size_is_bounded_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "t.json"
    f.write_text(json.dumps({str(k): v for k, v in TRACE.items()}))
    monkeypatch.setattr(availability, "MAX_TRACE_BYTES", 16)
    with pytest.raises(DataError, match=r"t\.json: trace file larger than"):
        load_trace(f)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[" * 200_000 + "]" * 200_000, "RecursionError"),
        ('{"1": {"active": [' + "9" * 5000 + '], "inactive": [1], "finish_time": 2}}', "ValueError"),
        ('{"1": {"active": [' + "9" * 400 + '], "inactive": [1], "finish_time": 2}}', "OverflowError"),
        ('{"1": {"active": [0], "inactive": [1], "finish_time": 1e999}}', "times must be finite"),
    ],
)
def test_json_traces_that_blow_up_numbers_or_nesting_are_one_line_errors(
    tmp_path: Path, text: str, problem: str
) -> None:
    f = tmp_path / "t.json"
    f.write_text(text)
    with pytest.raises(DataError) as err:
        load_trace(f)
    assert problem in str(err.value) and "\n" not in str(err.value)
