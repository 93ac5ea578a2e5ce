"""Evaluator: exact per-env quotas, unbiased episode sets, per-episode seeds independent of the
number of envs, masked resets, success rate, normalized score, target-return sweeps."""

from __future__ import annotations

import numpy as np
import pytest

from offrl.evaluator import (
    EvalResult,
    Evaluator,
    primary_score,
    record_video,
    reference_scores,
    summarize,
)
from tests.trainer_helpers import (
    SCRIPTED_RGB_ID,
    RecordingPolicy,
    ScriptedEnv,
    scripted_length,
)


def run(num_envs: int, episodes: int, seed: int = 100, targets=(None,), async_envs=False,
        ref_scores=None) -> tuple[list[EvalResult], RecordingPolicy]:
    policy = RecordingPolicy(num_envs)
    with Evaluator(ScriptedEnv, num_envs, async_envs=async_envs, ref_scores=ref_scores) as ev:
        return ev.evaluate(policy, episodes, target_returns=targets, seed=seed), policy


def expected(seed: int, episodes: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([scripted_length(seed + j) for j in range(episodes)])
    return lengths, lengths * (lengths + 1) / 2.0  # reward t on step t


@pytest.mark.parametrize("num_envs", [1, 3, 4, 7, 10])
def test_exactly_the_assigned_episodes_complete(num_envs: int) -> None:
    (res,), _ = run(num_envs, 7)
    lengths, returns = expected(100, 7)
    np.testing.assert_array_equal(res.seeds, 100 + np.arange(7))
    np.testing.assert_array_equal(res.lengths, lengths)
    np.testing.assert_array_equal(res.returns, returns)


def test_each_env_runs_its_assigned_episodes_in_order() -> None:
    # Episode j runs on env j % N whatever the lengths: an env with short episodes does not
    # take over the quota of a slow one (which would under-sample long episodes).
    n, episodes, seed = 3, 10, 40
    _, policy = run(n, episodes, seed=seed)
    for e in range(n):
        started = [int(obs[e, 0]) for obs, _ in policy.acts if obs[e, 1] == 0]
        assigned = [seed + j for j in range(e, episodes, n)]
        assert started[: len(assigned)] == assigned
        assert all(s >= 10_000 for s in started[len(assigned):])  # idle: unseeded, ignored


def test_results_do_not_depend_on_the_number_of_envs() -> None:
    ref = run(1, 11, seed=5)[0][0]
    for n in (2, 5, 11):
        res = run(n, 11, seed=5)[0][0]
        np.testing.assert_array_equal(res.returns, ref.returns)
        np.testing.assert_array_equal(res.lengths, ref.lengths)
        np.testing.assert_array_equal(res.successes, ref.successes)


def test_async_envs_give_the_same_results() -> None:
    sync = run(3, 8, seed=9)[0][0]
    asyn = run(3, 8, seed=9, async_envs=True)[0][0]
    np.testing.assert_array_equal(sync.returns, asyn.returns)
    np.testing.assert_array_equal(sync.lengths, asyn.lengths)


def test_lockstep_and_gymnasium_sync_give_the_same_results() -> None:
    out = {}
    for vector in ("sync", "lockstep"):
        policy = RecordingPolicy(3)
        with Evaluator(ScriptedEnv, 3, vector=vector) as ev:
            out[vector] = ev.evaluate(policy, 8, seed=9)[0], policy
    (sync, p_sync), (lock, p_lock) = out["sync"], out["lockstep"]
    np.testing.assert_array_equal(sync.returns, lock.returns)
    np.testing.assert_array_equal(sync.lengths, lock.lengths)
    np.testing.assert_array_equal(sync.successes, lock.successes)
    assert lock.successes is not None and lock.successes.any() and not lock.successes.all()
    assert len(p_sync.acts) == len(p_lock.acts)
    for (o1, r1), (o2, r2) in zip(p_sync.acts, p_lock.acts, strict=True):
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)


def test_masked_resets_and_last_rewards_reach_the_policy() -> None:
    (res,), policy = run(3, 8, seed=20, targets=(7.5,))
    first_mask, first_target = policy.resets[0]
    assert first_mask.all() and first_target == 7.5
    assert all(target == 7.5 for _, target in policy.resets)
    # Every row whose observation shows t == 0 was just reset (its mask was True), and its
    # last reward is 0; other rows carry the previous step's reward (t on step t).
    reset_iter = iter(policy.resets[1:])
    for k, (obs, last_reward) in enumerate(policy.acts):
        fresh = obs[:, 1] == 0
        if k > 0 and fresh.any():
            mask, _ = next(reset_iter)
            np.testing.assert_array_equal(mask, fresh)
        np.testing.assert_array_equal(last_reward[fresh], 0.0)
        np.testing.assert_array_equal(last_reward[~fresh], obs[~fresh, 1])
    # Envs start their assigned episodes: env e runs seeds 20+e, 20+e+3, ...
    starts = [obs[obs[:, 1] == 0, 0] for obs, _ in policy.acts]
    seen = np.sort(np.concatenate(starts))
    assert set(range(20, 28)) <= set(seen.astype(int).tolist())


def test_success_rate_and_normalized_score() -> None:
    (res,), _ = run(4, 12, seed=30, ref_scores=(10.0, 60.0))
    seeds = 30 + np.arange(12)
    np.testing.assert_array_equal(res.successes, seeds % 3 == 0)
    s = res.summary()
    assert s["success_rate"] == pytest.approx(np.mean(seeds % 3 == 0))
    assert s["normalized_score"] == pytest.approx(100 * (res.returns.mean() - 10) / 50)
    assert s["return_min"] == res.returns.min() and s["return_max"] == res.returns.max()
    assert primary_score([res]) == s["normalized_score"]


def test_target_sweep_replays_the_same_episodes() -> None:
    results, policy = run(2, 5, seed=3, targets=(1.0, 2.0, None))
    assert [r.target_return for r in results] == [1.0, 2.0, None]
    for r in results[1:]:
        np.testing.assert_array_equal(r.seeds, results[0].seeds)
    assert {t for _, t in policy.resets} == {1.0, 2.0, None}
    scalars = summarize(results)
    assert {"eval/1/return_mean", "eval/2/return_mean", "eval/none/return_mean"} <= set(scalars)


def test_no_success_key_means_no_success_rate() -> None:
    import gymnasium as gym

    with Evaluator(lambda: gym.make("CartPole-v1"), 2) as ev:
        policy = RecordingPolicy(2)
        (res,) = ev.evaluate(policy, 3, seed=0)
    assert res.successes is None and "success_rate" not in res.summary()
    assert res.normalized_scores is None


def test_real_env_reports_success() -> None:
    # Key-to-Door sets info["success"] on every step; its return is the success indicator.
    with Evaluator("offrl/KeyToDoor-v0", 3) as ev:
        (res,) = ev.evaluate(RecordingPolicy(3), 6, seed=0)
    assert res.successes is not None
    np.testing.assert_array_equal(res.successes, res.returns == 1.0)
    assert (res.lengths <= 80).all()


def test_reference_scores_prefer_dataset_metadata() -> None:
    from offrl.datasets import DatasetMeta

    assert reference_scores("Hopper-v5") == pytest.approx((-20.272305, 3234.3))
    assert reference_scores("Hopper-v5", DatasetMeta(ref_min_score=1, ref_max_score=2)) == (1, 2)
    assert reference_scores("CartPole-v1") is None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_envs"):
        Evaluator(ScriptedEnv, 0)
    with Evaluator(ScriptedEnv, 1) as ev, pytest.raises(ValueError, match="num_episodes"):
        ev.evaluate(RecordingPolicy(1), 0)


def test_video_of_one_episode(tmp_path, capsys) -> None:
    imageio = pytest.importorskip("imageio.v2")
    path = record_video(RecordingPolicy, SCRIPTED_RGB_ID, tmp_path / "ep.gif", seed=5)
    assert path == tmp_path / "ep.gif"
    frames = imageio.mimread(path)
    assert len(frames) == scripted_length(5) + 1  # the reset frame and one per step
    # Key-to-Door renders text only: the video is skipped with a message, not an error.
    assert record_video(RecordingPolicy, "offrl/KeyToDoor-v0", tmp_path / "k.gif") is None
    assert "video skipped" in capsys.readouterr().out
    assert not (tmp_path / "k.gif").exists()
