"""Figures of `offrl inspect` (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _plt().close(fig)
    return path


def attention_maps(maps: np.ndarray, labels: list[str], title: str, path: Path) -> Path:
    """One heatmap per layer (rows) and head (columns); rows query, columns key tokens."""
    plt = _plt()
    n_layers, n_heads, t, _ = maps.shape
    size = min(12.0, max(3.0, 0.16 * t + 1.5))
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(size * n_heads, size * n_layers),
                             squeeze=False)
    stride = -(-t // 60)  # at most ~60 readable tick labels per axis
    ticks = list(range(0, t, stride))
    names = [labels[i] for i in ticks]
    font = max(4, min(8, int(300 / len(ticks))))
    for layer in range(n_layers):
        for head in range(n_heads):
            ax = axes[layer][head]
            im = ax.imshow(maps[layer, head], cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer} head {head}", fontsize=9)
            ax.set_xticks(ticks, names, rotation=90, fontsize=font)
            ax.set_yticks(ticks, names, fontsize=font)
            ax.set_xlabel("key token", fontsize=8)
            ax.set_ylabel("query token", fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def step_rollout(matrix: np.ndarray, steps: np.ndarray, title: str, path: Path,
                 marks: dict[str, int] | None = None) -> Path:
    """Heatmap: predicted action at step (rows) x attended step (columns), valid steps only.
    The colour scale stops at the largest off-diagonal weight: the residual identity makes
    the diagonal dominate and would otherwise hide where the rest of the weight goes."""
    plt = _plt()
    keep = steps >= 0
    m, s = matrix[np.ix_(keep, keep)], steps[keep]
    off = m[~np.eye(len(m), dtype=bool)]
    vmax = float(off.max()) if off.size and off.max() > 0 else None
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    extent = (s[0] - 0.5, s[-1] + 0.5, s[-1] + 0.5, s[0] - 0.5)
    im = ax.imshow(m, cmap="magma", vmin=0.0, vmax=vmax, extent=extent)
    for name, step in (marks or {}).items():
        ax.axvline(step, color="cyan", lw=0.8, ls="--")
        ax.text(step, s[0], name, color="cyan", fontsize=8, va="bottom")
    ax.set_xlabel("attended timestep (all three tokens)")
    ax.set_ylabel("timestep of the predicted action (state token)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="rollout weight (diagonal clipped)" if vmax else
                 "rollout weight")
    return _save(fig, path)


def return_conditioning(rows: list[dict[str, Any]], dataset_returns: np.ndarray,
                        path: Path) -> Path:
    """Achieved vs target return (mean ± std, y = x line) beside the dataset's returns."""
    plt = _plt()
    fig, (ax, hx) = plt.subplots(1, 2, figsize=(10, 4))
    tgt = np.array([r["target_return"] for r in rows])
    mean = np.array([r["return_mean"] for r in rows])
    std = np.array([r["return_std"] for r in rows])
    ax.errorbar(tgt, mean, yerr=std, marker="o", capsize=3, label="achieved (mean ± std)")
    lo, hi = min(tgt.min(), mean.min()), max(tgt.max(), mean.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="achieved = target")
    ax.set_xlabel("target return")
    ax.set_ylabel("achieved return")
    ax.legend(fontsize=8)
    ax.set_title("return conditioning", fontsize=10)
    hx.hist(dataset_returns, bins=min(40, max(5, len(np.unique(dataset_returns)))),
            orientation="horizontal", color="gray")
    hx.set_ylim(ax.get_ylim())
    hx.set_ylabel("episode return")
    hx.set_xlabel("dataset episodes")
    hx.set_title("dataset returns", fontsize=10)
    return _save(fig, path)


def action_error(rows: list[dict[str, Any]], discrete: bool, path: Path) -> Path:
    """Per-step error against return-to-go (scatter + binned mean) and along the episode."""
    plt = _plt()
    err = np.concatenate([r["error"] for r in rows])
    rtg = np.concatenate([r["return_to_go"] for r in rows])
    label = "error rate" if discrete else "squared error ([-1, 1] units)"
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    ax.scatter(rtg, err, s=4, alpha=0.3)
    if np.ptp(rtg) > 0:
        edges = np.linspace(rtg.min(), rtg.max(), 11)
        which = np.clip(np.digitize(rtg, edges) - 1, 0, 9)
        centers, means = [], []
        for b in range(10):
            if (which == b).any():
                centers.append(0.5 * (edges[b] + edges[b + 1]))
                means.append(err[which == b].mean())
        ax.plot(centers, means, "r-o", ms=3, label="binned mean")
        ax.legend(fontsize=8)
    ax.set_xlabel("return-to-go")
    ax.set_ylabel(label)
    for r in rows[:8]:
        e = np.asarray(r["error"])
        w = max(1, min(9, len(e) // 10))  # moving average: 0/1 mistakes are unreadable raw
        smooth = np.convolve(e, np.ones(w) / w, mode="valid")
        bx.plot(np.arange(len(smooth)) + (w - 1), smooth, lw=0.8,
                label=f"episode {r['episode']}")
    bx.set_xlabel("episode step (moving average over up to 9 steps)")
    bx.set_ylabel(label)
    bx.legend(fontsize=7)
    fig.suptitle("action-prediction error on dataset episodes", fontsize=10)
    return _save(fig, path)
