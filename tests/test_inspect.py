"""`offrl inspect`: attention capture (row sums, causal and padding masks, shapes), attention
rollout, the Key-to-Door key/door measurement, and the command end to end on a DT trained
with the real trainer on a scripted Key-to-Door dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from offrl.algorithms.dt import DT, DTConfig
from offrl.cli import main
from offrl.datasets import EpisodeDataset, load_dataset
from offrl.inspect import (
    attention_rollout,
    capture_attention,
    key_door_attention,
    key_to_door_events,
    step_attention,
    windows,
)
from tests.algo_helpers import tiny_dataset

ENV = "offrl/KeyToDoor-v0"


def scripted(obs: np.ndarray) -> int:
    """Walk to the key in the key room and to the door in the door room (wander between)."""
    x, y = round(float(obs[0]) * 6), round(float(obs[1]) * 6)
    phase = int(np.argmax(obs[2:5]))
    if phase == 1:
        return 1 if x < 3 else 3
    gx, gy = (3, 0) if phase == 0 else (6, 3)
    if x != gx:
        return 1 if x < gx else 3
    return 0 if y > gy else 2


@pytest.fixture(scope="module")
def keytodoor(tmp_path_factory) -> Path:
    from offrl.datasets.collect import collect_dataset

    root = tmp_path_factory.mktemp("minari")
    # epsilon-random on top of the script: a mix of successes and failures
    path, _ = collect_dataset("keytodoor/scripted-v0", ENV, scripted, 40, seed=0, root=root,
                              action_noise=0.5, progress=False)
    return path


def tiny_dt(dataset: EpisodeDataset, **kw) -> DT:
    torch.manual_seed(0)
    cfg = DTConfig(**{**dict(batch_size=8, context=6, embed_dim=16, num_layers=2,
                             num_heads=2, warmup_steps=5), **kw})
    return DT.from_dataset(cfg, dataset, "cpu")


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_attention_rows_causal_padding_and_shapes(kind: str) -> None:
    ds = tiny_dataset(kind)
    algo = tiny_dt(ds)
    for end in (1, 4, 6):  # 1: left padding in the window; 6: a full window
        win, att = capture_attention(algo, ds, 1, end)
        k = algo.config.context
        assert att.shape == (2, 2, 3 * k, 3 * k)
        assert len(win.token_labels()) == 3 * k
        assert win.steps[-1] == end and win.token_labels()[-2] == f"s_{end}"
        pad = np.repeat(~win.mask, 3)  # (3K,)
        assert pad.sum() == 3 * max(0, k - end - 1)
        np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
        future = np.triu(np.ones((3 * k, 3 * k), bool), 1)
        assert np.all(att[..., future] == 0)
        real_rows = ~pad
        # real queries put no weight on padding keys
        assert np.all(att[:, :, real_rows][..., pad] == 0)
        # padding queries attend only to themselves (the model keeps them finite that way)
        for i in np.flatnonzero(pad):
            np.testing.assert_allclose(att[:, :, i, i], 1.0, atol=1e-6)


def test_windows_follow_the_left_padding_convention() -> None:
    ds = tiny_dataset("continuous")
    algo = tiny_dt(ds)
    steps, (states, actions, rtg, ts, mask) = windows(algo, ds, 3, np.array([0, 2, 9]))
    assert steps.tolist()[0] == [-1] * 5 + [0]
    assert steps.tolist()[2] == [4, 5, 6, 7, 8, 9]
    assert mask.tolist() == (steps >= 0).tolist()
    for t in (states, actions):
        assert torch.all(t[~mask] == 0)
    assert torch.all(rtg[~mask] == 0) and torch.all(ts[~mask] == 0)
    s = int(ds.episode_starts[3])
    want = ds.returns_to_go[s + 9] / algo.resolved["return_scale"]
    assert rtg[2, -1].item() == pytest.approx(want, rel=1e-5)
    assert ts[2].tolist() == [4, 5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="out of range"):
        windows(algo, ds, 3, np.array([10]))
    with pytest.raises(ValueError, match="context"):
        windows(algo, ds, 3, np.array([2]), context=7)


def test_rollout_rows_sum_to_one_and_are_causal() -> None:
    rng = np.random.default_rng(0)
    t = 9
    raw = rng.random((3, 2, t, t)) * np.tril(np.ones((t, t)))
    maps = raw / raw.sum(-1, keepdims=True)
    roll = attention_rollout(maps)
    np.testing.assert_allclose(roll.sum(1), 1.0)
    assert np.all(roll[np.triu_indices(t, 1)] == 0)
    # one layer: rows of (mean_heads + I) sum to 2, so the rollout is their half
    np.testing.assert_allclose(attention_rollout(maps[:1]), 0.5 * (maps[0].mean(0) + np.eye(t)))
    # two layers compose with the later layer on the left
    a0, a1 = (0.5 * (maps[i].mean(0) + np.eye(t)) for i in (0, 1))
    np.testing.assert_allclose(attention_rollout(maps[:2]), a1 @ a0)
    # padding keys removed, rows renormalized
    mask = np.array([False] * 3 + [True] * 6)
    rm = attention_rollout(maps, mask)
    np.testing.assert_allclose(rm.sum(1), 1.0)
    assert np.all(rm[3:, :3] == 0)
    per_step = step_attention(rm)
    assert per_step.shape == (3, 3)
    np.testing.assert_allclose(per_step.sum(1), 1.0)
    assert np.all(per_step[np.triu_indices(3, 1)] == 0)


def test_rollout_of_real_model_is_causal() -> None:
    ds = tiny_dataset("discrete")
    algo = tiny_dt(ds)
    win, att = capture_attention(algo, ds, 3, 8)
    per_step = step_attention(attention_rollout(att, np.repeat(win.mask, 3)))
    np.testing.assert_allclose(per_step.sum(1), 1.0, atol=1e-6)
    assert np.all(per_step[np.triu_indices(6, 1)] == 0)


def test_key_door_needs_a_context_that_reaches_the_key(keytodoor: Path) -> None:
    ds = load_dataset(keytodoor)
    eps = [e for e in range(ds.num_episodes)
           if (ev := key_to_door_events(ds, e))["key_step"] is not None
           and ev["door_step"] is not None]
    assert eps, "the scripted dataset should contain successful episodes"
    ev = key_to_door_events(ds, eps[0])
    assert 0 <= ev["key_step"] < 20 and 60 <= ev["door_step"] < 80
    short = key_door_attention(tiny_dt(ds, context=8), ds, eps[0])
    assert short["covered"] is False and "cannot" in short["status"]
    full = key_door_attention(tiny_dt(ds, context=80, num_layers=1, num_heads=1), ds, eps[0])
    assert full["covered"] is True and 0.0 <= full["weight"] <= 1.0
    assert 1 <= full["rank"] <= full["window_steps"]


def test_help(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["inspect", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ("CHECKPOINT", "--dataset", "--episodes", "--targets", "--eval-episodes",
                 "--out"):
        assert flag in text


@pytest.mark.slow
def test_inspect_end_to_end(keytodoor: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    code = main(["train", "--algo", "dt", "--dataset", str(keytodoor), "--steps", "300",
                 "--log-every", "100", "--eval-every", "0", "--num-eval-episodes", "2",
                 "--num-eval-envs", "2", "--device", "cpu", "--num-threads", "1",
                 "--run-dir", str(run), "--no-progress", "--context", "80", "--embed-dim",
                 "16", "--num-layers", "1", "--num-heads", "1", "--batch-size", "8",
                 "--warmup-steps", "20", "--learning-rate", "1e-3"])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    out = tmp_path / "report"
    code = main(["inspect", str(run), "--dataset", str(keytodoor), "--episodes", "0", "3",
                 "--targets", "0", "1", "--eval-episodes", "3", "--eval-envs", "3",
                 "--error-episodes", "5", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err
    report = (out / "report.md").read_text()
    for name in ("attention_ep0.png", "attention_ep3.png", "rollout_ep0.png",
                 "return_conditioning.png", "action_error.png"):
        assert (out / name).stat().st_size > 1000 and f"({name})" in report
    raw = json.loads((out / "inspect.json").read_text())
    assert [e["episode"] for e in raw["episodes"]] == [0, 3]
    att = np.array(raw["episodes"][0]["attention"])
    assert att.shape == (1, 1, 240, 240)
    assert [r["target_return"] for r in raw["return_conditioning"]] == [0.0, 1.0]
    assert all(r["episodes"] == 3 for r in raw["return_conditioning"])
    assert [r["episode"] for r in raw["action_error"]] == [0, 3, 1, 2, 4]  # chosen, then first 5
    assert all(0 <= e <= 1 for row in raw["action_error"] for e in row["error"])
    assert raw["key_to_door"] and all(r["covered"] for r in raw["key_to_door"])
    assert "Key-to-Door" in report and "rollout weight" in report

    code = main(["inspect", str(run), "--dataset", str(keytodoor), "--episodes", "999",
                 "--out", str(tmp_path / "bad")])
    assert code == 1 and "episode 999 out of range" in capsys.readouterr().err


def test_error_by_return_to_go_groups() -> None:
    from offrl.inspect import error_by_return_to_go

    err = np.array([1.0, 0.0, 1.0, 1.0])
    rows = error_by_return_to_go(err, np.array([0.0, 0.0, 1.0, 1.0]))
    assert [(r["rtg_low"], r["steps"], r["error_mean"]) for r in rows] == [(0, 2, 0.5),
                                                                             (1, 2, 1.0)]
    rtg = np.arange(100.0)
    rows = error_by_return_to_go((rtg >= 50).astype(float), rtg, bins=4)
    assert sum(r["steps"] for r in rows) == 100
    assert [r["error_mean"] for r in rows] == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_action_errors_use_the_policy_windows(kind: str) -> None:
    """Replaying a dataset episode through DTPolicy (its actions overwritten with the dataset's)
    predicts the same actions that `action_errors` scores."""
    from offrl.inspect import action_errors

    ds = tiny_dataset(kind)
    algo = tiny_dt(ds, context=4)
    ep = 1
    row = action_errors(algo, ds, [ep], batch_size=5)[0]
    n = int(ds.episode_lengths[ep])
    assert len(row["error"]) == n and len(row["return_to_go"]) == n
    episode = ds.episode(ep)
    policy = algo.make_policy(1)
    policy.reset(np.ones(1, bool), float(episode.rewards.sum()))
    last = np.zeros(1)
    for t in range(n):
        act = policy.act(episode.observations[t][None], last)
        a = torch.as_tensor(episode.actions[t:t + 1])
        if kind == "discrete":
            assert row["error"][t] == float(act[0] != episode.actions[t])
            policy.actions[:, -1] = a
        else:
            unit = algo.actions.to_unit(a)
            pred = algo.actions.to_unit(torch.as_tensor(act, dtype=torch.float32))
            want = float((pred - unit).pow(2).mean())
            assert row["error"][t] == pytest.approx(want, rel=1e-4, abs=1e-6)
            policy.actions[:, -1] = unit
        last = episode.rewards[t:t + 1]


def test_short_context_checkpoint_reports_it_cannot_see_the_key(keytodoor: Path,
                                                                tmp_path: Path, capsys) -> None:
    """A checkpoint written with offrl.checkpoint's writer, K=8 < the key-to-door gap, no
    evaluation sweep: the report says the key step is out of reach instead of a number."""
    from offrl.checkpoint import FORMAT, FORMAT_VERSION, atomic_save, library_versions

    ds = load_dataset(keytodoor)
    algo = tiny_dt(ds, context=8)
    for _ in range(3):
        algo.update(algo.make_sampler(ds, 0).sample())
    ckpt = atomic_save({"format": FORMAT, "format_version": FORMAT_VERSION, "algo": "dt",
                        "run_config": {}, "algorithm": algo.state_dict(), "step": 3,
                        "env_id": ENV, "versions": library_versions()}, tmp_path / "k8.pt")
    out = tmp_path / "report"
    code = main(["inspect", str(ckpt), "--dataset", str(keytodoor), "--eval-episodes", "0",
                 "--error-episodes", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    report = (out / "report.md").read_text()
    assert "cannot: the key step is" in report and "K=8" in report
    assert "## Return conditioning" not in report
    raw = json.loads((out / "inspect.json").read_text())
    assert np.array(raw["episodes"][0]["attention"]).shape == (2, 2, 24, 24)
    assert not any(r.get("covered") for r in raw["key_to_door"])
    assert not (out / "return_conditioning.png").exists()


def test_bad_inputs_are_named() -> None:
    from offrl.algorithms.bc import BC
    from offrl.inspect import check_compatible
    from tests.algo_helpers import tiny_config

    ds = tiny_dataset("discrete")
    with pytest.raises(ValueError, match="Decision Transformer checkpoint, got 'bc'"):
        check_compatible(BC.from_dataset(tiny_config("bc"), ds, "cpu"), ds)
    with pytest.raises(ValueError, match="discrete actions"):
        check_compatible(tiny_dt(tiny_dataset("continuous")), ds)


def test_inspect_follows_a_delayed_reward_run(keytodoor: Path, tmp_path: Path,
                                              monkeypatch) -> None:
    """A `reward: delayed` run is inspected on delayed returns-to-go and evaluated in the
    delayed-reward env, as it was trained and evaluated."""
    import offrl.inspect as inspect_mod

    run = tmp_path / "run"
    assert main(["train", "--algo", "dt", "--dataset", str(keytodoor), "--steps", "2",
                 "--eval-every", "0", "--num-eval-episodes", "0", "--device", "cpu",
                 "--run-dir", str(run), "--no-progress", "--reward", "delayed", "--context",
                 "5", "--embed-dim", "16", "--num-layers", "1", "--batch-size", "4"]) == 0
    seen = {}
    real_check, real_sweep = inspect_mod.check_compatible, inspect_mod.return_conditioning

    def check(algo, dataset):
        seen["meta_extra"] = dataset.meta.extra
        return real_check(algo, dataset)

    def sweep(*args, **kwargs):
        seen["env_kwargs"] = kwargs.get("env_kwargs")
        return real_sweep(*args, **kwargs)

    monkeypatch.setattr(inspect_mod, "check_compatible", check)
    monkeypatch.setattr(inspect_mod, "return_conditioning", sweep)
    inspect_mod.inspect_checkpoint(run, str(keytodoor), tmp_path / "report", eval_episodes=1,
                                   eval_envs=1, error_episodes=2)
    assert seen["meta_extra"].get("reward") == "delayed"
    assert seen["env_kwargs"] == {"reward": "delayed"}
