"""Gymnasium v5 MuJoCo envs against the layout of D4RL v2 data (recorded on gym v3): the
observation is the simulator state without the root x position, velocities clipped to
+-10 for hopper and walker2d; action sizes and bounds, control period and time limit match;
Walker2d-v5's foot friction differs, and offrl/Walker2dD4RL-v5 restores it."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from offrl.datasets.d4rl import load_d4rl
from offrl.envs import find_env_facts, make_env
from tests.data_helpers import flat_d4rl, write_hdf5

# D4RL v2 (gym v3): obs dim, action dim, control period (frame_skip * timestep), qvel clip.
D4RL_V2 = {
    "hopper": (11, 3, 0.008, 10.0),
    "halfcheetah": (17, 6, 0.05, None),
    "walker2d": (17, 6, 0.008, 10.0),
}


@pytest.mark.parametrize("key", sorted(D4RL_V2))
def test_v5_observation_is_d4rl_layout(key: str) -> None:
    obs_dim, act_dim, period, clip = D4RL_V2[key]
    facts = find_env_facts(f"{key}-medium-v2")
    env = make_env(facts.env_id)
    u = env.unwrapped
    assert env.observation_space.shape == (obs_dim,)
    assert env.action_space.shape == (act_dim,)
    np.testing.assert_array_equal(env.action_space.low, -1.0)
    np.testing.assert_array_equal(env.action_space.high, 1.0)
    assert u.frame_skip * u.model.opt.timestep == pytest.approx(period)
    assert env.spec.max_episode_steps == facts.max_episode_steps == 1000
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=3)
    for _ in range(60):
        qpos, qvel = u.data.qpos.copy(), u.data.qvel.copy()
        vel = qvel if clip is None else np.clip(qvel, -clip, clip)
        np.testing.assert_allclose(obs, np.concatenate([qpos[1:], vel]), rtol=0, atol=1e-12)
        obs, _, term, trunc, _ = env.step(rng.uniform(-1, 1, act_dim))
        if term or trunc:
            obs, _ = env.reset(seed=4)
    env.close()


def _friction(env, geom: str) -> float:
    m = env.unwrapped.model
    return float(m.geom_friction[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, geom)][0])


def test_walker2d_d4rl_dynamics_env() -> None:
    v5 = make_env("Walker2d-v5")
    facts = find_env_facts("walker2d")
    d4rl = make_env(facts.d4rl_eval_env_id)
    assert facts.d4rl_eval_env_id != facts.env_id
    # v5 equalized the feet; gym v3/v4 (D4RL's) had a 0.9 right foot and 1.9 left foot.
    assert _friction(v5, "foot_geom") == _friction(v5, "foot_left_geom") == 1.9
    assert (_friction(d4rl, "foot_geom"), _friction(d4rl, "foot_left_geom")) == (0.9, 1.9)
    assert d4rl.observation_space == v5.observation_space
    assert d4rl.spec.max_episode_steps == 1000
    # Same reference scores either way.
    assert find_env_facts(facts.d4rl_eval_env_id) is facts
    # Hopper and halfcheetah evaluate on the v5 env itself.
    assert find_env_facts("hopper").d4rl_eval_env_id == "Hopper-v5"


def test_d4rl_loader_picks_dynamics_env(tmp_path) -> None:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(5, 17)).astype(np.float32)
    from offrl.types import Episode

    ep = Episode(obs, rng.uniform(-1, 1, (4, 6)).astype(np.float32),
                 np.ones(4, np.float32), True, False)
    released = write_hdf5(tmp_path / "walker2d_medium-v2.hdf5", flat_d4rl([ep]))
    assert load_d4rl(released).meta.env_id == "offrl/Walker2dD4RL-v5"
    own = write_hdf5(tmp_path / "walker2d-medium-replay.hdf5", flat_d4rl([ep]))
    assert load_d4rl(own).meta.env_id == "Walker2d-v5"
    assert load_d4rl(released, env_id="Walker2d-v5").meta.env_id == "Walker2d-v5"
