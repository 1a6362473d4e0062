from __future__ import annotations

from pathlib import Path

import pytest

from fedge.core.errors import DataError
from fedge.llm.corpus import client_documents, corpus_documents, domain_documents, write_corpus, writer
from fedge.llm.text import client_files, read_documents


def test_same_seed_same_text_and_clients_differ() -> None:
    assert client_documents(3, 5, seed=1) == client_documents(3, 5, seed=1)
    assert client_documents(3, 5, seed=1) != client_documents(3, 5, seed=2)
    assert client_documents(0, 5) != client_documents(1, 5)


def test_each_writer_has_its_own_style() -> None:
    styles = {(writer(c).topic, writer(c).style) for c in range(16)}
    assert len(styles) == 16
    upper = next(c for c in range(16) if writer(c).style == "upper")
    assert all(d == d.upper() for d in client_documents(upper, 10))
    chatty = next(c for c in range(16) if writer(c).style == "chatty")
    assert all(d.startswith("so, ") for d in client_documents(chatty, 10))


@pytest.mark.parametrize("fmt", ["jsonl", "txt"])
def test_written_corpus_reads_back(tmp_path: Path, fmt: str) -> None:
    paths = write_corpus(tmp_path, num_clients=3, docs_per_client=4, seed=5, fmt=fmt)
    assert client_files(tmp_path) == paths
    for cid, p in enumerate(paths):
        assert read_documents(p) == client_documents(cid, 4, seed=5)


def test_bad_arguments() -> None:
    with pytest.raises(DataError, match="num_docs"):
        client_documents(0, 0)
    with pytest.raises(DataError, match="format"):
        write_corpus("unused", 1, 1, fmt="csv")


def test_domain_clients_write_their_own_kind_of_prose() -> None:
    manual, log, dialogue = (domain_documents(c, 6, seed=1) for c in range(3))
    assert domain_documents(0, 6, seed=1) == manual and domain_documents(0, 6, seed=2) != manual
    assert domain_documents(3, 6, seed=1) != manual  # same domain, another client: other documents
    assert all(d.endswith(".") and "\n" not in d for d in manual)
    assert all(line[:4] == "2024" and "sign: " in line for d in log for line in d.splitlines())
    for d in dialogue:
        lines = d.splitlines()
        assert lines[0::2] == [s for s in lines if s.startswith("Driver: ")]
        assert lines[1::2] == [s for s in lines if s.startswith("Assistant: ")]


def test_a_written_domain_corpus_reads_back(tmp_path: Path) -> None:
    paths = write_corpus(tmp_path, num_clients=3, docs_per_client=4, seed=5, kind="domains")
    for cid, p in enumerate(paths):
        assert read_documents(p) == domain_documents(cid, 4, seed=5) == corpus_documents("domains", cid, 4, seed=5)
    with pytest.raises(DataError, match="kind"):
        write_corpus(tmp_path, 1, 1, kind="poems")
