"""Smoke tests for `offrl datasets info|list` and the command table itself."""

import json

import numpy as np
import pytest

from offrl.cli import main
from tests.data_helpers import flat_d4rl, random_episodes, write_hdf5


@pytest.fixture
def hopper_file(tmp_path):
    eps = random_episodes(np.random.default_rng(0), [20, 12], [False, True], obs_dim=11,
                          act_dim=3)
    return write_hdf5(tmp_path / "hopper_medium-v2.hdf5", flat_d4rl(eps))


def test_info_json(hopper_file, capsys):
    assert main(["datasets", "info", str(hopper_file), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["episodes"] == 2 and out["steps"] == 32 and out["env_id"] == "Hopper-v5"
    assert out["terminated"] == 1 and out["truncated"] == 1
    assert "normalized_score_mean" in out and out["ref_max_score"] == 3234.3


def test_info_text(hopper_file, capsys):
    assert main(["datasets", "info", str(hopper_file)]) == 0
    text = capsys.readouterr().out
    assert "episodes" in text and "return_mean" in text


def test_info_bad_source_exits_nonzero(tmp_path, capsys):
    assert main(["datasets", "info", str(tmp_path / "missing.hdf5")]) == 1
    assert "not found" in capsys.readouterr().err


def test_list(capsys):
    assert main(["datasets", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"source": "d4rl:hopper-medium-v2", "cached": False} in rows


@pytest.mark.parametrize("words", [["datasets", "info"], ["datasets", "list"]])
def test_help(words, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*words, "--help"])
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    assert "usage: offrl" in capsys.readouterr().err
    assert main(["--help"]) == 0
