"""The Hugging Face ``datasets`` source, on small local datasets the tests write (offline)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fedge.config.schema import DataConfig
from fedge.core.errors import DataError
from fedge.data.hf import load_hf, open_dataset
from fedge.data.sources import load_source

datasets = pytest.importorskip("datasets")
Image = pytest.importorskip("PIL.Image")


@pytest.fixture(autouse=True)
def _local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the library's cache of converted files inside the test's folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def images_with_writers(tmp_path: Path) -> Path:
    """FEMNIST-like: 4×4 grey images, a ClassLabel label and the writer id of each image."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (9, 4, 4), dtype=np.uint8)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=["zero", "one", "two"]),
            "writer": datasets.Value("string"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "image": [Image.fromarray(p) for p in pixels],
            "label": [0, 1, 2, 2, 1, 0, 1, 1, 2],
            "writer": ["w-10", "w-2", "w-2", "w-10", "w-7", "w-2", "w-7", "w-10", "w-2"],
        },
        features=features,
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    np.save(tmp_path / "pixels.npy", pixels)
    return tmp_path / "saved"


def test_saved_folder_with_images_and_natural_partition_by_writer(tmp_path: Path) -> None:
    path = images_with_writers(tmp_path)
    data = load_hf(str(path), client="writer")
    pixels = np.load(tmp_path / "pixels.npy")
    assert data.x.shape == (9, 4, 4) and data.x.dtype == np.float32
    np.testing.assert_allclose(data.x, pixels / 255.0, rtol=1e-6)
    assert data.label_names == ["zero", "one", "two"]
    assert data.y.tolist() == [0, 1, 2, 2, 1, 0, 1, 1, 2]
    assert data.client_names == ["w-2", "w-7", "w-10"]
    assert data.parts is not None and [p.tolist() for p in data.parts] == [[1, 2, 5, 8], [4, 6], [0, 3, 7]]


def test_hf_source_from_config_gives_one_client_per_id(tmp_path: Path) -> None:
    path = images_with_writers(tmp_path)
    d = DataConfig(dataset="hf", hf_name=str(path), client_column="writer", num_clients=50, test_fraction=0.25)
    fed = load_source(d, seed=0)
    assert fed.num_clients == 3 and fed.client_names == ["w-2", "w-7", "w-10"]
    assert fed.num_classes == 3 and fed.label_names == ["zero", "one", "two"]
    assert sorted(np.concatenate([fed.train.values, fed.test.values]).tolist()) == list(range(9))


def test_dataset_dict_split_is_chosen_and_a_missing_one_named(tmp_path: Path) -> None:
    train = datasets.Dataset.from_dict({"a": [1.0, 2.0], "label": [0, 1]})
    test = datasets.Dataset.from_dict({"a": [3.0], "label": [1]})
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dd"))
    assert load_hf(str(tmp_path / "dd"), split="test").x.tolist() == [[3.0]]
    with pytest.raises(DataError, match=r"has no split 'valid' \(splits: train, test\)"):
        open_dataset(str(tmp_path / "dd"), split="valid")


def test_local_csv_through_the_hf_source_with_string_labels(tmp_path: Path) -> None:
    rows = ["f0,f1,label,car", "1,2,drowsy,car-10", "3,4,alert,car-2", "5,6,alert,car-10", "7,8,yawning,car-2"]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    d = DataConfig(dataset="hf", hf_name=str(tmp_path / "d.csv"), client_column="car", test_fraction=0.0)
    fed = load_source(d, seed=0)
    assert fed.label_names == ["alert", "drowsy", "yawning"]
    assert fed.client_names == ["car-2", "car-10"]
    assert fed.x.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert fed.y.tolist() == [1, 0, 0, 2]
    assert [sorted(fed.train[k].tolist()) for k in range(2)] == [[1, 3], [0, 2]]


def test_pooled_rows_are_partitioned_by_the_configured_scheme(tmp_path: Path) -> None:
    ds = datasets.Dataset.from_dict({"v": [[float(i), 1.0] for i in range(40)], "label": [i % 4 for i in range(40)]})
    ds.save_to_disk(str(tmp_path / "pool"))
    d = DataConfig(dataset="hf", hf_name=str(tmp_path / "pool"), num_clients=5, partition="iid", test_fraction=0.0)
    fed = load_source(d, seed=1)
    assert fed.num_clients == 5 and fed.client_names is None and fed.x.shape == (40, 2)
    assert sorted(fed.train.values.tolist()) == list(range(40))


def test_text_feature_and_missing_column_are_one_line(tmp_path: Path) -> None:
    datasets.Dataset.from_dict({"text": ["hi", "yo"], "label": [0, 1]}).save_to_disk(str(tmp_path / "t"))
    with pytest.raises(DataError, match=r"column 'text' holds .* values; features must be numbers or images"):
        load_hf(str(tmp_path / "t"))
    with pytest.raises(DataError, match=r"no column 'user' \(columns: text, label\)"):
        load_hf(str(tmp_path / "t"), client="user")


def test_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.parquet: no such file"):
        open_dataset(str(tmp_path / "nope.parquet"))


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


def test_missing_datasets_package_says_which_extra() -> None:
    code = (
        "import sys; sys.modules['datasets'] = None\n"
        "from fedge.core.errors import DataError\n"
        "from fedge.data.hf import load_hf\n"
        "try:\n    load_hf('anything')\nexcept DataError as e:\n    print(e)\n"
    )
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "data.dataset = 'hf' needs the datasets package: pip install 'fedge[hf]'"


def test_hub_name_offline_fails_in_one_line_naming_the_dataset(tmp_path: Path) -> None:
    code = (
        "from fedge.core.errors import DataError\n"
        "from fedge.data.hf import load_hf\n"
        "try:\n    load_hf('someone/no-such-dataset')\nexcept DataError as e:\n    print(e)\n"
    )
    out = run_python(code, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "home"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    assert "cannot load 'someone/no-such-dataset' from the Hugging Face Hub" in lines[0]
