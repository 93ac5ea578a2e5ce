"""The contract every algorithm passes, for Box and Discrete actions alike."""

from __future__ import annotations

import ast
import inspect
import io
import math
import textwrap
from copy import deepcopy

import numpy as np
import pytest
import torch

from offrl.algorithm import Algorithm, Policy
from offrl.algorithms import ALGORITHMS, CQL, ContinuousCQL, DiscreteCQL
from offrl.datasets import SequenceSampler, TransitionSampler
from offrl.types import SequenceBatch, StateActionBatch, TransitionBatch
from tests.algo_helpers import tiny_config, tiny_dataset

NAMES = sorted(ALGORITHMS)
KINDS = ["continuous", "discrete"]
CASES = [(n, k) for n in NAMES for k in KINDS]
LOSS_KEY = {"dt": "loss", "bc": "loss", "pbc": "loss", "cql": "critic_loss"}


def build(name: str, kind: str, seed: int = 0, **overrides):
    ds = tiny_dataset(kind)
    torch.manual_seed(seed)
    algo = ALGORITHMS[name].from_dataset(tiny_config(name, **overrides), ds)
    return algo, ds


def trained(name: str, kind: str, updates: int):
    """`build` plus `updates` gradient steps; returns the algorithm, data and its sampler."""
    algo, ds = build(name, kind)
    sampler = algo.make_sampler(ds, seed=0)
    for _ in range(updates):
        algo.update(sampler.sample())
    return algo, ds, sampler


def params(algo) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in algo.nets.state_dict().items()}


def random_obs(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(loc=[1.0, -2.0, 0.5], scale=[1.0, 3.0, 0.2], size=(n, 3)).astype(np.float32)


def run_policy(policy, obs_seq: np.ndarray, rewards: np.ndarray,
               resets: dict[int, np.ndarray] | None = None) -> list[np.ndarray]:
    """Feed (T, N, 3) observations and (T, N) rewards; `resets[t]` masks rows reset before t."""
    n = obs_seq.shape[1]
    policy.reset(np.ones(n, dtype=bool))
    out = []
    for t in range(len(obs_seq)):
        if resets and t in resets:
            policy.reset(resets[t])
        out.append(policy.act(obs_seq[t], rewards[t]))
    return out


# ---- registry and configs ---------------------------------------------------------------


def test_registry_and_class_attributes():
    assert set(ALGORITHMS) == {"dt", "cql", "bc", "pbc"}
    for name, cls in ALGORITHMS.items():
        assert cls.name == name
        assert cls.batch_kind == ("sequence" if name == "dt" else "transition")
        assert cls.Config.__name__ == {"dt": "DTConfig", "cql": "CQLConfig", "bc": "BCConfig",
                                       "pbc": "PercentBCConfig"}[name]


@pytest.mark.parametrize("name", NAMES)
def test_config_documents_paper_deviations_and_every_field(name):
    cfg_cls = ALGORITHMS[name].Config
    doc = inspect.getdoc(cfg_cls)
    assert "arxiv.org" in doc and "eviation" in doc, f"{cfg_cls.__name__} docstring"
    # Every field (including inherited ones) is followed by its own docstring.
    for klass in cfg_cls.__mro__:
        if klass is object or not hasattr(klass, "__dataclass_fields__"):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for stmt, nxt in zip(body, [*body[1:], None], strict=True):
            if isinstance(stmt, ast.AnnAssign):
                assert (isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                        and isinstance(nxt.value.value, str)), (
                    f"{klass.__name__}.{stmt.target.id} has no docstring")
    assert cfg_cls().batch_size >= 1  # the defaults form a valid config


@pytest.mark.parametrize("name", NAMES)
def test_config_parses_from_cli(name, capsys):
    import tyro

    cfg_cls = ALGORITHMS[name].Config
    cfg = tyro.cli(cfg_cls, args=["--batch-size", "7"])
    assert cfg == cfg_cls(batch_size=7)
    with pytest.raises(SystemExit):
        tyro.cli(cfg_cls, args=["--help"])
    assert "per gradient step" in capsys.readouterr().out  # batch_size's field docstring


def test_bad_config_values_are_rejected():
    from offrl.algorithms import BCConfig, CQLConfig, DTConfig, PercentBCConfig

    for make in (lambda: DTConfig(embed_dim=10, num_heads=3), lambda: DTConfig(context=0),
                 lambda: DTConfig(return_scale=0.0), lambda: CQLConfig(tau=0.0),
                 lambda: BCConfig(hidden=()), lambda: PercentBCConfig(top_fraction=0.0)):
        with pytest.raises(ValueError):
            make()


def test_wrong_config_type_is_a_type_error():
    ds = tiny_dataset("continuous")
    with pytest.raises(TypeError, match="BCConfig"):
        ALGORITHMS["bc"].from_dataset(tiny_config("dt"), ds)


def test_cql_dispatches_on_the_action_space():
    for kind, impl in (("continuous", ContinuousCQL), ("discrete", DiscreteCQL)):
        algo, _ = build("cql", kind)
        assert type(algo) is impl and isinstance(algo, CQL) and algo.name == "cql"


# ---- training --------------------------------------------------------------------------


@pytest.mark.parametrize("name,kind", CASES)
def test_update_returns_finite_metrics_and_changes_parameters(name, kind):
    algo, ds = build(name, kind)
    assert isinstance(algo, Algorithm)
    sampler = algo.make_sampler(ds, seed=0)
    want = SequenceSampler if algo.batch_kind == "sequence" else TransitionSampler
    assert isinstance(sampler, want)
    before = params(algo)
    for _ in range(3):
        batch = sampler.sample()
        want_batch = {"dt": SequenceBatch, "cql": TransitionBatch}.get(name, StateActionBatch)
        assert isinstance(batch, want_batch)
        metrics = algo.update(batch)
        assert metrics and all(type(v) is float and math.isfinite(v) for v in metrics.values())
        assert LOSS_KEY[name] in metrics and not any(k.startswith("train/") for k in metrics)
    after = params(algo)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no parameter changed after 3 updates"
    assert algo.num_updates == 3


@pytest.mark.parametrize("name,kind", CASES)
def test_loss_falls_on_a_fixed_batch(name, kind):
    # Deterministic DT (no dropout) and faster critics so 150 steps show a clear trend.
    overrides = {"dt": dict(dropout=0.0), "cql": dict(critic_lr=3e-3, actor_lr=1e-3)}
    algo, ds = build(name, kind, **overrides.get(name, {}))
    batch = algo.make_sampler(ds, seed=1).sample()
    losses = [algo.update(batch)[LOSS_KEY[name]] for _ in range(150)]
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < first - 0.1 * abs(first), f"{name}/{kind}: loss {first:.4f} -> {last:.4f}"


@pytest.mark.parametrize("name,kind", CASES)
def test_same_seed_gives_identical_parameters(name, kind):
    def train(seed: int) -> dict[str, torch.Tensor]:
        algo, ds = build(name, kind, seed=seed)
        sampler = algo.make_sampler(ds, seed=seed)
        for _ in range(5):
            algo.update(sampler.sample())
        return params(algo)

    a, b, c = train(3), train(3), train(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


# ---- checkpoints ------------------------------------------------------------------------


@pytest.mark.parametrize("name,kind", CASES)
def test_checkpoint_round_trip_acts_and_resumes_identically(name, kind):
    algo, ds, sampler = trained(name, kind, 4)
    buf = io.BytesIO()
    torch.save(algo.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=False)
    assert set(state) >= {"config", "spaces", "normalizer", "resolved", "nets", "optimizers",
                          "num_updates"}
    restored = type(algo).from_state_dict(state)
    again = ALGORITHMS[name].from_state_dict(state)  # the registry entry dispatches too
    assert type(restored) is type(again) is type(algo)
    assert restored.num_updates == 4 and restored.config == algo.config
    # A fresh instance with other weights, then load_state_dict: the other restore path.
    other, _ = build(name, kind, seed=99)
    other.load_state_dict(state)

    rng = np.random.default_rng(0)
    obs, rew = random_obs(rng, 6 * 3).reshape(6, 3, 3), rng.normal(size=(6, 3))
    ref = run_policy(algo.make_policy(3), obs, rew)
    for copy in (restored, again, other):
        got = run_policy(copy.make_policy(3), obs, rew)
        assert all(np.array_equal(x, y) for x, y in zip(ref, got, strict=True))

    # Resume: the next update from the restored copy equals the original's.
    batch = sampler.sample()
    torch.manual_seed(5)
    m1 = algo.update(batch)
    torch.manual_seed(5)
    m2 = restored.update(batch)
    assert m1 == m2
    p1, p2 = params(algo), params(restored)
    assert all(torch.equal(p1[k], p2[k]) for k in p1)


def test_checkpoint_with_two_zero_decay_optimizer_groups_still_resumes():
    # Before weight_decay_groups gave one group at weight decay 0, BC saved two (weights,
    # then the rest): such a checkpoint resumes exactly like one saved now.
    algo, _, sampler = trained("bc", "continuous", 4)
    state = deepcopy(algo.state_dict())  # no tensor shared with the live optimizer
    opt = state["optimizers"]["policy"]
    (group,) = opt["param_groups"]
    decay = [i for i, (n, _) in enumerate(algo.policy_net.named_parameters())
             if n.endswith("weight")]
    assert group["params"][:len(decay)] == list(range(len(decay)))  # weights come first
    old = {**opt, "param_groups": [{**group, "params": group["params"][:len(decay)]},
                                   {**group, "params": group["params"][len(decay):]}]}
    restored = type(algo).from_state_dict({**state, "optimizers": {"policy": old}})
    batch = sampler.sample()
    assert algo.update(batch) == restored.update(batch)
    p1, p2 = params(algo), params(restored)
    assert all(torch.equal(p1[k], p2[k]) for k in p1)


def test_load_state_dict_rejects_another_algorithm_or_space():
    bc, _ = build("bc", "continuous")
    dt, _ = build("dt", "continuous")
    with pytest.raises(ValueError, match="algorithm"):
        bc.load_state_dict(dt.state_dict())
    bc_discrete, _ = build("bc", "discrete")
    with pytest.raises(ValueError, match="spaces"):
        bc.load_state_dict(bc_discrete.state_dict())
    bc_wide, _ = build("bc", "continuous", hidden=(8,), learning_rate=0.1)
    with pytest.raises(ValueError, match=r"\['hidden', 'learning_rate'\]"):
        bc.load_state_dict(bc_wide.state_dict())


# ---- policies ---------------------------------------------------------------------------


@pytest.mark.parametrize("name,kind", CASES)
def test_policy_serves_parallel_envs_with_masked_resets(name, kind):
    algo, ds, sampler = trained(name, kind, 3)
    n, steps = 4, 9
    policy = algo.make_policy(n)
    assert isinstance(policy, Policy)
    rng = np.random.default_rng(1)
    obs, rew = random_obs(rng, steps * n).reshape(steps, n, 3), rng.normal(size=(steps, n))
    plain = run_policy(algo.make_policy(n), obs, rew)
    mask = np.array([False, True, False, False])
    with_reset = run_policy(policy, obs, rew, resets={5: mask})
    for a in plain:
        if kind == "discrete":
            assert a.shape == (n,) and a.dtype == np.int64 and ((a >= 0) & (a < 3)).all()
        else:
            space = ds.action_space
            assert a.shape == (n, 2) and a.dtype == np.float32
            assert ((a >= space.low) & (a <= space.high)).all()
    for t in range(steps):
        # Rows that were not reset never notice the other row's reset.
        np.testing.assert_array_equal(plain[t][~mask], with_reset[t][~mask])
    # The reset row acts as a fresh policy started at step 5 would.
    fresh = run_policy(algo.make_policy(n), obs[5:], rew[5:])
    for t in range(5, steps):
        np.testing.assert_array_equal(with_reset[t][mask], fresh[t - 5][mask])


@pytest.mark.parametrize("name", NAMES)
def test_policy_rejects_bad_shapes(name):
    algo, _ = build(name, "continuous")
    policy = algo.make_policy(2)
    with pytest.raises(ValueError, match="obs"):
        policy.act(np.zeros((3, 3), np.float32), np.zeros(2))
    with pytest.raises(ValueError, match="last_reward"):
        policy.act(np.zeros((2, 3), np.float32), np.zeros(3))
    with pytest.raises(ValueError, match="env_mask"):
        policy.reset(np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="env_mask"):
        policy.reset(np.ones(2, dtype=np.int64))


def test_percent_bc_trains_on_the_top_episodes_only():
    algo, ds = build("pbc", "continuous")
    kept = ds.top_fraction(0.5)
    sampler = algo.make_sampler(ds, seed=0)
    assert sampler.num_transitions == kept.num_steps  # all kept episodes have s' known
    np.testing.assert_allclose(algo.normalizer.mean, kept.step_observations.mean(0), rtol=1e-5)


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_bc_prepared_batches_train_exactly_like_raw_ones(kind):
    # BC's sampler hands over normalized observations and [-1, 1] actions (prepared); the
    # same draws as raw batches from a plain TransitionSampler give bit-identical training.
    a, ds = build("bc", kind)
    b, _ = build("bc", kind)
    prepared, raw = a.make_sampler(ds, seed=2), TransitionSampler(ds, a.config.batch_size, 2)
    for _ in range(4):
        x, y = prepared.sample(), raw.sample()
        assert x.prepared
        assert a.update(x) == b.update(y)
    pa, pb = params(a), params(b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_normalizer_and_spaces_are_saved_as_plain_data():
    algo, ds = build("bc", "continuous")
    state = algo.state_dict()
    assert state["spaces"] == {"obs_shape": [3],
                               "action": {"type": "box", "low": [-2.0, 0.0], "high": [2.0, 1.0]}}
    np.testing.assert_allclose(state["normalizer"]["mean"], ds.step_observations.mean(0),
                               rtol=1e-5)
    discrete, _ = build("bc", "discrete")
    assert discrete.state_dict()["spaces"]["action"] == {"type": "discrete", "n": 3}


def test_cql_lagrange_variant_learns_its_weight_and_checkpoints_it():
    algo, ds = build("cql", "continuous", lagrange=True, target_action_gap=1.0,
                     backup_entropy=True, cql_alpha_lr=1e-2)
    sampler = algo.make_sampler(ds, seed=0)
    start = algo.scalars["log_cql_alpha"].item()
    metrics = [algo.update(sampler.sample()) for _ in range(5)]
    assert all(math.isfinite(m["cql_alpha"]) for m in metrics)
    assert metrics[0]["cql_alpha"] == pytest.approx(5.0)
    # The gap of an untrained critic is above the 1.0 threshold: the weight must grow.
    assert metrics[0]["cql_gap"] > 1.0 and algo.scalars["log_cql_alpha"].item() > start
    state = algo.state_dict()
    assert "cql_alpha" in state["optimizers"]
    restored = ALGORITHMS["cql"].from_state_dict(state)
    assert restored.scalars["log_cql_alpha"].item() == algo.scalars["log_cql_alpha"].item()
