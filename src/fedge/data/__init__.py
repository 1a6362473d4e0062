"""Datasets, partitioners and loaders: built-ins, your own files, Hugging Face ``datasets`` and LEAF."""

from fedge.data.datasets import digits, federate, synthetic
from fedge.data.federated import FederatedDataset, Ragged, split_local
from fedge.data.hf import load_hf
from fedge.data.leaf import load_leaf
from fedge.data.loaders import FileData, load_files, read_files, read_table
from fedge.data.partition import dirichlet, iid, powerlaw, shards

__all__ = [
    "FederatedDataset",
    "FileData",
    "Ragged",
    "digits",
    "dirichlet",
    "federate",
    "iid",
    "load_files",
    "load_hf",
    "load_leaf",
    "powerlaw",
    "read_files",
    "read_table",
    "shards",
    "split_local",
    "synthetic",
]
