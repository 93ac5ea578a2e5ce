"""What a Decision Transformer has learned: attention over dataset episodes, attention
rollout, return conditioning and action-prediction error (the `offrl inspect` library).

Attention is captured with the model's own `return_attention=True` path, which is only
taken here: training and acting never pay for it (no hooks are installed anywhere).

Windows are built exactly as the policy builds them when acting (`offrl.types` LEFT-padding
convention): the K steps ending at step `end` of an episode, normalized states, [-1, 1]
actions, returns-to-go divided by the return scale, timesteps clamped to the embedding, and
zeros on padding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from offrl.datasets.core import EpisodeDataset

TOKEN_KINDS = ("R", "s", "a")  # token order within a timestep


@dataclass(frozen=True)
class Window:
    """Model inputs of one left-padded K-step window ending at step `end` of an episode."""

    episode: int
    end: int  # episode step (0-based) at position K-1
    steps: np.ndarray  # (K,) episode step of each position, -1 on padding
    inputs: tuple[torch.Tensor, ...]  # states, actions, rtg, timesteps, mask; batch of 1

    @property
    def mask(self) -> np.ndarray:
        return self.steps >= 0  # (K,)

    def token_labels(self) -> list[str]:
        """'R_t', 's_t', 'a_t' per token (3K), '·' on padding."""
        return [f"{kind}_{t}" if t >= 0 else "·" for t in self.steps for kind in TOKEN_KINDS]


def check_compatible(algo: Any, dataset: EpisodeDataset) -> None:
    """The dataset must have the checkpoint's observation and action spaces."""
    if getattr(algo, "name", None) != "dt" or not hasattr(algo, "model"):
        raise ValueError(f"inspect needs a Decision Transformer checkpoint, got "
                         f"'{getattr(algo, 'name', type(algo).__name__)}'")
    s = algo.spaces
    if tuple(dataset.observations.shape[1:]) != tuple(s.obs_shape):
        raise ValueError(f"dataset '{dataset.meta.name}' has observations of shape "
                         f"{dataset.observations.shape[1:]}, the checkpoint expects {s.obs_shape}")
    if dataset.discrete != s.discrete:
        kind = "discrete" if dataset.discrete else "continuous"
        raise ValueError(f"dataset '{dataset.meta.name}' has {kind} actions, the checkpoint "
                         f"does not")


def _episode_arrays(dataset: EpisodeDataset, ep: int) -> tuple[np.ndarray, ...]:
    if not 0 <= ep < dataset.num_episodes:
        raise ValueError(f"episode {ep} out of range: '{dataset.meta.name}' has "
                         f"{dataset.num_episodes} episodes")
    s, e = int(dataset.episode_starts[ep]), int(dataset.episode_starts[ep + 1])
    obs = dataset.observations[s + ep: e + ep]  # (T, D) the observation each action saw
    return obs, dataset.actions[s:e], dataset.returns_to_go[s:e], dataset.timesteps[s:e]


def windows(algo: Any, dataset: EpisodeDataset, ep: int, ends: np.ndarray,
            context: int | None = None) -> tuple[np.ndarray, tuple[torch.Tensor, ...]]:
    """Batched left-padded windows of `context` (default: the model's K) steps ending at each
    step in `ends` of episode `ep`: (steps (B, K) with -1 on padding, model inputs)."""
    k = int(context or algo.config.context)
    if not 1 <= k <= algo.config.context:
        raise ValueError(f"context {k} must be in 1..{algo.config.context} (the checkpoint's K)")
    obs, act, rtg, ts = _episode_arrays(dataset, ep)
    ends = np.asarray(ends, dtype=np.int64)
    if ends.size and (ends.min() < 0 or ends.max() >= len(act)):
        raise ValueError(f"step {int(ends.max())} out of range for episode {ep} "
                         f"({len(act)} steps)")
    steps = ends[:, None] - np.arange(k - 1, -1, -1)[None, :]  # (B, K)
    mask = steps >= 0
    idx = np.where(mask, steps, 0)
    dev = algo.device
    m = torch.as_tensor(mask, device=dev)
    x = torch.as_tensor(obs[idx], device=dev)  # (B, K, D)
    states = algo.normalize_obs(x) * m[..., None]
    a = torch.as_tensor(act[idx], device=dev)
    actions = a * m if algo.spaces.discrete else algo.actions.to_unit(a) * m[..., None]
    rtg_t = torch.as_tensor(rtg[idx] / algo.resolved["return_scale"], dtype=torch.float32,
                            device=dev) * m  # (B, K)
    max_t = int(algo.resolved["max_timestep"]) - 1
    timesteps = torch.as_tensor(np.minimum(ts[idx], max_t), device=dev) * m
    return np.where(mask, steps, -1), (states, actions, rtg_t, timesteps, m)


@torch.no_grad()
def capture_attention(algo: Any, dataset: EpisodeDataset, ep: int, end: int | None = None,
                      context: int | None = None) -> tuple[Window, np.ndarray]:
    """Attention of every layer and head over the window ending at `end` (default: the last
    step): (window, maps (L, H, 3K, 3K), rows = queries, columns = keys)."""
    length = int(dataset.episode_lengths[ep]) if 0 <= ep < dataset.num_episodes else 0
    end = length - 1 if end is None else int(end)
    steps, inputs = windows(algo, dataset, ep, np.array([end]), context)
    model = algo.model
    was_training = model.training
    model.eval()  # no dropout on the weights we report
    try:
        _, maps = model(*inputs, return_attention=True)
    finally:
        model.train(was_training)
    att = torch.stack([w[0] for w in maps]).float().cpu().numpy()  # (L, H, 3K, 3K)
    return Window(ep, end, steps[0], inputs), att


def attention_rollout(maps: np.ndarray, token_mask: np.ndarray | None = None) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020, https://arxiv.org/abs/2005.00928): per layer
    average the heads, add the identity for the residual stream, renormalize rows, then
    multiply through the layers (last layer leftmost). maps (L, H, T, T) -> (T, T), rows
    sum to 1 and stay causal. `token_mask` (T,): padding keys get no weight (the model lets a
    padding query attend to itself only, so padding rows become one-hot on themselves)."""
    maps = np.asarray(maps, dtype=np.float64)
    n = maps.shape[-1]
    eye = np.eye(n)
    out = eye
    for layer in maps:
        a = layer.mean(axis=0) + eye  # (T, T)
        a /= a.sum(axis=1, keepdims=True)
        out = a @ out
    if token_mask is not None:
        keep = np.asarray(token_mask, bool)
        out = out * keep[None, :]
        out = np.where(keep[:, None], out, eye)
        out /= out.sum(axis=1, keepdims=True)
    return out


def step_attention(rollout: np.ndarray) -> np.ndarray:
    """(3K, 3K) token rollout -> (K, K): for the state token of each step (the token that
    predicts its action), the rollout weight on each step's three tokens summed."""
    k = rollout.shape[0] // 3
    state_rows = rollout[1::3]  # (K, 3K)
    return state_rows.reshape(k, k, 3).sum(axis=2)


@torch.no_grad()
def action_errors(algo: Any, dataset: EpisodeDataset, episodes: list[int],
                  batch_size: int = 256) -> list[dict[str, Any]]:
    """Predict every dataset action from the window ending at its step (as when acting):
    per episode, the per-step error (squared error averaged over action dims in [-1, 1]
    units, or 0/1 mistakes for discrete actions) and the raw return-to-go."""
    model = algo.model
    was_training = model.training
    model.eval()
    out = []
    try:
        for ep in episodes:
            n = int(dataset.episode_lengths[ep])
            errs = []
            for lo in range(0, n, batch_size):
                _, inputs = windows(algo, dataset, ep, np.arange(lo, min(lo + batch_size, n)))
                pred = model(*inputs)[:, -1]  # (B, A) or (B, n)
                target = inputs[1][:, -1]
                if algo.spaces.discrete:
                    errs.append((pred.argmax(-1) != target).float())
                else:
                    errs.append((pred - target).pow(2).mean(-1))
            rtg = _episode_arrays(dataset, ep)[2]
            out.append({"episode": ep, "error": torch.cat(errs).cpu().numpy().tolist(),
                        "return_to_go": np.asarray(rtg, float).tolist()})
    finally:
        model.train(was_training)
    return out


def error_by_return_to_go(err: np.ndarray, rtg: np.ndarray, bins: int = 5
                          ) -> list[dict[str, float]]:
    """Mean error per return-to-go range (distinct values when there are at most `bins`)."""
    values = np.unique(rtg)
    if len(values) <= bins:
        groups = [(v, v, rtg == v) for v in values]
    else:
        edges = np.quantile(rtg, np.linspace(0, 1, bins + 1))
        which = np.clip(np.searchsorted(edges, rtg, side="right") - 1, 0, bins - 1)
        groups = [(edges[b], edges[b + 1], which == b) for b in range(bins)]
    return [{"rtg_low": float(lo), "rtg_high": float(hi), "steps": int(m.sum()),
             "error_mean": float(err[m].mean())} for lo, hi, m in groups if m.any()]


def is_key_to_door(dataset: EpisodeDataset, env_id: str | None) -> bool:
    ids = (env_id or "") + " " + (dataset.meta.env_id or "")
    return "KeyToDoor" in ids and dataset.observations.shape[1:] == (7,)


def key_to_door_events(dataset: EpisodeDataset, ep: int) -> dict[str, int | None]:
    """Key pick-up step (the action that lands on the key: has_key, obs feature 5, flips
    0 -> 1 in the next observation) and door step (the rewarded last step), or None."""
    s, e = int(dataset.episode_starts[ep]), int(dataset.episode_starts[ep + 1])
    has_key = dataset.observations[s + ep: e + ep + 1, 5] > 0.5  # (T+1,)
    flips = np.flatnonzero(~has_key[:-1] & has_key[1:])
    rewards = dataset.rewards[s:e]
    success = bool(rewards.sum() > 0.5)
    return {"key_step": int(flips[0]) if flips.size else None,
            "door_step": e - s - 1 if success else None, "length": e - s}


def key_door_attention(algo: Any, dataset: EpisodeDataset, ep: int) -> dict[str, Any]:
    """Does the action at the door attend to the key pick-up step? Rollout weight of the door
    step's state token on the key step's tokens, next to the uniform share over the window's
    steps; `covered` False when the checkpoint's K cannot reach back to the key."""
    ev = key_to_door_events(dataset, ep)
    row: dict[str, Any] = {"episode": ep, **ev}
    key, door = ev["key_step"], ev["door_step"]
    if key is None or door is None:
        row["status"] = "no key pick-up or no successful door step in this episode"
        return row
    k = algo.config.context
    row["gap"] = door - key
    if door - key >= k:
        row["covered"] = False
        row["status"] = (f"cannot: the key step is {door - key} steps before the door, outside "
                         f"the checkpoint's context K={k} (it needs K >= {door - key + 1})")
        return row
    win, att = capture_attention(algo, dataset, ep, end=door)
    roll = step_attention(attention_rollout(att, np.repeat(win.mask, 3)))
    pos = int(np.flatnonzero(win.steps == key)[0])
    weight = float(roll[-1, pos])
    # the state after the pick-up is the first one whose has_key feature is set
    after = float(roll[-1, pos + 1])
    valid = int(win.mask.sum())
    rank = int((roll[-1, win.mask] > weight).sum()) + 1
    rank_after = int((roll[-1, win.mask] > after).sum()) + 1
    row.update(covered=True, weight=weight, weight_after=after, uniform=1.0 / valid, rank=rank,
               rank_after=rank_after, window_steps=valid,
               status=f"rollout weight {weight:.3f} on the pick-up step (rank {rank}) and "
                      f"{after:.3f} on the next step, the first with the key (rank "
                      f"{rank_after}); uniform share {1 / valid:.3f} over {valid} steps")
    return row


def default_targets(dataset: EpisodeDataset, saved: list[float] | None) -> list[float]:
    """A sweep over the dataset's return range (5 points) plus the run's own targets."""
    r = dataset.episode_returns
    pts = np.linspace(float(r.min()), float(r.max()), 5) if r.max() > r.min() else [r.max()]
    return sorted({round(float(x), 6) for x in [*pts, *(saved or [])]})


def return_conditioning(algo: Any, env_id: str, targets: list[float], episodes: int,
                        num_envs: int, seed: int, env_kwargs: dict[str, Any] | None = None,
                        ) -> list[dict[str, float]]:
    """Achieved return per target from the vectorized evaluator (same episode seeds for
    every target); `env_kwargs`: the run's recorded env kwargs (e.g. obs_mode='grid')."""
    from offrl.evaluator import Evaluator

    n = max(1, min(num_envs, episodes))
    with Evaluator(env_id, n, env_kwargs=env_kwargs) as ev:
        results = ev.evaluate(algo.make_policy(n), episodes, target_returns=targets, seed=seed)
    return [{"target_return": float(r.target_return), "episodes": len(r.returns),
             "returns": r.returns.tolist(), **r.summary()} for r in results]


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def inspect_checkpoint(
    checkpoint: str | Path, dataset_source: str, out: str | Path, *,
    episodes: list[int] | None = None, step: int | None = None,
    targets: list[float] | None = None, eval_episodes: int = 5, eval_envs: int = 5,
    error_episodes: int = 20, seed: int = 0, device: str = "cpu",
) -> Path:
    """Write `out/report.md`, its PNG figures and `out/inspect.json`; returns the report path.
    `eval_episodes=0` skips the return-conditioning sweep (no env needed)."""
    from offrl import inspect_plots as plots
    from offrl.checkpoint import load_checkpoint, resolve_checkpoint, restore_algorithm
    from offrl.config import RunConfig, env_kwargs
    from offrl.datasets import load_dataset

    ckpt = resolve_checkpoint(checkpoint)
    payload = load_checkpoint(ckpt)
    algo = restore_algorithm(payload, device, ckpt)
    env_id = payload.get("env_id")
    dataset = load_dataset(dataset_source, env_id=env_id)
    # The run's reward setting applies to what it was trained on and evaluated in: a
    # delayed-reward run sees delayed returns-to-go in the data and in the eval env.
    reward = (payload.get("run_config") or {}).get("reward", "dense")
    if reward == "delayed":
        dataset = dataset.delayed_rewards()
    kwargs = env_kwargs(RunConfig(algo=str(payload["algo"]), reward=reward),
                        payload.get("env_kwargs"))
    check_compatible(algo, dataset)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    episodes = list(episodes) if episodes else [0]
    c = algo.config
    lines = [f"# offrl inspect: {ckpt.name}", "",
             f"- checkpoint: `{ckpt}` (step {payload['step']}, algo {payload['algo']})",
             f"- model: K={c.context}, {c.num_layers} layer(s), {c.num_heads} head(s), "
             f"embed {c.embed_dim}; return scale {algo.resolved['return_scale']:g}",
             f"- dataset: `{dataset_source}` ({dataset.num_episodes} episodes, "
             f"{dataset.num_steps} steps); env `{env_id}`", ""]
    raw: dict[str, Any] = {"checkpoint": str(ckpt), "step": payload["step"],
                           "dataset": dataset_source, "env_id": env_id, "episodes": []}

    lines += ["## Attention", "",
              "Attention maps per layer and head over the (R, s, a) tokens of the K-step "
              "window ending at the chosen step (rows: queries, columns: keys; `·` = left "
              "padding). Then attention rollout (Abnar & Zuidema 2020: heads averaged, "
              "identity added for the residual, rows renormalized, multiplied through the "
              "layers): for the state token of each step, i.e. the token that predicts that "
              "step's action, the weight on each earlier step's three tokens.", ""]
    k2d = is_key_to_door(dataset, env_id)
    for ep in episodes:
        win, att = capture_attention(algo, dataset, ep, step)
        roll = attention_rollout(att, np.repeat(win.mask, 3))
        per_step = step_attention(roll)
        f1 = plots.attention_maps(att, win.token_labels(),
                                  f"episode {ep}, window ending at step {win.end}",
                                  out / f"attention_ep{ep}.png")
        marks = {}
        if k2d:  # mark the key pick-up when it lies inside the window
            key = key_to_door_events(dataset, ep)["key_step"]
            if key is not None and key in win.steps:
                marks["key"] = key
        f2 = plots.step_rollout(per_step, win.steps,
                                f"attention rollout, episode {ep} (steps "
                                f"{int(win.steps[win.mask][0])}-{win.end})",
                                out / f"rollout_ep{ep}.png", marks)
        recent = float(np.mean([per_step[i, i] for i in np.flatnonzero(win.mask)]))
        lines += [f"### Episode {ep} (length {int(dataset.episode_lengths[ep])}, return "
                  f"{float(dataset.episode_returns[ep]):g}), window ending at step {win.end}",
                  "", f"The window holds steps {int(win.steps[win.mask][0])}-{win.end} "
                  f"(K={c.context}); earlier steps are invisible to the model here.", "",
                  f"![attention]({f1.name})", "", f"![rollout]({f2.name})", "",
                  f"Mean rollout weight of an action on its own step: {recent:.3f}.", ""]
        raw["episodes"].append({"episode": ep, "end": win.end, "steps": win.steps.tolist(),
                                "attention": att.tolist(), "rollout_steps": per_step.tolist()})

    if k2d:
        lines += ["## Key-to-Door: does the action at the door attend to the key pick-up?", ""]
        wins = [e for e in range(dataset.num_episodes)
                if (ev := key_to_door_events(dataset, e))["key_step"] is not None
                and ev["door_step"] is not None][:10]
        rows = [key_door_attention(algo, dataset, e) for e in wins]
        if not rows:
            lines += ["No dataset episode both picks up the key and opens the door: nothing "
                      "to measure.", ""]
        lines += ["Rollout weight of the door step's state token (it predicts the action that "
                  "opens the door) on the key pick-up step, in successful dataset episodes "
                  "(up to 10).", ""]
        for r in rows:
            lines.append(f"- episode {r['episode']}: key at step {r['key_step']}, door at "
                         f"step {r['door_step']}: {r['status']}")
        seen = [r for r in rows if r.get("covered")]
        if seen:
            w = np.array([[r["weight"], r["weight_after"], r["uniform"]] for r in seen])
            lines += ["", f"Mean over {len(seen)} episodes: {w[:, 0].mean():.4f} on the pick-up "
                      f"step, {w[:, 1].mean():.4f} on the step after it, against a uniform "
                      f"share of {w[:, 2].mean():.4f}."]
        if rows and not any(r.get("covered") for r in rows):
            lines += ["", f"The checkpoint's context K={c.context} is shorter than the "
                      "key-to-door gap, so the door action cannot see the key pick-up at "
                      "all; train with K >= 80 (the longest episode) to measure it."]
        lines.append("")
        raw["key_to_door"] = rows

    if eval_episodes > 0:
        if env_id is None:
            lines += ["## Return conditioning", "", "Skipped: the checkpoint names no "
                      "evaluation env.", ""]
        else:
            tgts = list(targets) if targets else default_targets(
                dataset, payload.get("eval_targets"))
            rows = return_conditioning(algo, env_id, tgts, eval_episodes, eval_envs, seed,
                                       env_kwargs=kwargs)
            fig = plots.return_conditioning(rows, dataset.episode_returns,
                                            out / "return_conditioning.png")
            lines += ["## Return conditioning", "",
                      f"{eval_episodes} evaluation episodes per target (seeds {seed}..."
                      f"{seed + eval_episodes - 1}, the same for every target).", "",
                      "| target | achieved mean | std | min | max |", "|---|---|---|---|---|"]
            lines += [f"| {r['target_return']:g} | {r['return_mean']:.4g} | "
                      f"{r['return_std']:.4g} | {r['return_min']:.4g} | "
                      f"{r['return_max']:.4g} |" for r in rows]
            r = dataset.episode_returns
            lines += ["", f"Dataset returns: mean {r.mean():.4g}, std {r.std():.4g}, min "
                      f"{r.min():.4g}, max {r.max():.4g}.", "", f"![returns]({fig.name})", ""]
            raw["return_conditioning"] = rows
    raw["dataset_returns"] = dataset.episode_returns.tolist()

    picked = list(dict.fromkeys([*episodes, *range(min(error_episodes,
                                                         dataset.num_episodes))]))
    err_rows = action_errors(algo, dataset, picked)
    fig = plots.action_error(err_rows, dataset.discrete, out / "action_error.png")
    all_err = np.concatenate([e["error"] for e in err_rows])
    kind = "error rate" if dataset.discrete else "MSE ([-1, 1] action units)"
    all_rtg = np.concatenate([e["return_to_go"] for e in err_rows])
    bins = error_by_return_to_go(all_err, all_rtg)
    lines += ["## Action-prediction error on dataset episodes", "",
              f"Each dataset action predicted from the K-step window ending at its step, "
              f"conditioned on the dataset's own return-to-go; {len(err_rows)} episodes, "
              f"{kind} overall {all_err.mean():.4g}.", "",
              "| return-to-go | steps | mean error |", "|---|---|---|"]
    lines += [f"| {b['rtg_low']:.4g} .. {b['rtg_high']:.4g} | {b['steps']} | "
              f"{b['error_mean']:.4g} |" for b in bins]
    lines += ["", f"![error]({fig.name})", ""]
    raw["action_error"] = err_rows
    raw["action_error_by_rtg"] = bins
    write_json(out / "inspect.json", raw)
    report = out / "report.md"
    tmp = report.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(report)
    return report
