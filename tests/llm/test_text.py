from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.core.errors import DataError
from fedge.llm.text import client_files, pack, read_documents, split_documents


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 99), max_size=30), min_size=1, max_size=8), st.integers(2, 16))
def test_pack_is_the_eos_joined_stream_cut_into_blocks(docs: list[list[int]], block: int) -> None:
    stream = [t for d in docs for t in [*d, 100]]
    if len(stream) < block:
        with pytest.raises(DataError, match="fewer than one block"):
            pack(docs, block, eos_id=100)
        return
    blocks = pack(docs, block, eos_id=100)
    n = len(stream) // block
    assert blocks.shape == (n, block) and blocks.dtype == np.int64
    assert blocks.ravel().tolist() == stream[: n * block]


def test_txt_paragraphs_and_jsonl_objects(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first doc\nline two\n\n\nsecond doc\n")
    (tmp_path / "b.jsonl").write_text('{"text": "one"}\n\n{"text": "two", "x": 1}\n')
    (tmp_path / "notes.md").write_text("ignored")
    assert read_documents(tmp_path / "a.txt") == ["first doc\nline two", "second doc"]
    assert read_documents(tmp_path / "b.jsonl") == ["one", "two"]
    assert [p.name for p in client_files(tmp_path)] == ["a.txt", "b.jsonl"]


def test_bad_files_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(DataError, match=r"c\.jsonl:2: not valid JSON"):
        read_documents(bad)
    bad.write_text('{"body": "no text"}\n')
    with pytest.raises(DataError, match="string field 'text'"):
        read_documents(bad)
    with pytest.raises(DataError, match="no such text file"):
        read_documents(tmp_path / "missing.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \.txt or \.jsonl"):
        client_files(tmp_path / "empty")
    with pytest.raises(DataError, match="no such folder"):
        client_files(tmp_path / "missing")


def test_split_holds_out_a_share_and_keeps_every_document() -> None:
    docs = [f"d{i}" for i in range(10)]
    train, test = split_documents(docs, 0.2, np.random.default_rng(0))
    assert len(test) == 2 and sorted(train + test) == sorted(docs)
    with pytest.raises(DataError, match="too few"):
        split_documents(["only"], 0.5, np.random.default_rng(0))
