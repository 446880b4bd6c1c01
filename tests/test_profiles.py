"""Tests of the run profiles: selection by name and env var, the paper's values, JSON export, device fallback.

"The paper" here is the SPAN paper (Yu, Dhami and Kersting, arXiv:2109.06587).
"""

import dataclasses
import json
import warnings

import pytest
import torch

from spanlib.data import DATASETS
from spanlib.profiles import PROFILE_NAMES, profile


def test_default_is_quick_and_env_var_selects(monkeypatch):
    monkeypatch.delenv("SPANLIB_PROFILE", raising=False)
    assert profile().name == "quick"
    monkeypatch.setenv("SPANLIB_PROFILE", "paper")
    assert profile().name == "paper"
    assert profile("colab").name == "colab"  # an explicit name wins over the env var


def test_unknown_profile_lists_valid_names(monkeypatch):
    with pytest.raises(ValueError) as info:
        profile("full")
    for name in ("quick", "colab", "paper"):
        assert name in str(info.value)
    monkeypatch.setenv("SPANLIB_PROFILE", "nonsense")
    with pytest.raises(ValueError, match="nonsense"):
        profile()


def test_paper_profile_matches_the_paper():
    p = profile("paper")
    assert (p.data.in_distribution, p.data.ood) == ("svhn", ("mnist", "semeion", "cifar10"))
    assert (p.data.image_size, p.data.channels, p.data.n_train, p.data.n_test) == (32, 3, None, None)
    assert (p.einet.K, p.einet.depth, p.einet.replicas, p.einet.leaf) == (5, 4, 100, "normal")
    e = p.encoder
    assert (e.patch_size, e.depth, e.heads, e.d_model, e.d_ff, e.head) == (8, 2, 16, 1024, 512, "lowrank")
    t = p.train
    assert (t.warmup_epochs, t.coordinate_epochs, t.finetune_epochs, t.einet_em_epochs) == (5, 10, 15, 30)
    assert p.clusters.num_clusters == 100
    assert p.device == "cuda"


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_profiles_are_consistent(name):
    p = profile(name)
    for data_set in (p.data.in_distribution, *p.data.ood):
        assert data_set in DATASETS
    assert p.data.image_size % p.encoder.patch_size == 0
    assert p.encoder.d_model % p.encoder.heads == 0
    assert 0 <= p.clusters.cluster_index < p.clusters.num_clusters
    assert p.einet.min_var < p.einet.max_var
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.seed = 1  # type: ignore[misc]


def test_quick_profile_is_small_and_offline():
    p = profile("quick")
    assert p.device == "cpu"
    assert all(DATASETS[name].offline for name in (p.data.in_distribution, *p.data.ood))
    assert len(p.data.ood) >= 3
    assert p.einet.replicas <= 20 and p.encoder.d_model <= 64


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_as_dict_is_json_ready(name):
    d = profile(name).as_dict()
    again = json.loads(json.dumps(d))
    assert again == d
    assert d["name"] == name and isinstance(d["data"]["ood"], list)
    assert d["einet"]["K"] == profile(name).einet.K


def test_torch_device_falls_back_to_cpu_with_a_warning(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        assert profile("paper").torch_device() == torch.device("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CPU profile must not warn
        assert profile("quick").torch_device() == torch.device("cpu")
