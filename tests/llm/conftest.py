"""Shared fixtures: one tiny random GPT-2 saved to disk per session, one PyTorch thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fedge.llm.model import build_tiny_base

    return build_tiny_base(
        tmp_path_factory.mktemp("tiny") / "base", n_layer=2, n_embd=32, n_head=2, n_positions=64, seed=0
    )
