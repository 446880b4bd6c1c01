"""End-to-end tests of the reproduction pipeline: `python -m spanlib reproduce`, `Experiment` and Figure 2.

The command line runs the quick profile at a tiny size (100 training images, 30 images per test
set, one epoch of everything). That run took about 40 s of CPU time on two shared CPU cores. The
other tests train single models at that size in-process.
"""

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import sklearn
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)

import spanlib  # noqa: E402
from spanlib.plots import score_histograms, symlog_threshold  # noqa: E402
from spanlib.reproduce import (  # noqa: E402
    MODEL_LABELS,
    PAPER_ROLE,
    PAPER_TABLE1,
    PAPER_TABLE2,
    CheckpointMismatchError,
    Experiment,
    with_overrides,
)

N_TRAIN, N_TEST, MAX_EPOCHS = 100, 30, 1
CLI_ARGS = ["--profile", "quick", "--n-train", str(N_TRAIN), "--n-test", str(N_TEST),
            "--max-epochs", str(MAX_EPOCHS), "--quiet"]
OOD_MODELS = ["span", "ebm", "einet", "maf", "vae"]
INPAINTING_MODELS = ["span", "einet", "ebm"]
TABLES = ("ood", "inpainting", "weight_entropy")
FIGURES = [*(f"figure2_{name}" for name in OOD_MODELS), "figure4_samples", "figure4_inpainting", "figure1_weights"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Tests that run the command line or train models; `pytest -m 'not slow'` skips them.
SLOW = pytest.mark.slow


def tiny_profile(n_train: int = N_TRAIN):
    """Return the quick profile at the command line's tiny size (the same settings give the same run folder)."""
    return with_overrides(spanlib.profile("quick"), n_train, N_TEST, MAX_EPOCHS)


def tiny_experiment(out: Path, n_train: int = N_TRAIN) -> Experiment:
    return Experiment(tiny_profile(n_train), out=out, progress=False, baseline_max_epochs=MAX_EPOCHS)


def run_cli(out: Path, task: str = "all") -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("SPANLIB_RESULTS", "SPANLIB_PROFILE")}
    return subprocess.run([sys.executable, "-m", "spanlib", "reproduce", task, *CLI_ARGS, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=900)


def run_folder(root: Path) -> Path:
    folders = [path for path in root.iterdir() if path.is_dir()]
    assert len(folders) == 1, f"expected one run folder under {root}, found {folders}"
    return folders[0]


def read_table(folder: Path, name: str) -> tuple[pd.DataFrame, dict]:
    payload = json.loads((folder / "tables" / f"{name}.json").read_text())
    return pd.read_csv(folder / "tables" / f"{name}.csv"), payload


def state_tensors(model) -> dict[str, torch.Tensor]:
    module = getattr(model, "model", model)  # circuits come wrapped in an ImageCircuit
    return {key: value.detach().cpu() for key, value in module.state_dict().items()}


def rank_auroc(scores_in: np.ndarray, scores_out: np.ndarray) -> float:
    """AUROC as the Mann-Whitney statistic: P(in > out) + P(in = out) / 2 over all pairs."""
    greater = (scores_in[:, None] > scores_out[None, :]).mean()
    ties = (scores_in[:, None] == scores_out[None, :]).mean()
    return float(greater + ties / 2)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("first")
    result = run_cli(root)
    assert result.returncode == 0, f"reproduce failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return run_folder(root), result


@pytest.fixture(scope="module")
def second_run(first_run, tmp_path_factory):
    """Rerun into a copy of the first run's results without the cached OOD scores, so every score is recomputed."""
    folder, _ = first_run
    root = tmp_path_factory.mktemp("second")
    copy = root / folder.name
    shutil.copytree(folder, copy)
    (copy / "tables" / "ood_scores.npz").unlink()
    for table in TABLES:
        (copy / "tables" / f"{table}.csv").unlink()
        (copy / "tables" / f"{table}.json").unlink()
    result = run_cli(root)
    assert result.returncode == 0, f"second reproduce run failed:\n{result.stderr[-3000:]}"
    return copy


# ---------------------------------------------------------------------------- the command line run


@SLOW
def test_cli_writes_every_table(first_run):
    folder, _ = first_run
    for name in TABLES:
        assert (folder / "tables" / f"{name}.csv").is_file(), f"{name}.csv missing"
        assert (folder / "tables" / f"{name}.json").is_file(), f"{name}.json missing"


@SLOW
def test_cli_run_folder_is_named_after_profile(first_run):
    folder, _ = first_run
    assert folder.name.startswith("quick-"), "a run with size overrides must not use the plain profile's folder"
    stored = json.loads((folder / "profile.json").read_text())
    assert stored["data"]["n_train"] == N_TRAIN
    assert stored["train"]["coordinate_epochs"] == MAX_EPOCHS
    assert stored["baseline_max_epochs"] == MAX_EPOCHS


@SLOW
@pytest.mark.parametrize("name", TABLES)
def test_table_json_has_metadata(first_run, name):
    folder, _ = first_run
    csv, payload = read_table(folder, name)
    metadata = payload["metadata"]
    assert metadata["profile"] == "quick"
    assert metadata["run"] == folder.name
    assert metadata["seed"] == spanlib.profile("quick").seed
    assert metadata["versions"] == {"spanlib": spanlib.__version__, "torch": torch.__version__,
                                    "numpy": np.__version__, "scikit-learn": sklearn.__version__,
                                    "python": platform.python_version()}
    assert metadata["settings"]["data"]["n_test"] == N_TEST
    assert math.isfinite(metadata["wall_seconds"])
    assert metadata["wall_seconds"] >= 0
    from_json = pd.DataFrame(payload["rows"])
    assert list(from_json.columns) == list(csv.columns)
    assert len(from_json) == len(csv)


@SLOW
def test_ood_table_rows_and_columns(first_run):
    folder, _ = first_run
    table, _ = read_table(folder, "ood")
    ood_sets = list(spanlib.profile("quick").data.ood)
    assert list(table.columns) == ["model", "ood_set", "paper_set", "auroc", "aupr", "fpr95", "paper_auroc"]
    expected = [(MODEL_LABELS[model], ood) for model in OOD_MODELS for ood in ood_sets]
    assert list(zip(table["model"], table["ood_set"])) == expected


@SLOW
def test_ood_metrics_are_finite_probabilities(first_run):
    folder, _ = first_run
    table, _ = read_table(folder, "ood")
    for column in ("auroc", "aupr", "fpr95"):
        values = table[column].to_numpy()
        assert np.isfinite(values).all(), f"{column} has non-finite values"
        assert ((values >= 0) & (values <= 1)).all(), f"{column} outside [0, 1]: {values}"


@SLOW
def test_ood_auroc_matches_rank_statistic(first_run):
    folder, _ = first_run
    table, _ = read_table(folder, "ood")
    with np.load(folder / "tables" / "ood_scores.npz") as archive:
        scores = dict(archive)
    for row in table.itertuples():
        name = next(key for key, label in MODEL_LABELS.items() if label == row.model)
        expected = rank_auroc(scores[f"{name}/in-distribution"], scores[f"{name}/{row.ood_set}"])
        assert row.auroc == pytest.approx(expected, abs=1e-9), f"{row.model} on {row.ood_set}"


# The paper's Table 1 (AUROC) and Table 2 (inpainting MSE mean, std), typed in again from the paper
# so that a wrong digit in spanlib.reproduce.paper, which the tables copy, fails here.
TABLE1_TRANSCRIBED = {
    "cifar10": (0.9270, 0.8425, 0.9273, 0.9517, 0.9889),
    "mnist": (0.9992, 0.5416, 0.9989, 0.9921, 0.9296),
    "semeion": (1.0000, 0.8734, 1.0000, 0.9965, 0.9994),
}
TABLE1_MODELS = ("SPAN", "EBM", "EiNet", "MAF", "VAE")
TABLE2_TRANSCRIBED = {
    "top": {"SPAN": (8.76e-3, 6.84e-3), "EiNet": (9.28e-3, 7.90e-3), "EBM": (1.35e-2, 7.29e-3)},
    "left": {"SPAN": (6.73e-3, 5.29e-3), "EiNet": (7.08e-3, 6.13e-3), "EBM": (1.40e-2, 6.90e-3)},
}


def test_paper_table1_values():
    assert set(PAPER_TABLE1) == set(TABLE1_TRANSCRIBED)
    for data_set, values in TABLE1_TRANSCRIBED.items():
        assert PAPER_TABLE1[data_set] == dict(zip(TABLE1_MODELS, values)), data_set


def test_paper_table2_values():
    expected = {(model, kind): pair for kind, rows in TABLE2_TRANSCRIBED.items() for model, pair in rows.items()}
    assert PAPER_TABLE2 == expected


@SLOW
def test_ood_paper_columns_match_table1(first_run):
    folder, _ = first_run
    table, _ = read_table(folder, "ood")
    for row in table.itertuples():
        role = PAPER_ROLE[row.ood_set]
        if role is None:
            assert row.paper_set == "-"
            assert math.isnan(row.paper_auroc)
        else:
            assert row.paper_set == role
            assert row.paper_auroc == PAPER_TABLE1[role][row.model]


@SLOW
def test_inpainting_table_rows_and_paper_columns(first_run):
    folder, _ = first_run
    table, _ = read_table(folder, "inpainting")
    expected = [(MODEL_LABELS[model], f"{kind} half") for model in INPAINTING_MODELS for kind in ("top", "left")]
    assert list(zip(table["model"], table["missing"])) == expected
    for row in table.itertuples():
        kind = row.missing.split()[0]
        assert (row.paper_mean, row.paper_std) == PAPER_TABLE2[(row.model, kind)]
        assert np.isfinite([row.mse_mean, row.mse_std]).all()
        assert row.mse_mean >= 0
        assert row.mse_std >= 0
        assert row.images >= 1


@SLOW
def test_inpainting_keeps_observed_pixels(first_run):
    # Half of every image is missing, so if the observed half comes back unchanged, the error over
    # the whole image is exactly half the error over the missing pixels.
    folder, _ = first_run
    table, _ = read_table(folder, "inpainting")
    for row in table.itertuples():
        assert row.mse_mean == pytest.approx(row.missing_pixels_mse / 2, rel=1e-6), f"{row.model}, {row.missing}"


@SLOW
def test_weight_entropy_table_is_bounded(first_run):
    folder, _ = first_run
    table, _ = read_table(folder, "weight_entropy")
    profile = spanlib.profile("quick")
    assert list(table["layer"]) == list(range(1, profile.einet.depth + 1))
    uniform = math.log(profile.einet.K**2)
    assert np.allclose(table["uniform_entropy"], uniform)
    for column in ("span_entropy", "einet_entropy"):
        values = table[column].to_numpy()
        assert ((values >= 0) & (values <= uniform + 1e-6)).all(), f"{column} outside [0, log K^2]: {values}"


@SLOW
@pytest.mark.parametrize("name", FIGURES)
def test_figure_is_png(first_run, name):
    folder, _ = first_run
    path = folder / "figures" / f"{name}.png"
    assert path.is_file(), f"{path.name} missing"
    assert path.read_bytes()[:8] == PNG_SIGNATURE


@SLOW
def test_checkpoints_have_sidecars(first_run):
    folder, _ = first_run
    names = OOD_MODELS + [f"{name}-cluster" for name in INPAINTING_MODELS]
    for name in names:
        assert (folder / "checkpoints" / f"{name}.pt").is_file(), f"{name}.pt missing"
        sidecar = json.loads((folder / "checkpoints" / f"{name}.json").read_text())
        assert len(sidecar["fingerprint"]) == 12
    assert not list(folder.rglob("*.partial")), "a finished run left partial files"


# ---------------------------------------------------------------------------- reruns and determinism


@SLOW
@pytest.mark.parametrize("name", TABLES)
def test_second_run_gives_same_numbers(first_run, second_run, name):
    first, _ = read_table(first_run[0], name)
    second, _ = read_table(second_run, name)
    pd.testing.assert_frame_equal(first, second, check_exact=True)


@SLOW
def test_second_run_loads_checkpoints(first_run, second_run):
    for original in (first_run[0] / "checkpoints").iterdir():
        copy = second_run / "checkpoints" / original.name
        assert copy.read_bytes() == original.read_bytes(), f"{original.name} was rewritten by the second run"


@SLOW
@pytest.mark.parametrize("name", ["span", "ebm"])
def test_training_is_deterministic(first_run, tmp_path, name):
    """A model trained in a fresh folder equals the one the command line trained in its own process."""
    cli_experiment = tiny_experiment(first_run[0].parent)
    assert cli_experiment.folder == first_run[0]
    from_cli = cli_experiment.model(name)
    fresh = tiny_experiment(tmp_path)
    retrained = fresh.model(name)
    assert (fresh.folder / "checkpoints" / f"{name}.pt").is_file(), "the model was loaded, not trained"
    expected, actual = state_tensors(from_cli), state_tensors(retrained)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), f"{name}: parameter {key} differs between two trainings"


# ---------------------------------------------------------------------------- checkpoints on disk


@pytest.fixture(scope="module")
def einet_template(tmp_path_factory):
    """A results root with one trained Einsum network and nothing else, as an interrupted run leaves it."""
    root = tmp_path_factory.mktemp("einet")
    model = tiny_experiment(root).model("einet")
    return root, state_tensors(model)


@pytest.fixture
def trained_einet(einet_template, tmp_path):
    """A private copy of `einet_template`: (results root, checkpoint path, trained parameters)."""
    template, trained = einet_template
    root = tmp_path / "results"
    shutil.copytree(template, root)
    return root, run_folder(root) / "checkpoints" / "einet.pt", trained


def refuse_training(name, images):
    raise AssertionError(f"{name} was retrained although its checkpoint exists")


@SLOW
def test_interrupted_run_keeps_checkpoint(trained_einet, monkeypatch):
    root, path, trained = trained_einet
    assert path.is_file()
    assert path.with_suffix(".json").is_file()
    assert not list(path.parent.glob("*.partial"))
    experiment = tiny_experiment(root)
    monkeypatch.setattr(experiment, "_train", refuse_training)
    loaded = state_tensors(experiment.model("einet"))
    for key, value in trained.items():
        assert torch.equal(value, loaded[key]), f"parameter {key} differs after loading"


@SLOW
def test_killed_process_keeps_checkpoint(tmp_path, monkeypatch):
    """A process that dies right after training one model leaves a checkpoint that the next run loads."""
    script = (
        "import os, sys, spanlib\n"
        "from spanlib.reproduce import Experiment, with_overrides\n"
        f"profile = with_overrides(spanlib.profile('quick'), {N_TRAIN}, {N_TEST}, {MAX_EPOCHS})\n"
        f"Experiment(profile, out=sys.argv[1], progress=False, baseline_max_epochs={MAX_EPOCHS}).model('einet')\n"
        "os._exit(3)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 3, result.stderr[-2000:]
    experiment = tiny_experiment(tmp_path)
    monkeypatch.setattr(experiment, "_train", refuse_training)
    assert experiment.model("einet") is not None


@SLOW
def test_checkpoint_without_pt_file_is_retrained(trained_einet):
    """A run killed while saving leaves a sidecar without its checkpoint, and the next run trains the model again."""
    root, path, trained = trained_einet
    path.unlink()
    path.with_name(path.name + ".partial").write_bytes(b"half a file")
    retrained = state_tensors(tiny_experiment(root).model("einet"))
    assert path.is_file()
    for key, value in trained.items():
        assert torch.equal(value, retrained[key])


@SLOW
def test_corrupt_checkpoint_is_named(trained_einet):
    root, path, _ = trained_einet
    path.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointMismatchError, match=str(path)):
        tiny_experiment(root).model("einet")
    assert path.read_bytes() == b"not a torch file", "the corrupt checkpoint was overwritten"


@SLOW
def test_corrupt_checkpoint_fails_cli(first_run, tmp_path):
    folder, _ = first_run
    shutil.copytree(folder, tmp_path / folder.name)
    path = tmp_path / folder.name / "checkpoints" / "span.pt"
    path.write_bytes(b"not a torch file")
    result = run_cli(tmp_path, task="weights")
    assert result.returncode == 2, result.stderr[-2000:]
    assert str(path) in result.stderr
    assert path.read_bytes() == b"not a torch file", "the corrupt checkpoint was overwritten"


@SLOW
def test_checkpoint_of_other_configuration_is_named(trained_einet, tmp_path_factory):
    _, path, _ = trained_einet
    other = tiny_experiment(tmp_path_factory.mktemp("other"), n_train=N_TRAIN + 20)
    target = other.folder / "checkpoints" / "einet.pt"
    shutil.copy(path, target)
    shutil.copy(path.with_suffix(".json"), target.with_suffix(".json"))
    with pytest.raises(CheckpointMismatchError, match=str(target)):
        other.model("einet")
    assert target.read_bytes() == path.read_bytes(), "the foreign checkpoint was overwritten"


@SLOW
def test_checkpoint_without_sidecar_is_named(trained_einet):
    root, path, _ = trained_einet
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointMismatchError, match=str(path)):
        tiny_experiment(root).model("einet")


@SLOW
def test_corrupt_sidecar_is_named(trained_einet):
    root, path, _ = trained_einet
    path.with_suffix(".json").write_text("{ truncated")
    with pytest.raises(CheckpointMismatchError, match=str(path.with_suffix(".json"))):
        tiny_experiment(root).model("einet")


@SLOW
def test_cached_scores_follow_checkpoint(trained_einet):
    """OOD scores cached for one checkpoint are dropped when the model is deleted and trained again."""
    root, path, _ = trained_einet
    experiment = tiny_experiment(root)
    scores = experiment.ood_scores(models=("einet",))["einet"]["in-distribution"]
    cache = experiment.folder / "tables" / "ood_scores.npz"
    with np.load(cache) as archive:
        stored = dict(archive)
    stored["einet/in-distribution"] = np.zeros_like(scores)
    with open(cache, "wb") as handle:
        np.savez(handle, **stored)
    reused = tiny_experiment(root).ood_scores(models=("einet",))["einet"]["in-distribution"]
    assert np.array_equal(reused, np.zeros_like(scores)), "the cache of an unchanged checkpoint was not used"

    path.unlink()
    recomputed = tiny_experiment(root).ood_scores(models=("einet",))["einet"]["in-distribution"]
    np.testing.assert_array_equal(recomputed, scores)


# ---------------------------------------------------------------------------- run folders of profiles


def test_named_profiles_use_their_own_folders(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # colab and paper ask for CUDA
        folders = {name: Experiment(spanlib.profile(name), out=tmp_path, progress=False).folder
                   for name in ("quick", "colab", "paper")}
    assert {name: folder.name for name, folder in folders.items()} == {"quick": "quick", "colab": "colab",
                                                                       "paper": "paper"}
    for name, folder in folders.items():
        stored = json.loads((folder / "profile.json").read_text())
        assert stored == spanlib.profile(name).as_dict(), f"{name}'s profile.json was overwritten"


def test_overrides_get_their_own_folder(tmp_path):
    plain = Experiment(spanlib.profile("quick"), out=tmp_path, progress=False)
    small = tiny_experiment(tmp_path)
    capped = Experiment(tiny_profile(), out=tmp_path, progress=False)
    assert len({plain.folder, small.folder, capped.folder}) == 3


def test_run_folder_of_other_profile_raises(tmp_path):
    folder = tmp_path / "quick"
    folder.mkdir()
    foreign = json.dumps(spanlib.profile("colab").as_dict())
    (folder / "profile.json").write_text(foreign)
    with pytest.raises(CheckpointMismatchError, match="profile.json"):
        Experiment(spanlib.profile("quick"), out=tmp_path, progress=False)
    assert (folder / "profile.json").read_text() == foreign


def test_baseline_epoch_cap_applies(tmp_path):
    experiment = tiny_experiment(tmp_path)
    for name in ("ebm", "maf", "vae"):
        assert experiment._baseline_config(name).epochs == MAX_EPOCHS
    with pytest.raises(ValueError, match="baseline_max_epochs"):
        Experiment(tiny_profile(), out=tmp_path, baseline_max_epochs=0)


# ---------------------------------------------------------------------------- Figure 2 histograms


def spread_scores() -> dict[str, np.ndarray]:
    """Scores like SPAN's: in-distribution near +500 nats, OOD sets down to -400,000 nats."""
    rng = np.random.default_rng(0)
    return {"in-distribution": rng.normal(500.0, 100.0, 300), "far": -np.exp(rng.uniform(8.0, 13.0, 300)),
            "near": rng.normal(-200.0, 50.0, 300)}


def test_symlog_threshold_for_spread_scores():
    scores = spread_scores()
    largest_in = np.abs(scores["in-distribution"]).max()
    assert symlog_threshold(scores) == 10.0 ** math.ceil(math.log10(largest_in))


def test_symlog_threshold_none_for_narrow_scores():
    scores = {"in-distribution": np.array([-0.1, -0.12, -0.09]), "ood": np.array([-0.5, -0.7, -0.3])}
    assert symlog_threshold(scores) is None


def test_symlog_histogram_counts_every_score():
    scores = spread_scores()
    fig, ax = plt.subplots()
    score_histograms(scores, "span", ax=ax)
    counted = sum(patch.get_height() for patch in ax.patches)
    xlabel = ax.get_xlabel()
    scale = ax.get_xscale()
    plt.close(fig)
    assert scale == "symlog"
    assert counted == sum(len(values) for values in scores.values())
    assert "not shown" not in xlabel


def test_linear_histogram_reports_hidden_scores():
    rng = np.random.default_rng(1)
    scores = {"in-distribution": rng.normal(0.0, 1.0, 1000), "ood": np.r_[rng.normal(-3.0, 1.0, 1000), [-40.0] * 5]}
    everything = np.concatenate(list(scores.values()))
    hidden = int(np.sum(everything < np.percentile(everything, 1)))
    fig, ax = plt.subplots()
    score_histograms(scores, "einet", ax=ax)
    counted = sum(patch.get_height() for patch in ax.patches)
    xlabel = ax.get_xlabel()
    scale = ax.get_xscale()
    plt.close(fig)
    assert scale == "linear"
    assert f"{hidden} lower scores not shown" in xlabel
    assert counted + hidden == len(everything)
    assert xlabel.startswith("log-likelihood log p(x)")
