"""offrl CQL config -> d3rlpy 2.8.1 `CQLConfig` arguments, as plain JSON-able values.

Pure Python (imports neither offrl nor d3rlpy): `experiments/peer_check.py` computes the mapping
in offrl's venv from the config the hopper study ran, and `d3rlpy_train.py --config-json`
builds d3rlpy's config from it in the d3rlpy venv (`build_d3rlpy_config`).

What maps exactly (offrl key -> d3rlpy argument):
  batch_size -> batch_size, gamma -> gamma, tau -> tau, twin critics -> n_critics=2,
  actor_hidden / critic_hidden -> VectorEncoderFactory(hidden_units) of the actor / critics
  (ReLU MLPs; d3rlpy's critic encoder concatenates observation and action like offrl's),
  actor_lr -> actor_learning_rate, critic_lr -> critic_learning_rate,
  alpha_lr -> temp_learning_rate, init_alpha -> initial_temperature (SAC's entropy
  temperature; target entropy -|A| in both), num_sampled_actions -> n_action_samples,
  observation normalization -> StandardObservationScaler, no action / reward scaler (offrl
  maps Box actions to [-1, 1]; hopper's already are), max_q_backup=False.
  Fixed weight (lagrange false): conservative_weight=cql_alpha, alpha_learning_rate=0,
  initial_alpha=1, alpha_threshold=0. d3rlpy's conservative term is then exactly
  cql_alpha * sum over critics of E[logsumexp Q - Q(s, a_data)], offrl's `cql_loss` (a
  non-zero threshold would only shift the logged value).
  Lagrange (lagrange true): conservative_weight=1, initial_alpha=cql_alpha,
  alpha_threshold=target_action_gap, alpha_learning_rate=cql_alpha_lr: the learned weight
  starts at cql_alpha and the threshold applies to the unweighted gap, offrl's convention.

What cannot map (raises `ValueError`): cql_temperature != 1 (d3rlpy's logsumexp has no
temperature), a target_entropy other than -|A|, any key this module does not know (a new offrl
knob must not be dropped silently). `remaining_differences` lists what still differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# offrl CQLConfig keys this mapping understands (algorithms/cql.py).
CQL_KEYS = frozenset({
    "batch_size", "gamma", "tau", "actor_hidden", "critic_hidden", "actor_lr", "critic_lr",
    "alpha_lr", "init_alpha", "target_entropy", "backup_entropy", "cql_alpha",
    "num_sampled_actions", "cql_temperature", "lagrange", "target_action_gap", "cql_alpha_lr",
    "discrete_cql_alpha",
})


def cql_kwargs(algo_config: Mapping[str, Any], act_dim: int) -> dict[str, Any]:
    """d3rlpy `CQLConfig` keyword arguments for offrl's (Box-action) CQL `algo_config`; the
    encoders as `actor_hidden` / `critic_hidden` lists (see `build_d3rlpy_config`)."""
    c = dict(algo_config)
    unknown = sorted(set(c) - CQL_KEYS)
    if unknown:
        raise ValueError(f"offrl CQL config keys with no d3rlpy mapping: {unknown} "
                         f"(update benchmarks/peers/d3rlpy_config.py)")
    missing = sorted(CQL_KEYS - {"discrete_cql_alpha"} - set(c))
    if missing:
        raise ValueError(f"offrl CQL config lacks {missing}: pass the full algo_config "
                         f"(a run's config.yaml or experiments/configs/*.yaml)")
    if float(c["cql_temperature"]) != 1.0:
        raise ValueError(f"cql_temperature={c['cql_temperature']}: d3rlpy's CQL has no "
                         f"logsumexp temperature (only 1.0 maps)")
    if c["target_entropy"] is not None and float(c["target_entropy"]) != -float(act_dim):
        raise ValueError(f"target_entropy={c['target_entropy']}: d3rlpy's SAC temperature "
                         f"always targets -|A| = {-act_dim}")
    kwargs: dict[str, Any] = {
        "batch_size": int(c["batch_size"]), "gamma": float(c["gamma"]),
        "tau": float(c["tau"]), "n_critics": 2,
        "actor_hidden": [int(h) for h in c["actor_hidden"]],
        "critic_hidden": [int(h) for h in c["critic_hidden"]],
        "actor_learning_rate": float(c["actor_lr"]),
        "critic_learning_rate": float(c["critic_lr"]),
        "temp_learning_rate": float(c["alpha_lr"]),
        "initial_temperature": float(c["init_alpha"]),
        "n_action_samples": int(c["num_sampled_actions"]),
        # offrl's backup_entropy subtracts alpha log pi(a'|s') from a sampled a', which is
        # d3rlpy's soft backup; without it see remaining_differences.
        "soft_q_backup": bool(c["backup_entropy"]), "max_q_backup": False,
    }
    if c["lagrange"]:
        kwargs.update(conservative_weight=1.0, initial_alpha=float(c["cql_alpha"]),
                      alpha_threshold=float(c["target_action_gap"]),
                      alpha_learning_rate=float(c["cql_alpha_lr"]))
    else:
        kwargs.update(conservative_weight=float(c["cql_alpha"]), initial_alpha=1.0,
                      alpha_threshold=0.0, alpha_learning_rate=0.0)
    return kwargs


def remaining_differences(algo_config: Mapping[str, Any], precision: str) -> list[str]:
    """What still differs between offrl's CQL under `algo_config` / `precision` and d3rlpy's
    CQL under `cql_kwargs(algo_config)`, one sentence each (read from both sources)."""
    notes = []
    if not algo_config["backup_entropy"]:
        notes.append(
            "TD target action: offrl samples a' ~ pi(.|s') (no entropy term); d3rlpy without "
            "soft_q_backup uses the deterministic tanh(mu(s')). No d3rlpy setting gives a "
            "sampled a' without the entropy term.")
    notes += [
        "Update order: d3rlpy steps the critics first, then computes the actor loss with the "
        "updated critics; offrl computes every loss from the pre-step networks, then steps "
        "temperature, actor, critics.",
        "Temperature loss: d3rlpy -(alpha * (log pi + target)) (its log-alpha gradient is "
        "scaled by alpha); offrl -(log_alpha * (log pi + target)). Adam largely removes the "
        "scale, not exactly.",
        "Observation scaler: d3rlpy (x - mean) / (std + 1e-3), statistics over its transitions "
        "(the last step of each time-out episode excluded); offrl (x - mean) / max(std, 1e-3) "
        "over every step.",
        "Time-outs: d3rlpy keeps an episode's observations only, so the last step of each "
        "truncated episode has no successor and is never sampled; offrl trains on it with the "
        "stored next observation (a handful of steps per dataset).",
        "Network layout: d3rlpy's actor has separate mu / log-std linear heads, offrl one "
        "linear of width 2|A| (the same function class and init distribution).",
        "Random streams differ (initialization, batches, action samples): only the seed "
        "distributions are comparable, not seed k with seed k.",
    ]
    if precision != "fp32":
        notes.append(f"Precision: offrl ran the update under {precision} autocast (fp32 master "
                     f"weights, fp32 critic output layer); d3rlpy runs fp32 (use "
                     f"--offrl-precision fp32 for an fp32 offrl side).")
    if algo_config["lagrange"]:
        notes.append("Lagrange: d3rlpy steps its weight first and weights the critic loss with "
                     "the stepped value; offrl weights it with the pre-step value.")
    return notes


def build_d3rlpy_config(kwargs: Mapping[str, Any]) -> Any:
    """d3rlpy `CQLConfig` from `cql_kwargs` output (call inside the d3rlpy venv)."""
    import d3rlpy
    from d3rlpy.models import VectorEncoderFactory
    from d3rlpy.preprocessing import StandardObservationScaler

    k = dict(kwargs)
    actor = VectorEncoderFactory(hidden_units=k.pop("actor_hidden"))
    critic = VectorEncoderFactory(hidden_units=k.pop("critic_hidden"))
    return d3rlpy.algos.CQLConfig(actor_encoder_factory=actor, critic_encoder_factory=critic,
                                  observation_scaler=StandardObservationScaler(), **k)
