"""`offrl collect`: episode recording, Minari round trips, determinism, overwrite refusal, CLI."""

from __future__ import annotations

import numpy as np
import pytest

from offrl.cli import main
from offrl.datasets import DatasetError, load_dataset
from offrl.datasets.collect import (
    check_dataset_id,
    collect_dataset,
    collect_episodes,
    count_label,
    episode_seeds,
)
from offrl.envs import find_env_facts, make_env
from offrl.envs.key_to_door import ENV_ID, MEMORY_ENV_ID, RANDOM_SUCCESS_MEASURED
from offrl.types import Episode

# CartPole capped at 30 steps: random episodes end both ways (falls and time-outs).
CARTPOLE = {"max_episode_steps": 30}


def assert_same(a: list[Episode], b: list[Episode]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.observations, y.observations)
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_array_equal(x.rewards, y.rewards)
        assert (x.terminated, x.truncated) == (y.terminated, y.truncated)


def test_episodes_replay_exactly_with_final_observation():
    eps = collect_episodes("CartPole-v1", "random", 12, seed=5, progress=False,
                           env_kwargs=CARTPOLE)
    assert {e.terminated for e in eps} == {True, False}  # both kinds of ending occur
    env = make_env("CartPole-v1", **CARTPOLE)
    for i, ep in enumerate(eps):
        assert ep.terminated != ep.truncated
        assert len(ep.observations) == ep.length + 1
        obs, _ = env.reset(seed=episode_seeds(5, i)[0])
        replay = [obs]
        for a in ep.actions:
            obs, _, terminated, truncated, _ = env.step(int(a))
            replay.append(obs)
        np.testing.assert_array_equal(ep.observations, np.array(replay, dtype=np.float32))
        assert (terminated, truncated) == (ep.terminated, ep.truncated)  # final obs kept
        assert ep.length == 30 or ep.terminated


def test_same_seed_same_episodes_whatever_num_envs():
    a = collect_episodes(ENV_ID, "random", 30, seed=1, progress=False)
    b = collect_episodes(ENV_ID, "random", 30, seed=1, progress=False, num_envs=4)
    assert_same(a, b)
    c = collect_episodes(ENV_ID, "random", 30, seed=2, progress=False)
    assert not all(np.array_equal(x.actions, y.actions) for x, y in zip(a, c, strict=True))


def test_callable_policy_with_epsilon_noise():
    def balance(obs: np.ndarray) -> int:
        return int(obs[2] > 0)  # push towards the pole's lean

    clean = collect_episodes("CartPole-v1", balance, 5, seed=0, progress=False)
    assert np.mean([e.episode_return for e in clean]) > 30  # random averages ~22
    noisy = collect_episodes("CartPole-v1", balance, 5, seed=0, progress=False,
                             action_noise=0.5)
    obs = np.concatenate([e.observations[:-1] for e in noisy])
    acts = np.concatenate([e.actions for e in noisy])
    # Epsilon 0.5 picks a uniform action half the time: it differs from the policy's in 1/4.
    differ = np.mean(acts != (obs[:, 2] > 0))
    assert 0.15 < differ < 0.35, differ
    assert acts.dtype == np.int64


def test_box_noise_scale_and_clipping():
    eps = collect_episodes("Pendulum-v1", lambda obs: np.zeros(1), 3, seed=0, progress=False,
                           action_noise=0.1)
    acts = np.concatenate([e.actions for e in eps])  # (T, 1), Pendulum range [-2, 2]
    assert acts.shape == (600, 1) and acts.dtype == np.float32
    assert 0.17 < acts.std() < 0.23  # std = 0.1 x half-range 2
    eps = collect_episodes("Pendulum-v1", lambda obs: [5.0], 1, seed=0, progress=False)
    assert np.all(eps[0].actions == 2.0)  # clipped to the bound the env applies
    assert all(e.truncated and not e.terminated for e in eps)


class RecordingPolicy:
    """A batched `Policy` that checks the protocol's calls: resets, shapes, last rewards."""

    def __init__(self, num_envs: int) -> None:
        self.n = num_envs
        self.fresh = np.zeros(num_envs, dtype=bool)
        self.resets: list[np.ndarray] = []
        self.targets: list[float | None] = []
        self.calls = 0

    def reset(self, env_mask: np.ndarray, target_return: float | None = None) -> None:
        self.resets.append(env_mask.copy())
        self.targets.append(target_return)
        self.fresh |= env_mask

    def act(self, obs: np.ndarray, last_reward: np.ndarray) -> np.ndarray:
        assert obs.shape == (self.n, 4) and last_reward.shape == (self.n,)
        # CartPole pays 1 per step: 0 only on a row's first step after its reset.
        np.testing.assert_array_equal(last_reward[~self.fresh], 1.0)
        np.testing.assert_array_equal(last_reward[self.fresh], 0.0)
        self.fresh[:] = False
        self.calls += 1
        return (obs[:, 2] > 0).astype(np.int64)


def test_batched_policy_protocol():
    policy = RecordingPolicy(3)
    eps = collect_episodes("CartPole-v1", policy, 7, seed=0, progress=False, num_envs=3,
                           target_return=42.0, env_kwargs=CARTPOLE)
    assert len(eps) == 7 and policy.calls >= 30
    assert policy.resets[0].all() and set(policy.targets) == {42.0}
    assert sum(int(m.sum()) for m in policy.resets) == 7  # one reset per episode
    again = collect_episodes("CartPole-v1", RecordingPolicy(3), 7, seed=0, progress=False,
                             num_envs=3, target_return=42.0, env_kwargs=CARTPOLE)
    assert_same(eps, again)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown policy"):
        collect_episodes(ENV_ID, "greedy", 1, seed=0, progress=False)
    with pytest.raises(ValueError, match="noise"):
        collect_episodes(ENV_ID, "random", 1, seed=0, progress=False, action_noise=0.1)
    with pytest.raises(ValueError, match="num_episodes"):
        collect_episodes(ENV_ID, "random", 0, seed=0, progress=False)
    with pytest.raises(ValueError, match="policy must be"):
        collect_episodes(ENV_ID, 3, 1, seed=0, progress=False)
    with pytest.raises(ValueError, match="action of shape"):
        collect_episodes("Pendulum-v1", lambda obs: np.zeros(3), 1, seed=0, progress=False)
    for bad in ("keytodoor/random-1k", "key.to.door-v0", "a b-v0"):
        with pytest.raises(ValueError, match="not a Minari id"):
            check_dataset_id(bad)
    check_dataset_id("keytodoor/random-1k-v0")


def test_count_label():
    assert [count_label(n) for n in (1000, 10000, 250, 1500)] == ["1k", "10k", "250", "1500"]


def test_keytodoor_round_trip(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    path, eps = collect_dataset("keytodoor/random-300-v0", ENV_ID, "random", 300, seed=0,
                                root=root, progress=False)
    assert path == root / "keytodoor" / "random-300-v0"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    for source in (path, "minari:keytodoor/random-300-v0"):
        ds = load_dataset(source)
        assert ds.num_episodes == 300 and ds.meta.env_id == ENV_ID
        assert ds.meta.ref_min_score == RANDOM_SUCCESS_MEASURED and ds.meta.ref_max_score == 1.0
        assert str(ds.action_space) == "Discrete(4)" and ds.observations.shape[1:] == (7,)
        assert_same(list(ds.episodes()), eps)
        np.testing.assert_array_equal(ds.episode_returns, [e.episode_return for e in eps])


def test_truncations_survive_the_round_trip(tmp_path):
    path, eps = collect_dataset("cartpole/random-20-v0", "CartPole-v1", "random", 20, seed=3,
                                root=tmp_path, env_kwargs=CARTPOLE, progress=False)
    ds = load_dataset(path)
    assert ds.truncated.any() and ds.terminated.any()
    assert_same(list(ds.episodes()), eps)
    assert ds.meta.ref_min_score is None  # CartPole has no reference scores


def test_regeneration_is_deterministic(tmp_path):
    a, _ = collect_dataset("keytodoor/random-100-v0", ENV_ID, "random", 100, seed=7,
                           root=tmp_path / "a", progress=False)
    b, _ = collect_dataset("keytodoor/random-100-v0", ENV_ID, "random", 100, seed=7,
                           root=tmp_path / "b", progress=False)
    da, db = load_dataset(a), load_dataset(b)
    for name in ("observations", "actions", "rewards", "episode_starts", "terminated",
                 "truncated"):
        np.testing.assert_array_equal(getattr(da, name), getattr(db, name), err_msg=name)


def test_refuses_to_overwrite_before_collecting(tmp_path):
    collect_dataset("keytodoor/random-20-v0", ENV_ID, "random", 20, seed=0, root=tmp_path,
                    progress=False)
    calls = []

    def spy(obs: np.ndarray) -> int:
        calls.append(1)
        return 0

    with pytest.raises(DatasetError, match="exists.*--force"):
        collect_dataset("keytodoor/random-20-v0", ENV_ID, spy, 20, seed=0, root=tmp_path,
                        progress=False)
    assert not calls  # refused before spending any time collecting
    path, eps = collect_dataset("keytodoor/random-20-v0", ENV_ID, spy, 20, seed=0,
                                root=tmp_path, force=True, progress=False)
    ds = load_dataset(path)
    assert calls and np.all(ds.actions == 0)  # the new data replaced the old
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_grid_observations_round_trip(tmp_path):
    path, eps = collect_dataset("keytodoor/random-grid-5-v0", ENV_ID, "random", 5, seed=0,
                                root=tmp_path, env_kwargs={"obs_mode": "grid"}, progress=False)
    ds = load_dataset(path)
    assert ds.observations.shape[1:] == (5, 7, 7)
    assert_same(list(ds.episodes()), eps)


# ---- CLI -----------------------------------------------------------------------------------


def test_cli_collect_keytodoor(tmp_path, capsys):
    argv = ["collect", "keytodoor", "--episodes", "40", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    path = tmp_path / "keytodoor" / "random-40-v0"
    assert f"wrote {path}" in out and "episodes 40" in out and "success rate" in out
    ds = load_dataset(path)
    assert ds.num_episodes == 40 and ds.meta.extra["algorithm_name"] == "random"
    assert_same(list(ds.episodes()),
                collect_episodes(ENV_ID, "random", 40, seed=0, progress=False))
    assert main(argv) == 1
    assert "exists" in capsys.readouterr().err
    assert main([*argv, "--force", "--seed", "1"]) == 0
    assert not np.array_equal(load_dataset(path).actions, ds.actions)


def test_cli_collect_keytodoor_memory(tmp_path, capsys, monkeypatch):
    # Seed 2: 4 of these 40 random-walk episodes succeed (seeds 0 and 1 have none).
    argv = ["collect", "keytodoor", "--episodes", "40", "--seed", "2", "--out", str(tmp_path),
            "--no-progress"]
    assert main([*argv, "--memory"]) == 0
    assert main(argv) == 0  # the normal variant, same seed, beside it
    assert "random-memory-40-v0" in capsys.readouterr().out
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    mem = load_dataset("minari:keytodoor/random-memory-40-v0")
    normal = load_dataset(tmp_path / "keytodoor" / "random-40-v0")
    # The env id round-trips through the dataset's metadata (what `offrl train` evaluates
    # on), and the facts table resolves both the id and the dataset name to the variant.
    assert mem.meta.env_id == MEMORY_ENV_ID and normal.meta.env_id == ENV_ID
    assert mem.meta.ref_min_score == RANDOM_SUCCESS_MEASURED
    assert find_env_facts(mem.meta.name).env_id == MEMORY_ENV_ID
    # Same random walk with has_key zeroed: naive comparison against the normal data.
    assert normal.observations[:, 5].max() == 1.0  # some episodes picked the key up
    assert np.all(mem.observations[:, 5] == 0.0)
    rest = [0, 1, 2, 3, 4, 6]
    np.testing.assert_array_equal(mem.observations[:, rest], normal.observations[:, rest])
    for name in ("actions", "rewards", "episode_starts", "terminated", "truncated"):
        np.testing.assert_array_equal(getattr(mem, name), getattr(normal, name), err_msg=name)
    assert mem.rewards.sum() > 0  # at least one success, so rewards were compared
    # Grid observations: the has_key plane is zero, the id says both.
    assert main([*argv, "--memory", "--obs-mode", "grid", "--episodes", "5"]) == 0
    grid = load_dataset(tmp_path / "keytodoor" / "random-grid-memory-5-v0")
    assert grid.meta.env_id == MEMORY_ENV_ID and grid.observations.shape[1:] == (5, 7, 7)
    assert np.all(grid.observations[:, 3] == 0.0)


def test_cli_collect_env(tmp_path, capsys):
    argv = ["collect", "env", "--env-id", "CartPole-v1", "--episodes", "6", "--out",
            str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    assert "cartpole/random-6-v0" in capsys.readouterr().out
    assert load_dataset(tmp_path / "cartpole" / "random-6-v0").num_episodes == 6
    assert main([*argv, "--dataset-id", "mine/cp-v3"]) == 0
    assert (tmp_path / "mine" / "cp-v3").is_dir()
    assert main([*argv, "--noise", "0.1"]) == 1  # noise on the random policy is refused
    assert "noise" in capsys.readouterr().err
    assert main([*argv, "--policy", str(tmp_path / "missing.pt")]) == 1
    assert "no such path" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["keytodoor", "env"])
def test_cli_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["collect", command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--episodes" in out and "--out" in out and "--force" in out
    if command == "keytodoor":
        assert "--memory" in out and "has_key" in out


def test_cli_checkpoint_policy(tmp_path, capsys):
    pytest.importorskip("offrl.checkpoint", reason="the trainer's checkpoint module is absent")
    import torch

    from offrl.algorithms import BC, BCConfig
    from offrl.checkpoint import FORMAT, FORMAT_VERSION, atomic_save, library_versions

    path, _ = collect_dataset("keytodoor/random-50-v0", ENV_ID, "random", 50, seed=0,
                              root=tmp_path, progress=False)
    torch.manual_seed(0)
    algo = BC.from_dataset(BCConfig(hidden=(16,)), load_dataset(path))
    ckpt = atomic_save({
        "format": FORMAT, "format_version": FORMAT_VERSION, "algo": "bc", "run_config": {},
        "algorithm": algo.state_dict(), "step": 0, "versions": library_versions(),
        "env_id": ENV_ID, "eval_targets": [None],
    }, tmp_path / "ckpt_0.pt")
    argv = ["collect", "env", "--env-id", ENV_ID, "--episodes", "6", "--policy", str(ckpt),
            "--num-envs", "3", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    assert "keytodoor/bc-6-v0" in capsys.readouterr().out
    ds = load_dataset(tmp_path / "keytodoor" / "bc-6-v0")
    # The checkpoint's deterministic policy replayed on the recorded observations.
    policy = algo.make_policy(ds.num_steps)
    policy.reset(np.ones(ds.num_steps, dtype=bool))
    np.testing.assert_array_equal(
        policy.act(ds.step_observations, np.zeros(ds.num_steps, np.float32)), ds.actions)
