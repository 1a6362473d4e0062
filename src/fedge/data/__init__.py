"""Datasets, partitioners and loaders."""

from fedge.data.datasets import digits, federate, synthetic
from fedge.data.federated import FederatedDataset, Ragged, split_local
from fedge.data.loaders import load_files, read_table
from fedge.data.partition import dirichlet, iid, powerlaw, shards

__all__ = [
    "FederatedDataset",
    "Ragged",
    "digits",
    "dirichlet",
    "federate",
    "iid",
    "load_files",
    "powerlaw",
    "read_table",
    "shards",
    "split_local",
    "synthetic",
]
