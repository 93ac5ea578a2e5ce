"""Per-algorithm settings of the peer check: which offrl config the study ran, how d3rlpy is
configured to match it, and the training diagnostics read from both libraries' logs."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SCORES = ("normalized_score", "return_mean")


@dataclass(frozen=True)
class PeerAlgo:
    """One algorithm of the peer check."""

    name: str
    """offrl / d3rlpy_train.py algorithm name."""
    label: str
    """Name in the report's tables."""
    diagnostics: tuple[str, ...]
    """Per-run training diagnostics (both sides), reported beside the scores."""
    diagnostics_text: str
    """The markdown paragraph introducing the diagnostics table."""
    d3rlpy_diag: Callable[[Path, int], dict[str, float | None]]
    """(d3rlpy run folder, steps) -> diagnostics from d3rlpy's logs."""
    offrl_diag: Callable[[list[dict[str, Any]], int], dict[str, float | None]]
    """(offrl metrics.jsonl rows, steps) -> diagnostics."""
    steps_per_epoch: int | None
    """d3rlpy's log interval (None: d3rlpy_train.py's original min(steps, 10k))."""
    sequence: bool = False
    """Return-conditioned sequence model (DT): scored at the env's target returns through
    d3rlpy's stateful wrapper; no single-step action MSE (it needs a history)."""

    @property
    def offrl_config(self) -> Path:
        """The config the MuJoCo suites train this algorithm with (relative to the repo)."""
        return Path("experiments/configs") / f"mujoco-cpu-{self.name}.yaml"

    @property
    def stats(self) -> tuple[str, ...]:
        """Every per-run value that gets a mean +- std over seeds in the report."""
        mse = () if self.sequence else ("action_mse",)
        return (*SCORES, *self.diagnostics, *mse, "normalized_score_long")


def load_offrl_config(algo: PeerAlgo, root: Path = ROOT) -> dict[str, Any]:
    import yaml

    path = root / algo.offrl_config
    if not path.is_file():
        raise SystemExit(f"{path}: the {algo.label} config of the MuJoCo suites is missing")
    return yaml.safe_load(path.read_text())


def d3rlpy_curve(run_dir: Path, name: str) -> list[tuple[int, float]]:
    """d3rlpy's per-epoch means of metric `name`: [(step at epoch end, value)]."""
    path = run_dir / "logs" / "fit" / f"{name}.csv"
    if not path.is_file():
        return []
    rows = [line.split(",") for line in path.read_text().split()]
    return [(int(step), float(value)) for _, step, value in rows]


def second_half(curve: list[tuple[int, float]], steps: int) -> float | None:
    """Mean of the interval means logged after step steps // 2."""
    values = [v for s, v in curve if s > steps // 2]
    return float(np.mean(values)) if values else None


def offrl_curve(metrics: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """offrl's interval means of `key` (train/*: each a mean since the previous log)."""
    return [(m["step"], m[key]) for m in metrics if key in m]


# ---- BC ----

def _bc_d3rlpy(run_dir: Path, steps: int) -> dict[str, float | None]:
    # The original report's value: d3rlpy's mean loss over its last epoch (the second 10k of 20k).
    curve = d3rlpy_curve(run_dir, "loss")
    return {"train_loss_second_half": curve[-1][1] if curve else None}


def _bc_offrl(metrics: list[dict[str, Any]], steps: int) -> dict[str, float | None]:
    return {"train_loss_second_half": second_half(offrl_curve(metrics, "train/loss"), steps)}


BC = PeerAlgo(
    name="bc", label="BC", diagnostics=("train_loss_second_half",),
    diagnostics_text=(
        "How closely each fitted the data (mean over seeds): training loss over the "
        "second half of the run (MSE in [-1, 1] action units; d3rlpy: its last epoch), "
        "and the action MSE of the final policy on a fixed 100k-step sample of the "
        "dataset (env units; the MuJoCo datasets' are [-1, 1]):"),
    d3rlpy_diag=_bc_d3rlpy, offrl_diag=_bc_offrl, steps_per_epoch=None)


# ---- CQL ----

def _cql_d3rlpy(run_dir: Path, steps: int) -> dict[str, float | None]:
    """d3rlpy logs critic_loss = TD + weighted conservative term and that term itself; with the
    fixed weight the peer check maps (alpha 1, threshold 0, weight w) the term is
    w * sum over critics of the gap, so the per-critic gap is term / (w * n_critics)."""
    kwargs = json.loads((run_dir / "peer.json").read_text()).get("config_kwargs") or {}
    critic = dict(d3rlpy_curve(run_dir, "critic_loss"))
    term = dict(d3rlpy_curve(run_dir, "conservative_loss"))
    td = [(s, critic[s] - term[s]) for s in sorted(critic) if s in term]
    fixed = kwargs.get("alpha_learning_rate", 1.0) == 0.0 and kwargs.get("alpha_threshold") == 0
    gap = ([(s, v / (kwargs["conservative_weight"] * kwargs["n_critics"]))
            for s, v in sorted(term.items())] if fixed else [])
    temp = d3rlpy_curve(run_dir, "temp")
    return {"td_loss_second_half": second_half(td, steps),
            "cql_gap_second_half": second_half(gap, steps),
            "sac_alpha_last": temp[-1][1] if temp else None}


def _cql_offrl(metrics: list[dict[str, Any]], steps: int) -> dict[str, float | None]:
    alpha = offrl_curve(metrics, "train/alpha")
    return {"td_loss_second_half": second_half(offrl_curve(metrics, "train/td_loss"), steps),
            "cql_gap_second_half": second_half(offrl_curve(metrics, "train/cql_gap"), steps),
            "sac_alpha_last": alpha[-1][1] if alpha else None}


CQL = PeerAlgo(
    name="cql", label="CQL",
    diagnostics=("td_loss_second_half", "cql_gap_second_half", "sac_alpha_last"),
    diagnostics_text=(
        "Training diagnostics (mean over seeds; both libraries log means over 1000-step "
        "intervals): TD loss (sum over the two critics of the mean squared TD error) and CQL "
        "gap (per critic, E[logsumexp Q - Q(s, a_data)]) averaged over the second half of the "
        "run, the SAC temperature over the last interval, and the action MSE of the final "
        "(greedy) policy on a fixed 100k-step sample of the dataset (env units):"),
    d3rlpy_diag=_cql_d3rlpy, offrl_diag=_cql_offrl, steps_per_epoch=1000)


# ---- DT ----

def _dt_d3rlpy(run_dir: Path, steps: int) -> dict[str, float | None]:
    """d3rlpy's DT loss sums over the |A| action dims: divided by |A| here, offrl's units
    (its mean still counts padded positions as 0, a few percent lower on real-step data)."""
    params = run_dir / "logs" / "fit" / "params.json"
    act_dim = json.loads(params.read_text())["action_size"] if params.is_file() else None
    loss = second_half(d3rlpy_curve(run_dir, "loss"), steps)
    return {"train_loss_second_half": loss / act_dim if loss is not None and act_dim else None}


DT = PeerAlgo(
    name="dt", label="DT", diagnostics=("train_loss_second_half",),
    diagnostics_text=(
        "Training loss (mean over seeds; MSE of the predicted actions, [-1, 1] units, mean "
        "over action dims; d3rlpy's logged sum over dims divided by |A|, its mean includes "
        "padded positions; both libraries log means over 1000-step intervals) averaged over "
        "the second half of the run:"),
    d3rlpy_diag=_dt_d3rlpy, offrl_diag=_bc_offrl, steps_per_epoch=1000, sequence=True)

ALGOS: dict[str, PeerAlgo] = {a.name: a for a in (BC, CQL, DT)}
