"""`offrl train` / `offrl eval`: --help of each, smoke runs of every algorithm on a small
Key-to-Door dataset, YAML config + flag overrides, resume, divergence exit code, and the
shipped experiment configs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from offrl.cli import main
from offrl.config import load_yaml, resolve_algorithm
from offrl.logging import read_jsonl
from tests.trainer_helpers import restore_torch_threads  # noqa: F401  (autouse fixture)

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"

# Tiny networks: these runs check wiring, not learning.
TINY = {
    "dt": ["--context", "4", "--embed-dim", "16", "--num-layers", "1", "--batch-size", "8"],
    "cql": ["--batch-size", "8", "--actor-hidden", "16", "--critic-hidden", "16",
            "--num-sampled-actions", "2"],
    "bc": ["--batch-size", "8", "--hidden", "16"],
    "pbc": ["--batch-size", "8", "--hidden", "16", "--top-fraction", "0.5"],
}


@pytest.fixture(scope="module")
def keytodoor(tmp_path_factory) -> Path:
    from offrl.datasets.collect import collect_dataset

    root = tmp_path_factory.mktemp("minari")
    path, _ = collect_dataset("keytodoor/tiny-v0", "offrl/KeyToDoor-v0", "random", 30, seed=0,
                              root=root, progress=False)
    return path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def help_text(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_help(capsys) -> None:
    text = help_text(["train", "--help"], capsys)
    for flag in ("--algo", "--dataset", "--env", "--steps", "--seed", "--device", "--config",
                 "--resume", "--target-returns", "--eval-every", "--checkpoint-every"):
        assert flag in text
    assert "--context" not in text  # algorithm fields only once --algo is known
    dt = help_text(["train", "--algo", "dt", "--help"], capsys)
    assert "--context" in dt and "--embed-dim" in dt and "--steps" in dt
    cql = help_text(["train", "--algo", "cql", "--help"], capsys)
    assert "--cql-alpha" in cql and "--context" not in cql
    assert "--top-fraction" in help_text(["train", "--algo", "pbc", "--help"], capsys)
    text = help_text(["eval", "--help"], capsys)
    for flag in ("CHECKPOINT", "--episodes", "--target-return", "--envs", "--video"):
        assert flag in text


def test_train_needs_algo_and_dataset(capsys, keytodoor: Path) -> None:
    code, _, err = run_cli(["train", "--dataset", str(keytodoor)], capsys)
    assert code == 2 and "--algo" in err
    code, _, err = run_cli(["train", "--algo", "bc"], capsys)
    assert code == 2 and "--dataset" in err
    code, _, err = run_cli(["train", "--algo", "sac", "--dataset", str(keytodoor)], capsys)
    assert code == 1 and "unknown algo 'sac'" in err
    code, _, err = run_cli(["train", "--algo", "bc", "--dataset", "/nonexistent.hdf5"], capsys)
    assert code == 1 and "not found" in err


@pytest.mark.parametrize("algo", ["dt", "cql", "bc", "pbc"])
def test_train_then_eval_smoke(algo: str, keytodoor: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    code, out, err = run_cli(
        ["train", "--algo", algo, "--dataset", str(keytodoor), "--steps", "4", "--log-every",
         "2", "--eval-every", "0", "--num-eval-episodes", "2", "--num-eval-envs", "2",
         "--device", "cpu", "--num-threads", "1", "--run-dir", str(run), "--no-progress",
         *TINY[algo]], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["step"] == 4 and Path(report["run_dir"]) == run
    tag = "1" if algo == "dt" else "none"  # DT sweeps Key-to-Door's target return 1.0
    assert 0.0 <= report["final_eval"][f"eval/{tag}/success_rate"] <= 1.0
    assert "eval/normalized_score" in report["final_eval"]
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "time/update_ms" in r] == [2, 4]
    assert load_yaml(run / "config.yaml").algo == algo

    code, out, err = run_cli(["eval", str(run), "--episodes", "3", "--envs", "2", "--json"],
                             capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["step"] == 4 and result["algo"] == algo
    assert result["env_id"] == "offrl/KeyToDoor-v0"
    assert [r["episodes"] for r in result["results"]] == [3]
    if algo == "dt":
        code, out, err = run_cli(["eval", str(run / "checkpoints" / "ckpt_4.pt"),
                                  "--episodes", "2", "--target-return", "1", "0"], capsys)
        assert code == 0, err
        assert "target_return" in out and "success_rate" in out
        code, out, err = run_cli(["eval", str(run), "--episodes", "3", "--envs", "2", "--json",
                                  "--kv-cache"], capsys)
        assert code == 0, err
        assert [r["episodes"] for r in json.loads(out)["results"]] == [3]
        code, out, err = run_cli(["eval", str(run), "--episodes", "3", "--envs", "2", "--json",
                                  "--act-precision", "bf16"], capsys)
        assert code == 0, err
        assert [r["episodes"] for r in json.loads(out)["results"]] == [3]
    else:
        code, _, err = run_cli(["eval", str(run), "--episodes", "1", "--kv-cache"], capsys)
        assert code == 1 and "no config field(s) ['kv_cache']" in err
        code, _, err = run_cli(["eval", str(run), "--episodes", "1", "--act-precision", "bf16"],
                               capsys)
        assert code == 1 and "no config field(s) ['act_precision']" in err
    # gymnasium's SyncVectorEnv, and the lockstep loop's envs stepped in 2 threads, give the
    # same episodes as the default lockstep loop
    for flags in (["--vector", "sync"], ["--env-threads", "2", "--threads", "1"]):
        code, out, err = run_cli(["eval", str(run), "--episodes", "3", "--envs", "2", "--json",
                                  *flags], capsys)
        assert code == 0, err
        assert json.loads(out)["results"] == result["results"]
    code, _, err = run_cli(["eval", str(run), "--env-threads", "0"], capsys)
    assert code == 1 and "--env-threads" in err


def test_yaml_config_with_overrides_and_resume(keytodoor: Path, tmp_path: Path, capsys
                                               ) -> None:
    cfg = tmp_path / "bc.yaml"
    cfg.write_text(yaml.safe_dump({
        "algo": "bc", "dataset": str(keytodoor), "total_steps": 3, "log_every": 1,
        "num_eval_episodes": 0, "device": "cpu", "run_dir": str(tmp_path / "run"),
        "algo_config": {"batch_size": 4, "hidden": [8]}}))
    code, out, err = run_cli(["train", "--config", str(cfg), "--steps", "5", "--no-progress"],
                             capsys)
    assert code == 0, err
    saved = load_yaml(tmp_path / "run" / "config.yaml")
    assert saved.total_steps == 5 and saved.algo_config.hidden == (8,)
    code, out, err = run_cli(["train", "--resume", str(tmp_path / "run"), "--steps", "7",
                              "--no-progress"], capsys)
    assert code == 0, err
    assert json.loads(out)["step"] == 7
    code, _, err = run_cli(["train", "--resume", str(tmp_path / "run"), "--batch-size", "9",
                            "--no-progress"], capsys)
    assert code == 1 and "cannot resume" in err and "algo_config" in err
    code, _, err = run_cli(["eval", str(tmp_path / "nowhere")], capsys)
    assert code == 1 and "does not exist" in err


def test_divergence_exits_with_a_clear_message(tmp_path: Path, capsys) -> None:
    from tests.trainer_helpers import LINEAR_BC, write_cartpole_pickle

    data = write_cartpole_pickle(tmp_path / "cp.pkl", 4)
    code, _, err = run_cli(
        ["train", "--algo", LINEAR_BC, "--dataset", str(data), "--env", "CartPole-v1",
         "--steps", "20", "--checkpoint-every", "5", "--nan-at-step", "8", "--device", "cpu",
         "--run-dir", str(tmp_path / "run"), "--no-progress"], capsys)
    assert code == 1
    assert "'train/loss' became nan at step 8" in err and "ckpt_5.pt" in err


def test_shipped_configs_list_every_key() -> None:
    files = sorted(CONFIGS.glob("*.yaml"))
    assert files, f"no configs in {CONFIGS}"
    for path in files:
        cfg = load_yaml(path)  # strict: unknown keys and bad types fail
        raw = yaml.safe_load(path.read_text())
        run_keys = {f.name for f in dataclasses.fields(cfg)}
        assert set(raw) == run_keys, f"{path.name}: missing {run_keys - set(raw)}"
        algo_keys = {f.name for f in dataclasses.fields(resolve_algorithm(cfg.algo).Config)}
        assert set(raw["algo_config"]) == algo_keys, (
            f"{path.name}: algo_config misses {algo_keys - set(raw['algo_config'])}")


@pytest.mark.slow
def test_demo_quick(tmp_path: Path, capsys) -> None:
    """`python -m offrl.demo --quick`: the whole pipeline (collect, 4 training subprocesses,
    evaluation, table, report) with a few steps each."""
    from offrl.demo import main as demo

    assert demo(["--quick", "--out", str(tmp_path / "demo"), "--eval-episodes", "10"]) == 0
    out = capsys.readouterr().out
    assert "random walk (the data)" in out and "tensorboard --logdir" in out
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    labels = [r["label"] for r in results["results"]]
    assert labels == ["DT (target 1)", "DT (target 0)", "CQL", "%BC", "BC"]
    assert all(r["episodes"] == 10 for r in results["results"])
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "--quick run" in report and "| DT (target 1)" in report
    for algo in ("dt", "cql", "pbc", "bc"):
        assert (tmp_path / "demo" / "runs" / algo / "checkpoints" / "ckpt_20.pt").is_file()
