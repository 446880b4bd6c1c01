"""Fast tests of `Experiment`'s bookkeeping: CPU determinism, table metadata, atomic writes and k-means clusters.

No test here trains a model. Hand-made images stand in for the profile's data sets.
"""

import dataclasses
import importlib.metadata
import json
import platform

import numpy as np
import pandas as pd
import pytest
import torch

import spanlib
from spanlib.data import ProfileData
from spanlib.profiles import ClusterConfig
from spanlib.reproduce import Experiment, with_overrides
from spanlib.reproduce.experiment import deterministic_on_cpu


def tiny_experiment(out, num_clusters: int = 2) -> Experiment:
    profile = with_overrides(spanlib.profile("quick"), n_train=6, n_test=3, max_epochs=1)
    profile = dataclasses.replace(profile, clusters=ClusterConfig(num_clusters=num_clusters, cluster_index=0))
    return Experiment(profile, out=out, progress=False)


def set_images(experiment: Experiment, train: torch.Tensor, test: torch.Tensor) -> None:
    """Put hand-made images in place of the profile's data sets (the `data` property caches its value here)."""
    labels = torch.zeros(len(train), dtype=torch.int64)
    experiment.__dict__["data"] = ProfileData(train, labels, test, torch.zeros(len(test), dtype=torch.int64), {})


def images_at(values, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Return one 1x16x16 image per value, each pixel equal to that value plus uniform noise."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 16, 16)
    return base + noise * torch.rand(base.shape, generator=generator)


# ---------------------------------------------------------------------------- deterministic mode


def test_deterministic_mode_only_inside_block():
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_on_cpu(torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
    assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_mode_restores_previous_setting():
    torch.use_deterministic_algorithms(True, warn_only=False)
    try:
        with pytest.raises(KeyError):
            with deterministic_on_cpu(torch.device("cpu")):
                assert torch.is_deterministic_algorithms_warn_only_enabled()
                raise KeyError("raised inside the block")
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_deterministic_mode_left_alone_on_cuda():
    with deterministic_on_cpu(torch.device("cuda")):  # a device object needs no GPU
        assert not torch.are_deterministic_algorithms_enabled()


def test_repeated_index_write_keeps_last_value():
    """Writing several rows to one index keeps the last row, on every repetition."""
    generator = torch.Generator().manual_seed(0)
    buffer = torch.zeros(4000, 1, 16, 16)
    indices = torch.randint(0, 50, (64,), generator=generator)  # 18 indices occur two to four times
    rows = torch.rand(64, 1, 16, 16, generator=generator)
    expected = buffer.clone()
    for index, row in zip(indices, rows):  # one write after the other: the last write wins
        expected[index] = row
    with deterministic_on_cpu(torch.device("cpu")):
        for _ in range(300):
            written = buffer.clone()
            written[indices] = rows
            assert torch.equal(written, expected)


class RecordingModel:
    """Stand-in for a trained model whose `save` writes a few bytes, so that the checkpoint exists."""

    def save(self, path):
        path.write_bytes(b"weights")


def test_training_runs_in_deterministic_mode(tmp_path, monkeypatch):
    experiment = tiny_experiment(tmp_path)
    set_images(experiment, images_at([0.1] * 6), images_at([0.1] * 3))
    modes = []

    def train(name, images):
        modes.append(torch.are_deterministic_algorithms_enabled())
        return RecordingModel()

    monkeypatch.setattr(experiment, "_train", train)
    experiment.model("ebm")
    assert modes == [True]
    assert not torch.are_deterministic_algorithms_enabled()
    assert (experiment.folder / "checkpoints" / "ebm.pt").read_bytes() == b"weights"


# ---------------------------------------------------------------------------- tables and run records


def test_metadata_names_profile_seed_versions_and_time(tmp_path):
    experiment = tiny_experiment(tmp_path)
    metadata = experiment.metadata(12.345)
    assert metadata["profile"] == "quick"
    assert metadata["seed"] == spanlib.profile("quick").seed
    assert metadata["wall_seconds"] == 12.35
    assert metadata["run"] == experiment.folder.name
    assert metadata["settings"]["clusters"]["num_clusters"] == 2
    versions = metadata["versions"]
    assert sorted(versions) == ["numpy", "python", "scikit-learn", "spanlib", "torch"]
    for package in ("spanlib", "numpy", "scikit-learn"):
        assert versions[package] == importlib.metadata.version(package), package
    # torch.__version__ keeps the local build tag ("+cu130") that the package metadata may leave out
    assert versions["torch"].startswith(importlib.metadata.version("torch"))
    assert versions["python"] == platform.python_version()


def test_write_table_csv_and_json(tmp_path):
    experiment = tiny_experiment(tmp_path)
    table = pd.DataFrame({"model": ["SPAN", "EiNet"], "auroc": [0.75, 1 / 3], "mse": [1.234567891234e-5, np.nan],
                          "images": [82, 7]})
    csv = experiment.write_table("demo", table, seconds=2.0)
    pd.testing.assert_frame_equal(pd.read_csv(csv), table)
    payload = json.loads(csv.with_suffix(".json").read_text())
    assert payload["rows"] == [  # floats at full precision, NaN as null
        {"model": "SPAN", "auroc": 0.75, "mse": 1.234567891234e-5, "images": 82},
        {"model": "EiNet", "auroc": 1 / 3, "mse": None, "images": 7},
    ]
    assert payload["metadata"]["wall_seconds"] == 2.0
    assert sorted(path.name for path in csv.parent.iterdir()) == ["demo.csv", "demo.json"]  # no partial files


def test_run_record_written_once(tmp_path):
    experiment = tiny_experiment(tmp_path)
    marker = experiment.folder / "profile.json"
    assert json.loads(marker.read_text()) == experiment.settings()
    assert [path.name for path in experiment.folder.iterdir() if path.is_file()] == ["profile.json"]
    again = tiny_experiment(tmp_path)  # the same configuration reuses the folder
    assert again.folder == experiment.folder


# ---------------------------------------------------------------------------- k-means cluster of the run


def test_cluster_test_images_join_nearest_mean(tmp_path):
    experiment = tiny_experiment(tmp_path)
    train = images_at([0.1, 0.1, 0.1, 0.1, 0.9, 0.9], noise=0.01)  # cluster 0 (the larger) is dark
    test = images_at([0.2, 0.8, 0.05, 0.45])
    set_images(experiment, train, test)
    cluster_train, cluster_test = experiment.cluster
    assert torch.equal(cluster_train, train[:4])
    # Brute force: the dark mean is near 0.105 and the bright one near 0.905, so 0.45 joins the dark cluster.
    assert torch.equal(cluster_test, test[[0, 2, 3]])


def test_cluster_without_test_images_warns(tmp_path):
    experiment = tiny_experiment(tmp_path)
    train = images_at([0.1, 0.1, 0.1, 0.1, 0.9, 0.9], noise=0.01)
    test = images_at([0.8, 0.95, 0.9])  # every test image is nearest to the bright cluster 1
    set_images(experiment, train, test)
    with pytest.warns(RuntimeWarning, match="no test image is nearest to cluster 0"):
        _, cluster_test = experiment.cluster
    assert torch.equal(cluster_test, test)
    assert np.isclose(float(cluster_test.mean()), float(test.mean()))
