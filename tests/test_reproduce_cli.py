"""Fast tests of `python -m spanlib reproduce` errors: invalid arguments, missing data and corrupt run folders.

None of these tests trains a model: each run stops at an argument check, at the data load or at the
run folder's configuration record. Downloads go to an unreachable 127.0.0.1 port.
"""

import json
import subprocess
import sys

import pytest

import spanlib.data.loaders as loaders
from spanlib.reproduce.cli import main

UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: connection refused at once


def test_help_lists_tasks_and_options():
    result = subprocess.run([sys.executable, "-m", "spanlib", "reproduce", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    for word in ("ood", "inpainting", "weights", "--profile", "--out", "--data-root", "--n-train", "--max-epochs"):
        assert word in result.stdout, f"{word} missing from the help text"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--profile", "full"], "invalid choice: 'full'"),
        (["--n-train", "0"], "--n-train: must be at least 1, got 0"),
        (["--n-test", "-3"], "--n-test: must be at least 1, got -3"),
        (["--max-epochs", "two"], "--max-epochs: invalid integer 'two'"),
        (["shapes"], "invalid choice: 'shapes'"),
    ],
)
def test_invalid_arguments_exit_2(capsys, tmp_path, arguments, message):
    with pytest.raises(SystemExit) as info:
        main(["reproduce", *arguments, "--out", str(tmp_path)])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_invalid_profile_variable_exit_2(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SPANLIB_PROFILE", "laptop")
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "weights", "--out", str(tmp_path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "$SPANLIB_PROFILE" in err
    assert "'laptop'" in err
    assert "quick, colab, paper" in err


@pytest.mark.filterwarnings("ignore:profile 'colab' asks for 'cuda'")
def test_missing_data_set_is_reported(capsys, monkeypatch, tmp_path):
    entries = {split: (UNREACHABLE + name, name, md5) for split, (_, name, md5) in loaders.SVHN_FILES.items()}
    monkeypatch.setattr(loaders, "SVHN_FILES", entries)
    data_root = tmp_path / "data"
    code = main(["reproduce", "ood", "--profile", "colab", "--out", str(tmp_path / "results"),
                 "--data-root", str(data_root), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: Data set 'svhn (train split)' is not available")
    assert UNREACHABLE + "train_32x32.mat" in err
    assert str(data_root / "svhn" / "train_32x32.mat") in err
    assert "Traceback" not in err
    assert [path for path in data_root.rglob("*") if path.is_file()] == []


def test_corrupt_run_record_is_named(capsys, tmp_path):
    marker = tmp_path / "quick" / "profile.json"
    marker.parent.mkdir()
    marker.write_text('{"name": "qu')  # a record cut off mid-write
    code = main(["reproduce", "weights", "--profile", "quick", "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert str(marker) in err
    assert "is corrupt" in err
    assert marker.read_text() == '{"name": "qu'


def test_run_record_of_other_profile_is_kept(capsys, tmp_path):
    import spanlib

    marker = tmp_path / "quick" / "profile.json"
    marker.parent.mkdir()
    foreign = json.dumps(spanlib.profile("paper").as_dict())
    marker.write_text(foreign)
    code = main(["reproduce", "weights", "--profile", "quick", "--out", str(tmp_path), "--quiet"])
    assert code == 2
    assert "contains results of another configuration" in capsys.readouterr().err
    assert marker.read_text() == foreign
