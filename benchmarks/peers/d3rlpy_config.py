"""offrl CQL / DT configs -> d3rlpy 2.8.1 `CQLConfig` / `DecisionTransformerConfig` arguments,
as plain JSON-able values.

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

DT (`dt_kwargs`): batch_size, context -> context_size, embed_dim -> a linear state encoder of
that width (VectorEncoderFactory([embed_dim], exclude_last_activation=True)), num_layers,
num_heads, dropout -> embed / attention / residual dropout, activation -> activation_type,
learning_rate, weight_decay -> GPTAdamWFactory (decay on linear weights only, offrl's rule),
warmup_steps -> WarmupSchedulerFactory (lr * min((t + 1) / W, 1), offrl's schedule),
grad_clip * |A| -> clip_grad_norm (d3rlpy's loss sums the squared error over the |A| action
dims where offrl, like the reference code, averages it: its gradients are |A| times offrl's,
so the same clipping needs an |A| times larger threshold; Adam's step is otherwise invariant
to that scale), return scale -> MultiplyRewardScaler(1 / scale) (returns-to-go
divided by the scale), max_timestep, the timestep embedding (SIMPLE position encoding),
standardized observations. kv_cache and act_precision only change offrl's acting: d3rlpy's
stateful wrapper recomputes the full window in fp32, which equals offrl's default acting.
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
        "Update order: d3rlpy steps the critics first, then the temperature, then computes "
        "the actor loss with the updated critics and temperature; offrl computes every loss "
        "from the pre-step networks, then steps temperature, actor, critics.",
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


DT_KEYS = frozenset({
    "batch_size", "context", "embed_dim", "num_layers", "num_heads", "dropout",
    "learning_rate", "weight_decay", "warmup_steps", "grad_clip", "activation", "return_scale",
    "target_return", "kv_cache", "act_precision", "max_timestep", "timestep_init_std",
})


def dt_kwargs(algo_config: Mapping[str, Any], return_scale: float, max_timestep: int,
              act_dim: int) -> dict[str, Any]:
    """d3rlpy `DecisionTransformerConfig` arguments for offrl's (Box-action) DT `algo_config`;
    `return_scale` / `max_timestep` are offrl's resolved values where the config says None."""
    c = dict(algo_config)
    unknown = sorted(set(c) - DT_KEYS)
    if unknown:
        raise ValueError(f"offrl DT config keys with no d3rlpy mapping: {unknown} "
                         f"(update benchmarks/peers/d3rlpy_config.py)")
    if c.get("activation", "relu") not in ("relu", "gelu"):
        raise ValueError(f"DT activation {c['activation']!r}: expected relu or gelu")
    scale = float(c["return_scale"] if c.get("return_scale") is not None else return_scale)
    steps = int(c["max_timestep"] if c.get("max_timestep") is not None else max_timestep)
    dropout = float(c["dropout"])
    return {
        "batch_size": int(c["batch_size"]), "context_size": int(c["context"]),
        "embed_dim": int(c["embed_dim"]), "num_layers": int(c["num_layers"]),
        "num_heads": int(c["num_heads"]), "attn_dropout": dropout,
        "resid_dropout": dropout, "embed_dropout": dropout,
        "activation_type": c.get("activation", "relu"),
        "learning_rate": float(c["learning_rate"]), "weight_decay": float(c["weight_decay"]),
        "warmup_steps": int(c["warmup_steps"]),
        "clip_grad_norm": float(c["grad_clip"]) * act_dim,
        "reward_scale": 1.0 / scale, "max_timestep": steps,
    }


def dt_differences(precision: str) -> list[str]:
    """What still differs between offrl's DT and d3rlpy's under `dt_kwargs`."""
    notes = [
        "Windows: both take the K-step window ending at a uniformly drawn step (left-padded "
        "at episode starts); d3rlpy never draws the last step of a time-out episode.",
        "Padding: d3rlpy pads short windows with zeros and masks them; offrl pads with zeros "
        "after normalization and masks padded keys (same effect on real tokens).",
        "Loss: d3rlpy sums the squared error over action dims (mapped: clip threshold x |A|) "
        "and averages over all B x K positions, padded ones counting as 0; offrl averages "
        "over dims and real steps only. Batches with short windows (episode starts) weigh "
        "less in d3rlpy.",
        "Initialization: offrl applies GPT-2 init to the transformer blocks only, embeddings "
        "keep torch's (the reference code's choice; the timestep embedding starts N(0, 1) "
        "unless `timestep_init_std` is set); d3rlpy inits its LayerNorms, GPT-2 blocks and "
        "timestep embedding GPT-2 style (N(0, 0.02)), its state / return / action "
        "embeddings and output head keep torch's. The timestep embedding's std is the one "
        "that showed: with 0.02, offrl's training loss after 1000 updates on hopper "
        "medium-replay (seed 0, fp32) is 0.196 instead of 0.234 (d3rlpy's, on real steps: "
        "~0.208).",
        "Timesteps: d3rlpy counts from 1, offrl from 0 (one embedding row apart).",
        "Dropout: offrl's own dropout kernel (same distribution, different random stream).",
        "Acting: d3rlpy's StatefulTransformerWrapper, one env at a time, served to offrl's "
        "evaluator by benchmarks/peers/d3rlpy_dt_actor.py (same envs and seeds).",
        "Random streams differ: only the seed distributions are comparable.",
    ]
    if precision != "fp32":
        notes.append(f"Precision: offrl trained under {precision} autocast; d3rlpy fp32 (use "
                     f"--offrl-precision fp32).")
    return notes


def build_d3rlpy_dt_config(kwargs: Mapping[str, Any]) -> Any:
    """d3rlpy `DecisionTransformerConfig` from `dt_kwargs` output (inside the d3rlpy venv)."""
    import d3rlpy
    from d3rlpy.models import VectorEncoderFactory
    from d3rlpy.preprocessing import MultiplyRewardScaler, StandardObservationScaler

    k = dict(kwargs)
    optim = d3rlpy.optimizers.GPTAdamWFactory(
        weight_decay=k.pop("weight_decay"), clip_grad_norm=k.pop("clip_grad_norm"),
        lr_scheduler_factory=d3rlpy.optimizers.WarmupSchedulerFactory(
            warmup_steps=k.pop("warmup_steps")))
    encoder = VectorEncoderFactory(hidden_units=[k.pop("embed_dim")],
                                   exclude_last_activation=True)
    return d3rlpy.algos.DecisionTransformerConfig(
        encoder_factory=encoder, optim_factory=optim,
        position_encoding_type=d3rlpy.PositionEncodingType.SIMPLE,
        observation_scaler=StandardObservationScaler(),
        reward_scaler=MultiplyRewardScaler(k.pop("reward_scale")), **k)


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
