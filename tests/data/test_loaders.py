"""Loaders for users' own CSV, Parquet and .npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedge.core.errors import DataError
from fedge.data import load_files, read_table
from fedge.data.loaders import read_files


def frame(n: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "f0": rng.normal(size=n),
            "f1": rng.normal(size=n),
            "label": rng.integers(0, 3, n),
            "device": np.arange(n) % 4,
        }
    )


def test_csv_with_client_column(tmp_path: Path) -> None:
    df = frame()
    df.to_csv(tmp_path / "d.csv", index=False)
    x, _, parts = load_files(tmp_path / "d.csv", client="device")
    assert x.shape == (12, 2) and x.dtype == np.float32
    assert parts is not None and len(parts) == 4
    for k, p in enumerate(parts):
        assert np.array_equal(p, np.flatnonzero(df.device.to_numpy() == k))
    np.testing.assert_allclose(x[:, 0], df.f0.to_numpy(), rtol=1e-6)


def test_parquet_pooled(tmp_path: Path) -> None:
    frame().drop(columns="device").to_parquet(tmp_path / "d.parquet")
    x, y, parts = load_files(tmp_path / "d.parquet")
    assert parts is None and x.shape == (12, 2) and y.dtype == np.int64


def test_folder_of_one_file_per_client(tmp_path: Path) -> None:
    for k in range(3):
        frame(5 + k, seed=k).drop(columns="device").to_csv(tmp_path / f"client{k}.csv", index=False)
    x, _, parts = load_files(tmp_path)
    assert parts is not None and [len(p) for p in parts] == [5, 6, 7]
    assert len(x) == 18


def test_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(8, 2, 2)), label=np.arange(8) % 2, cid=np.arange(8) // 4)
    x, _, parts = load_files(tmp_path / "d.npz", client="cid")
    assert x.shape == (8, 2, 2) and parts is not None and len(parts) == 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "nope.csv")


def test_nan_names_column_and_line(tmp_path: Path) -> None:
    df = frame()
    df.loc[4, "f1"] = np.nan
    df.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"'f1'.*line 6"):
        read_table(tmp_path / "d.csv")


def test_missing_label_column(tmp_path: Path) -> None:
    frame().drop(columns="label").to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match="no column 'label'"):
        read_table(tmp_path / "d.csv")


def test_non_numeric_column(tmp_path: Path) -> None:
    df = frame()
    df["f0"] = df["f0"].astype(object)
    df.loc[2, "f0"] = "oops"
    df.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match="'f0' is not numeric"):
        read_table(tmp_path / "d.csv")


def test_unknown_format(tmp_path: Path) -> None:
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(DataError, match="unknown format"):
        read_table(tmp_path / "d.xlsx")


def test_npz_with_nan(tmp_path: Path) -> None:
    x = np.ones((4, 3))
    x[2, 1] = np.inf
    np.savez(tmp_path / "d.npz", x=x, label=np.zeros(4))
    with pytest.raises(DataError, match="row 2"):
        read_table(tmp_path / "d.npz")


def test_string_client_ids_map_to_indices_and_keep_names(tmp_path: Path) -> None:
    df = frame()
    df["device"] = [f"car-{k:02d}" for k in (3, 1, 10, 2)] * 3
    df.to_csv(tmp_path / "d.csv", index=False)
    data = read_files(tmp_path / "d.csv", client="device")
    assert data.client_names == ["car-01", "car-02", "car-03", "car-10"]
    assert data.parts is not None
    for k, name in enumerate(data.client_names):
        assert data.parts[k].tolist() == np.flatnonzero(df.device.to_numpy() == name).tolist()


def test_string_labels_are_mapped_and_named(tmp_path: Path) -> None:
    df = frame()
    df["label"] = ["drowsy", "alert", "distracted"] * 4
    df.to_parquet(tmp_path / "d.parquet")
    data = read_files(tmp_path / "d.parquet")
    assert data.label_names == ["alert", "distracted", "drowsy"]
    assert data.y.tolist() == [2, 0, 1] * 4


def test_fractional_labels_stay_refused(tmp_path: Path) -> None:
    df = frame()
    df["label"] = df["label"].astype(float)
    df.loc[3, "label"] = 1.5
    df.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"'label'.*integer class ids or names; line 5 has 1.5"):
        read_files(tmp_path / "d.csv")


def test_missing_client_id_names_the_line(tmp_path: Path) -> None:
    df = frame()
    df["device"] = df["device"].astype(object)
    df.loc[6, "device"] = None
    df.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"column 'device' has a missing client id at line 8"):
        read_files(tmp_path / "d.csv", client="device")


def test_folder_names_clients_by_file_stem_and_shares_label_names(tmp_path: Path) -> None:
    labels = [["alert", "drowsy"], ["alert", "alert", "yawning"], ["drowsy"]]
    for name, ys in zip(["truck-b", "truck-a", "truck-c"], labels, strict=True):
        pd.DataFrame({"f0": np.arange(len(ys)), "label": ys}).to_csv(tmp_path / f"{name}.csv", index=False)
    data = read_files(tmp_path)
    assert data.client_names == ["truck-a", "truck-b", "truck-c"]
    assert data.label_names == ["alert", "drowsy", "yawning"]
    assert data.parts is not None and [len(p) for p in data.parts] == [3, 2, 1]
    assert data.y.tolist() == [0, 0, 2, 0, 1, 1]


def test_npz_with_string_labels_and_ids(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "d.npz",
        x=np.ones((4, 2)),
        label=np.array(["b", "a", "b", "c"]),
        cid=np.array(["x-2", "x-10", "x-2", "x-10"]),
    )
    data = read_files(tmp_path / "d.npz", client="cid")
    assert data.label_names == ["a", "b", "c"] and data.client_names == ["x-2", "x-10"]
    assert data.parts is not None and [p.tolist() for p in data.parts] == [[0, 2], [1, 3]]


def test_feature_columns_select_and_name_a_missing_one(tmp_path: Path) -> None:
    frame().to_csv(tmp_path / "d.csv", index=False)
    assert read_files(tmp_path / "d.csv", client="device", features=["f1"]).x.shape == (12, 1)
    with pytest.raises(DataError, match="no column 'f9'"):
        read_files(tmp_path / "d.csv", features=["f9"])
