"""LEAF-format JSON, on tiny files of each kind written the way LEAF's scripts lay them out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.config.schema import DataConfig
from fedge.core.errors import DataError
from fedge.data.leaf import LEAF_LETTERS, bag_of_words, load_leaf
from fedge.data.sources import load_source


def write_split(folder: Path, name: str, users: dict[str, tuple[list[Any], list[Any]]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "users": list(users),
        "num_samples": [len(y) for _, y in users.values()],
        "user_data": {u: {"x": x, "y": y} for u, (x, y) in users.items()},
    }
    (folder / name).write_text(json.dumps(doc))


def femnist(rng: np.random.Generator) -> dict[str, tuple[list[Any], list[Any]]]:
    users = {}
    for u, n in (("f0010_22", 3), ("f0002_07", 2), ("f0003_11", 4)):
        users[u] = (rng.random((n, 784)).round(3).tolist(), rng.integers(0, 62, n).tolist())
    return users


def test_femnist_like_train_and_test_folders(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train, test = femnist(rng), femnist(rng)
    root = tmp_path / "femnist" / "data"
    write_split(root / "train", "all_data_0_train_9.json", dict(list(train.items())[:2]))
    write_split(root / "train", "all_data_1_train_9.json", dict(list(train.items())[2:]))
    write_split(root / "test", "all_data_0_test_9.json", test)
    fed = load_leaf(root / "train")
    assert fed.name == "femnist"
    assert fed.client_names == ["f0002_07", "f0003_11", "f0010_22"]
    assert fed.feature_shape == (784,) and fed.label_names is None
    for k, user in enumerate(fed.client_names):
        cd = fed.client(k)
        np.testing.assert_allclose(cd.x_train, np.asarray(train[user][0], dtype=np.float32))
        assert cd.y_train.tolist() == train[user][1]
        np.testing.assert_allclose(cd.x_test, np.asarray(test[user][0], dtype=np.float32))
        assert cd.y_test.tolist() == test[user][1]
    all_labels = [v for _, y in [*train.values(), *test.values()] for v in y]
    assert fed.num_classes == max(all_labels) + 1


def test_without_a_test_folder_each_user_is_split(tmp_path: Path) -> None:
    users = femnist(np.random.default_rng(1))
    write_split(tmp_path / "train", "d.json", users)
    fed = load_leaf(tmp_path / "train", test_fraction=0.5, seed=3)
    sizes = {u: len(y) for u, (_, y) in users.items()}
    for k, user in enumerate(fed.client_names or []):
        assert len(fed.train[k]) + len(fed.test[k]) == sizes[user]
        assert len(fed.test[k]) == min(round(sizes[user] * 0.5), sizes[user] - 1)


def test_user_split_test_users_form_the_central_set(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    users = femnist(rng)
    names = list(users)
    write_split(tmp_path / "d" / "train", "a_train_1.json", {u: users[u] for u in names[:2]})
    write_split(tmp_path / "d" / "test", "a_test_1.json", {names[2]: users[names[2]]})
    fed = load_leaf(tmp_path / "d" / "train" / "a_train_1.json")
    assert fed.num_clients == 2 and names[2] not in (fed.client_names or [])
    x_c, y_c = fed.central()
    assert y_c.tolist() == users[names[2]][1]
    np.testing.assert_allclose(x_c, np.asarray(users[names[2]][0], dtype=np.float32))


def test_shakespeare_like_text_becomes_character_indices(tmp_path: Path) -> None:
    line = "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suf"
    assert len(line) == 81
    users = {
        "THE_TRAGEDY_OF_HAMLET_HAMLET": ([line[:80], line[1:81]], [line[80], "f"]),
        "AS_YOU_LIKE_IT_ROSALIND": ([line[:80]], [line[80]]),
    }
    write_split(tmp_path / "train", "s.json", users)
    fed = load_source(DataConfig(dataset="leaf", path=str(tmp_path / "train"), test_fraction=0.0), seed=0)
    assert fed.num_classes == 80 and fed.label_names == list(LEAF_LETTERS)
    assert fed.client_names == ["AS_YOU_LIKE_IT_ROSALIND", "THE_TRAGEDY_OF_HAMLET_HAMLET"]
    cd = fed.client(0)
    assert cd.x_train.shape == (1, 80)
    assert "".join(LEAF_LETTERS[int(i)] for i in cd.x_train[0]) == line[:80]
    assert LEAF_LETTERS[int(cd.y_train[0])] == line[80]


def test_characters_outside_leaf_vocabulary_use_the_datas_own(tmp_path: Path) -> None:
    write_split(tmp_path / "train", "s.json", {"u": (["ab{é", "b{éa"], ["é", "a"])})
    fed = load_leaf(tmp_path / "train", test_fraction=0.0)
    assert fed.label_names == ["a", "b", "{", "é"]
    assert sorted(fed.y.tolist()) == [0, 3]


def test_sent140_like_tweets_become_hashed_bags_of_words(tmp_path: Path) -> None:
    tweets = [
        ["1467810369", "Mon Apr 06 22:19:45 PDT 2009", "NO_QUERY", "alice", "so happy today happy"],
        ["1467810672", "Mon Apr 06 22:19:49 PDT 2009", "NO_QUERY", "alice", "sad sad day"],
    ]
    write_split(tmp_path / "train", "t.json", {"alice": (tweets, [1, 0])})
    fed = load_leaf(tmp_path / "train", test_fraction=0.0, text_features=64)
    assert fed.feature_shape == (64,)
    expected = bag_of_words(["so happy today happy", "sad sad day"], 64)
    np.testing.assert_array_equal(fed.x, expected)
    assert fed.y.tolist() == [1, 0]
    assert expected[0].sum() == 4 and expected[1].max() >= 2


def test_unsupported_kinds_and_broken_files_are_one_line(tmp_path: Path) -> None:
    write_split(tmp_path / "celeba" / "train", "c.json", {"u": (["img_001.jpg"], [1])})
    with pytest.raises(DataError, match="CelebA and Reddit are not supported"):
        load_leaf(tmp_path / "celeba" / "train")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "b.json").write_text('{"users": ["u"], "user_data": {"u": {"x": [[1]], "y": [1, 2]}}}')
    with pytest.raises(DataError, match=r"b\.json: user 'u' has 1 x, 2 y"):
        load_leaf(tmp_path / "bad")
    (tmp_path / "bad" / "b.json").write_text('{"users": [')
    with pytest.raises(DataError, match=r"b\.json:1: not valid JSON"):
        load_leaf(tmp_path / "bad")
    with pytest.raises(DataError, match=r"no \.json files"):
        load_leaf(tmp_path / "celeba")
