"""The ``[data]`` sources that read what users already have: their files, Hugging Face, LEAF.

Each gives a :class:`~fedge.data.federated.FederatedDataset` that keeps the original
client and label names. When the data says who owns which rows (a client column, one
file per client, LEAF users) that natural partition is used; otherwise the pooled rows
are split by ``[data] partition`` among ``num_clients`` clients.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedge.core.errors import ConfigError
from fedge.data.datasets import partition_indices
from fedge.data.federated import FederatedDataset, split_local
from fedge.data.loaders import FileData, read_files

if TYPE_CHECKING:
    from fedge.config.schema import DataConfig

SOURCES = ("files", "hf", "leaf")


def is_natural(d: DataConfig) -> bool:
    """Whether the data itself says who owns which rows (so ``num_clients``/``partition`` are not used)."""
    if d.loader or d.dataset in ("synthetic", "synthetic-iid", "leaf"):
        return True
    if d.dataset == "files":
        return bool(d.client_column) or (bool(d.path) and Path(d.path).is_dir())
    return d.dataset == "hf" and bool(d.client_column)


def federate_file_data(data: FileData, d: DataConfig, *, seed: int, name: str) -> FederatedDataset:
    """Split each natural client's rows train/test, or partition the pooled rows as configured."""
    rng = np.random.default_rng(seed)
    parts = data.parts
    if parts is None:
        parts = partition_indices(
            data.y,
            d.num_clients,
            d.partition,
            rng,
            alpha=d.alpha,
            shards_per_client=d.shards_per_client,
            exponent=d.powerlaw_exponent,
        )
    train, test = split_local(parts, d.test_fraction, rng)
    return FederatedDataset(
        x=data.x,
        y=data.y,
        train=train,
        test=test,
        num_classes=len(data.label_names) if data.label_names else int(data.y.max()) + 1,
        name=name,
        client_names=data.client_names if data.parts is not None else None,
        label_names=data.label_names,
    )


def load_source(d: DataConfig, *, seed: int) -> FederatedDataset:
    """The federation of ``[data] dataset = "files" | "hf" | "leaf"``."""
    if d.dataset == "leaf":
        from fedge.data.leaf import load_leaf

        if not d.path:
            raise ConfigError("data.path: required when data.dataset = 'leaf' (a LEAF train folder or file)")
        return load_leaf(d.path, test_fraction=d.test_fraction, seed=seed, text_features=d.text_features)
    if d.dataset == "hf":
        from fedge.data.hf import load_hf

        data = load_hf(
            d.hf_name,
            split=d.hf_split,
            label=d.label_column,
            client=d.client_column or None,
            features=d.feature_columns,
        )
        return federate_file_data(data, d, seed=seed, name=Path(d.hf_name).name or d.hf_name)
    if not d.path:
        raise ConfigError("data.path: required when data.dataset = 'files'")
    data = read_files(d.path, label=d.label_column, client=d.client_column or None, features=d.feature_columns)
    return federate_file_data(data, d, seed=seed, name=Path(d.path).name)


__all__ = ["SOURCES", "federate_file_data", "is_natural", "load_source"]
