"""Per-client text: read plain-text or JSON-lines files, split, tokenise and pack.

Packing (as in GPT-2 and most causal-LM fine-tuning recipes) joins a client's
documents into one token stream, separated by the end-of-text token, and cuts it into
fixed-length blocks, so no compute is spent on padding.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedge.core.errors import DataError

TEXT_SUFFIXES = (".txt", ".jsonl")
Blocks = npt.NDArray[np.int64]


def read_documents(path: str | Path, text_field: str = "text") -> list[str]:
    """The documents of one client file.

    ``.txt``: documents are paragraphs separated by blank lines. ``.jsonl``: one JSON
    object per line, the document under ``text_field``.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such text file")
    if p.suffix not in TEXT_SUFFIXES:
        raise DataError(f"{p}: expected a .txt or .jsonl file")
    raw = p.read_text(encoding="utf-8")
    if p.suffix == ".txt":
        docs = [d.strip() for d in raw.replace("\r\n", "\n").split("\n\n")]
        return [d for d in docs if d]
    out = []
    for i, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}:{i}: not valid JSON: {exc.msg}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
            raise DataError(f"{p}:{i}: expected an object with a string field {text_field!r}")
        out.append(obj[text_field])
    return out


def client_files(folder: str | Path) -> list[Path]:
    """One file per client in ``folder`` (``*.txt`` or ``*.jsonl``), sorted by name."""
    d = Path(folder)
    if not d.is_dir():
        raise DataError(f"{d}: no such folder of client text files")
    files = sorted(p for p in d.iterdir() if p.suffix in TEXT_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{d}: no .txt or .jsonl client files in this folder")
    return files


def split_documents(docs: Sequence[str], test_fraction: float, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Shuffle and hold out ``test_fraction`` of the documents (at least one if any)."""
    if not 0 <= test_fraction < 1:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}")
    order = rng.permutation(len(docs))
    n_test = 0 if test_fraction == 0 else max(1, round(test_fraction * len(docs)))
    if len(docs) - n_test < 1:
        raise DataError(f"{len(docs)} documents are too few to hold out {n_test} for testing")
    test = [docs[i] for i in order[:n_test]]
    train = [docs[i] for i in order[n_test:]]
    return train, test


def pack(token_lists: Sequence[Sequence[int]], block_size: int, eos_id: int, *, what: str = "text") -> Blocks:
    """Join token lists with ``eos_id`` and cut the stream into ``(n, block_size)`` blocks.

    The tail shorter than a block is dropped; text too short for one block is an error.
    """
    if block_size < 2:
        raise DataError(f"block_size must be >= 2, got {block_size}")
    stream: list[int] = []
    for toks in token_lists:
        stream.extend(int(t) for t in toks)
        stream.append(eos_id)
    n = len(stream) // block_size
    if n == 0:
        raise DataError(f"{what}: {len(stream)} tokens, fewer than one block of {block_size}")
    return np.asarray(stream[: n * block_size], dtype=np.int64).reshape(n, block_size)


def tokenise_and_pack(
    docs: Sequence[str], encode: Callable[[str], list[int]], block_size: int, eos_id: int, *, what: str = "text"
) -> Blocks:
    """Tokenise each document with ``encode`` and :func:`pack` the result."""
    return pack([encode(d) for d in docs], block_size, eos_id, what=what)
