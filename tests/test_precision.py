"""bf16 mixed precision (`RunConfig.precision`) end to end, and the hand-written autograd of
`CriticEnsemble` (chunked forward/backward) against plain layer-by-layer autograd."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import offrl.nn
from offrl.algorithms import ALGORITHMS
from offrl.checkpoint import load_checkpoint, resolve_checkpoint
from offrl.cli import main
from offrl.config import RunConfig, load_yaml, replace
from offrl.logging import read_jsonl
from offrl.nn import CriticEnsemble
from offrl.trainer import Trainer, train
from tests.algo_helpers import tiny_config, tiny_dataset
from tests.trainer_helpers import restore_torch_threads  # noqa: F401  (autouse fixture)

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def plain_critic(critic: CriticEnsemble, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """The ensemble MLP with ordinary autograd ops: (N, D), (N, A) -> (E, N)."""
    x = torch.cat([obs, act], dim=-1)
    for i, layer in enumerate(critic.layers):
        x = torch.matmul(x, layer.weight) + layer.bias  # (E, N, out)
        if i < len(critic.layers) - 1:
            x = F.relu(x)
    return x.squeeze(-1)


def grads(critic: CriticEnsemble, act: torch.Tensor, q: torch.Tensor, w: torch.Tensor
          ) -> tuple[list[torch.Tensor], torch.Tensor]:
    critic.zero_grad(set_to_none=True)
    act.grad = None
    (q.float() * w).sum().backward()
    return [p.grad.clone() for p in critic.parameters()], act.grad.clone()


@pytest.mark.parametrize(("threads", "path"), [
    (1, "auto"), (2, "auto"), (1, "batched"), (2, "members"), (1, "layerwise")])
@pytest.mark.parametrize("hidden", [(), (7,), (16, 16, 5)])
def test_critic_ensemble_matches_plain_autograd(hidden, threads, path, monkeypatch):
    monkeypatch.setattr(offrl.nn, "_chunk_rows", lambda h, d: 64)  # 3 chunks, one ragged
    torch.set_num_threads(threads)  # restored by the autouse fixture
    torch.manual_seed(0)
    critic = CriticEnsemble(5, 2, hidden, ensemble_size=3)
    critic.cpu_path = path
    obs, act = torch.randn(150, 5), torch.randn(150, 2, requires_grad=True)
    w = torch.randn(3, 150)
    q = critic(obs, act)
    q_ref = plain_critic(critic, obs, act)
    assert q.shape == (3, 150) and q.dtype == torch.float32
    torch.testing.assert_close(q, q_ref, rtol=1e-5, atol=1e-6)
    (gp, ga), (gp_ref, ga_ref) = grads(critic, act, q, w), grads(critic, act, q_ref, w)
    for g, g_ref in zip([*gp, ga], [*gp_ref, ga_ref], strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)

    # M actions per state == M separate calls; frozen critic: only the action gradient flows
    acts = torch.randn(10, 4, 2)
    per_state = critic(obs[:10], acts)
    assert per_state.shape == (3, 10, 4)
    looped = torch.stack([critic(obs[:10], acts[:, j]) for j in range(4)], dim=-1)
    torch.testing.assert_close(per_state, looped, rtol=1e-5, atol=1e-6)
    critic.zero_grad(set_to_none=True)
    critic.requires_grad_(False)
    a = act.detach().requires_grad_(True)
    (critic(obs, a) * w).sum().backward()
    torch.testing.assert_close(a.grad, ga_ref, rtol=1e-4, atol=1e-5)
    assert all(p.grad is None for p in critic.parameters())


@pytest.mark.parametrize("path", ["members", "batched", "layerwise"])
def test_critic_ensemble_under_bf16_autocast_stays_close_to_fp32(path):
    torch.manual_seed(0)
    critic = CriticEnsemble(11, 3, (64, 64), ensemble_size=2)
    critic.cpu_path = path
    obs, act = torch.randn(300, 11), (torch.rand(300, 3) * 2 - 1).requires_grad_(True)
    w = torch.linspace(-1, 1, 600).view(2, 300)
    ref_q = critic(obs, act)
    ref_p, _ = grads(critic, act, ref_q, w)
    with torch.autocast(**BF16):
        q = critic(obs, act)
    p, _ = grads(critic, act, q, w)
    assert q.dtype == torch.float32  # the output layer runs in fp32 (TD errors need it)
    assert ((q - ref_q).norm() / ref_q.norm()).item() < 2e-2
    for g, g_ref, param in zip(p, ref_p, critic.parameters(), strict=True):
        assert g.dtype == param.dtype == torch.float32
        assert ((g - g_ref).norm() / g_ref.norm()).item() < 5e-2


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_every_algorithm_updates_under_bf16_autocast(name, kind):
    ds = tiny_dataset(kind)
    torch.manual_seed(0)
    algo = ALGORITHMS[name].from_dataset(tiny_config(name), ds)
    sampler = algo.make_sampler(ds, seed=0)
    before = {k: v.clone() for k, v in algo.nets.state_dict().items()}
    with torch.autocast(**BF16):
        metrics = [algo.update(sampler.sample()) for _ in range(3)]
    assert all(type(v) is float and math.isfinite(v) for m in metrics for v in m.values())
    after = algo.nets.state_dict()
    assert all(after[k].dtype == before[k].dtype for k in before)  # master weights stay fp32
    assert any(not torch.equal(before[k], after[k]) for k in before)


# ---- the trainer and the CLI ----------------------------------------------------------------


@pytest.fixture(scope="module")
def box_data(tmp_path_factory) -> Path:
    """Random-walk episodes with obs (3,) and Box(2,) actions, as a trajectory pickle."""
    rng = np.random.default_rng(0)
    episodes = []
    for t in (30, 45, 25, 40):
        obs = np.cumsum(rng.normal(size=(t + 1, 3)), axis=0).astype(np.float32)
        episodes.append({"observations": obs,
                         "actions": rng.uniform(-1, 1, (t, 2)).astype(np.float32),
                         "rewards": rng.normal(size=t).astype(np.float32),
                         "terminals": np.zeros(t)})
    path = tmp_path_factory.mktemp("data") / "box.pkl"
    path.write_bytes(pickle.dumps(episodes))
    return path


def bf16_config(data: Path, run_dir: Path, algo: str, steps: int) -> RunConfig:
    return RunConfig(algo=algo, dataset=str(data), total_steps=steps, log_every=2,
                     num_eval_episodes=0, checkpoint_every=4, device="cpu", num_threads=1,
                     precision="bf16", run_dir=str(run_dir), algo_config=tiny_config(algo))


@pytest.mark.parametrize("algo", ["bc", "cql"])
def test_bf16_run_finishes_and_resumes_exactly_in_bf16(algo, box_data, tmp_path):
    whole = train(bf16_config(box_data, tmp_path / "whole", algo, 8), progress=False)
    rows = read_jsonl(whole.run_dir / "metrics.jsonl")
    losses = [v for r in rows for k, v in r.items() if k.startswith("train/")]
    assert losses and all(math.isfinite(v) for v in losses)
    assert load_yaml(whole.run_dir / "config.yaml").precision == "bf16"
    ckpt = load_checkpoint(resolve_checkpoint(whole.run_dir))
    assert ckpt["run_config"]["precision"] == "bf16"

    half = tmp_path / "half"
    train(bf16_config(box_data, half, algo, 4), progress=False)
    resumed = Trainer(resume=half, progress=False)  # no config: the checkpoint's is used
    assert resumed.config.precision == "bf16"
    resumed.close()
    saved = load_yaml(half / "config.yaml")
    result = train(replace(saved, total_steps=8), resume=half, progress=False)
    assert result.step == 8
    a = load_checkpoint(resolve_checkpoint(whole.run_dir))["algorithm"]["nets"]
    b = load_checkpoint(resolve_checkpoint(half))["algorithm"]["nets"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # bf16 resume replays the run exactly


def test_cli_precision_flag_and_resume_refuses_a_change(box_data, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--algo", "bc", "--dataset", str(box_data), "--steps", "3",
                 "--num-eval-episodes", "0", "--device", "cpu", "--num-threads", "1",
                 "--precision", "bf16", "--batch-size", "8", "--hidden", "16",
                 "--run-dir", str(run), "--no-progress"])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert load_yaml(run / "config.yaml").precision == "bf16"
    code = main(["train", "--resume", str(run), "--steps", "5", "--no-progress"])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert load_yaml(run / "config.yaml").precision == "bf16"
    code = main(["train", "--resume", str(run), "--steps", "6", "--precision", "fp32",
                 "--no-progress"])
    _, err = capsys.readouterr()
    assert code == 1 and "precision" in err
    with pytest.raises(SystemExit):
        main(["train", "--algo", "bc", "--dataset", str(box_data), "--precision", "fp16"])


def test_critic_chunks_are_larger_in_16_bit_floats_and_capped():
    """`_chunk_rows`: ~2 MiB of one member's activations per chunk in float32, ~6 MiB in
    bf16 (two chunks for the paper's 7936 CQL rows), at most 4096 rows in 16-bit floats."""
    assert offrl.nn._chunk_rows((256, 256, 256), torch.float32) == 640
    assert offrl.nn._chunk_rows((256, 256, 256), torch.bfloat16) == 4096
    assert offrl.nn._chunk_rows((64,), torch.bfloat16) == 4096  # the cap
    assert offrl.nn._chunk_rows((1 << 16,) * 4, torch.bfloat16) == 64  # the floor
