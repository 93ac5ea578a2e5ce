"""Smoke tests of the benchmark harness (benchmarks/): FLOP counting, the chunk pairing, the
JSON a quick offrl-only run writes, and (when .venv-d3rlpy exists) the d3rlpy worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks import bench
from benchmarks.data_layer import make_file
from benchmarks.flops import count_flops, mlp_update_flops
from benchmarks.train_speed import D3RLPY_PYTHON, D3rlpyWorker, PairedChunks, _ChunksDone

BC_DIMS = (11, 256, 256, 3)  # hopper obs -> BC 256x2 -> action


def test_mlp_flops_match_the_counter() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(11, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    x = torch.randn(8, 11)
    assert count_flops(lambda: net(x).sum().backward()) == mlp_update_flops(8, (11, 32, 3))
    x.requires_grad_(True)
    assert count_flops(lambda: net(x).sum().backward()) == mlp_update_flops(
        8, (11, 32, 3), input_requires_grad=True)


def test_cpu_flash_attention_counts_like_the_math_path() -> None:
    q, k, v = (torch.randn(2, 1, 12, 16, requires_grad=True) for _ in range(3))
    causal = torch.ones(12, 12, dtype=torch.bool).tril()

    def flash() -> None:  # is_causal without a mask: the CPU flash kernel
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()

    def math() -> None:  # an explicit mask: decomposed into bmm / softmax / bmm
        F.scaled_dot_product_attention(q, k, v, attn_mask=causal).sum().backward()

    assert count_flops(math) > 0
    assert count_flops(flash) == count_flops(math)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_critic_paths_count_the_same_flops(dtype: torch.dtype) -> None:
    # The chunked paths accumulate weight gradients with in-place addmm_ / baddbmm_, which
    # torch's counter does not know: `count_flops` adds them, so every path counts the same.
    from offrl.nn import CriticEnsemble

    torch.manual_seed(0)
    critic = CriticEnsemble(5, 2, (16, 16), ensemble_size=2)
    obs, act = torch.randn(40, 5), torch.randn(40, 3, 2)
    counts = {}
    for path in ("layerwise", "members", "batched"):
        critic.cpu_path = path
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            counts[path] = count_flops(lambda: critic(obs, act).sum().backward())
    per_member = mlp_update_flops(120, (7, 16, 16, 1))
    assert counts == dict.fromkeys(counts, 2 * per_member)


class FakePeer:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def run(self, updates: int, threads: int) -> float:
        self.calls.append((updates, threads))
        return 0.5


def test_paired_chunks_interleave_and_stop() -> None:
    peer = FakePeer()
    hook = PairedChunks(warmup=3, repeats=2, threads=1, updates=4, peer=peer)  # type: ignore[arg-type]
    with pytest.raises(_ChunksDone):
        for step in range(1, hook.max_steps(10)):
            hook(None, step)
    assert step == 3 + 2 * 4  # stopped right after the last chunk
    assert peer.calls == [(3, 1), (4, 1), (4, 1)]  # warm-up, then one chunk per offrl chunk
    assert len(hook.offrl_s) == 2 and hook.peer_s == [0.5, 0.5]


def test_paired_chunks_size_from_warmup_rates() -> None:
    peer = FakePeer()  # 3 updates in 0.5 s: 6 updates/s, far slower than the loop below
    hook = PairedChunks(warmup=3, repeats=1, threads=2, chunk_s=0.01, min_updates=2,
                        peer=peer)  # type: ignore[arg-type]
    with pytest.raises(_ChunksDone):
        for step in range(1, 10_000_000):
            hook(None, step)
    assert hook.updates is not None and hook.updates > 6  # sized by the faster side
    assert peer.calls[1] == (hook.updates, 2)


def test_quick_offrl_run_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code = bench.main(["--quick", "--steps", "2000", "--algos", "bc", "--threads", "1",
                       "--skip", "eval,d3rlpy", "--cache-dir", str(tmp_path / "cache"),
                       "--out", str(out)])
    assert code == 0
    result: dict[str, Any] = json.loads(out.read_text())
    machine = result["machine"]
    assert machine["cores"] >= 1 and machine["cpu_model"] and machine["torch"] == torch.__version__
    assert len(machine["load_average_start"]) == 3
    peak = result["matmul_peak_gflop_per_s"]["1"]
    assert peak["fp32"] > 0 and peak["bf16"] > 0
    precisions = [r["precision"] for r in result["train"]]
    assert precisions[0] == "fp32"  # then the bf16 variant, if the trainer offers one
    assert len(precisions) == 2 or any("bf16" in n for n in result["notes"])
    for r in result["train"]:
        assert r["algo"] == "bc" and r["threads"] == 1 and r["d3rlpy"] is None
        ours = r["offrl"]
        assert len(ours["runs"]) == 1 and ours["updates_per_s"] > 0
        assert ours["flops_per_update"] == mlp_update_flops(256, BC_DIMS)
        assert ours["gflop_per_s"] == pytest.approx(
            ours["flops_per_update"] * ours["updates_per_s"] / 1e9)
    assert result["table"][0]["metric"].startswith("BC updates/s")
    assert result["settings"]["dataset_steps"] == 2000


def test_bc_update_ab_runs_both_sides_bit_identically(tmp_path: Path) -> None:
    from benchmarks import bc_update_ab

    data, out = tmp_path / "tiny.hdf5", tmp_path / "ab.json"
    make_file(data, 2000)
    bc_update_ab.main(["--threads", "1", "--rounds", "2", "--updates", "3", "--data", str(data),
                       "--out", str(out)])
    (r,) = json.loads(out.read_text())["results"]
    assert r["parameters_bit_identical"] and r["ratio_lean_over_torch"] > 0
    assert len(r["rates"]["lean"]) == len(r["rates"]["torch"]) == 2


def test_cql_path_ab_times_every_path(tmp_path: Path) -> None:
    from benchmarks import cql_path_ab

    data, out = tmp_path / "tiny.hdf5", tmp_path / "ab.json"
    make_file(data, 2000)
    cql_path_ab.main(["--threads", "1", "--rounds", "2", "--updates", "1", "--data", str(data),
                      "--out", str(out)])
    results = json.loads(out.read_text())["results"]
    assert [r["precision"] for r in results] == ["bf16", "fp32"]
    for r in results:
        assert set(r["updates_per_s"]) == set(cql_path_ab.PATHS)
        assert all(len(v) == 2 and min(v) > 0 for v in r["rates"].values())
        assert r["ratio_to_layerwise"]["layerwise"] == 1.0
    assert float(torch.tensor(1e-39) * 1.0) != 0.0  # subnormals kept again afterwards


def test_relu16_ab_swaps_the_relu_ops_and_restores_them(tmp_path: Path) -> None:
    import offrl.fused_linear
    import offrl.nn
    from benchmarks import relu16_ab
    from offrl.relu16 import relu_, relu_backward

    data, out = tmp_path / "tiny.hdf5", tmp_path / "ab.json"
    make_file(data, 2000)
    relu16_ab.main(["--threads", "1", "--rounds", "2", "--updates", "1", "--check-updates",
                    "2", "--data", str(data), "--out", str(out)])
    results = json.loads(out.read_text())["results"]
    assert [r["algo"] for r in results] == ["cql", "dt"]
    for r in results:
        assert r["bit_identical"] and r["ratio_int16_to_torch"] > 0
        assert all(len(v) == 2 and min(v) > 0 for v in r["rates"].values())
    assert offrl.nn.relu_ is relu_ and offrl.nn.relu_backward is relu_backward
    assert offrl.fused_linear.relu_backward is relu_backward
    for bad in (["--threads", "0"], ["--rounds", "0"], ["--check-updates", "0"]):
        with pytest.raises(SystemExit):
            relu16_ab.main([*bad, "--data", str(data)])


@pytest.mark.slow
@pytest.mark.skipif(not D3RLPY_PYTHON.exists(), reason="no .venv-d3rlpy (make venv-d3rlpy)")
def test_d3rlpy_worker_builds_the_same_bc(tmp_path: Path) -> None:
    data = tmp_path / "tiny.hdf5"
    make_file(data, 2000)
    worker = D3rlpyWorker(data, "bc", log_dir=tmp_path)
    try:
        assert worker.info["versions"]["d3rlpy"] == "2.8.1"
        assert worker.info["flops_per_update"] == mlp_update_flops(256, BC_DIMS)
        assert worker.info["parameters"] == 11 * 256 + 256 + 256 * 256 + 256 + 256 * 3 + 3
        assert worker.run(3, 1) > 0
    finally:
        worker.close()
    assert worker.proc.returncode == 0


def test_export_d4rl_round_trip(tmp_path: Path) -> None:

    from benchmarks.peers.export_d4rl import export_d4rl
    from offrl.datasets import EpisodeDataset, load_dataset
    from tests.data_helpers import random_episodes

    rng = np.random.default_rng(0)
    episodes = random_episodes(rng, [5, 3, 7], [True, False, False], obs_dim=4, act_dim=2)
    ds = EpisodeDataset.from_episodes(episodes)
    back = load_dataset(export_d4rl(ds, tmp_path / "d.hdf5"))
    np.testing.assert_array_equal(back.episode_starts, ds.episode_starts)
    np.testing.assert_array_equal(back.terminated, ds.terminated)
    np.testing.assert_array_equal(back.observations, ds.observations)  # incl. final rows
    np.testing.assert_array_equal(back.actions, ds.actions)
    np.testing.assert_allclose(back.rewards, ds.rewards)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_d3rlpy_policy_adapter(tmp_path: Path) -> None:

    from benchmarks.peers.d3rlpy_policy import D3rlpyPolicy

    net = torch.nn.Linear(4, 2)
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.zero_()
    torch.jit.trace(net, torch.zeros(1, 4)).save(str(tmp_path / "policy.pt"))  # like d3rlpy's
    policy = D3rlpyPolicy(tmp_path / "policy.pt", 3, np.array([-1.0, -0.5]), np.ones(2))
    policy.reset(np.ones(3, dtype=bool))
    obs = np.array([[0.1, 0, 0, 0], [1, 1, 0, 0], [-1, -1, -1, 0]], np.float32)
    act = policy.act(obs, np.zeros(3))
    np.testing.assert_allclose(act, [[0.1, 0.1], [1.0, 1.0], [-1.0, -0.5]], rtol=1e-6)
    assert act.dtype == np.float32
    with pytest.raises(ValueError, match="expected 3 observations"):
        policy.act(obs[:2], np.zeros(2))
    with pytest.raises(ValueError, match="env_mask"):
        policy.reset(np.ones(2, dtype=bool))


def test_eval_rows_put_the_target_on_the_default_mode() -> None:
    def mode(vec: float, one: float) -> dict[str, float]:
        return {"vectorized_env_steps_per_s": vec, "one_env_env_steps_per_s": one,
                "speedup": vec / one}

    ev = {"envs": 10, "modes": {"exact": mode(1000.0, 100.0), "kv-cache": mode(3000.0, 200.0)}}
    rows = bench.eval_rows(ev)
    assert [r["ratio"] for r in rows] == pytest.approx([10.0, 15.0, 30.0])
    from offrl.algorithms import DTConfig

    targeted = [r for r in rows if r.get("target")]
    assert len(targeted) == 1 and targeted[0]["ok"]
    assert targeted[0] is (rows[2] if getattr(DTConfig(), "kv_cache", False) else rows[0])
    old = {"envs": 10, **mode(500.0, 100.0)}  # eval_speed.py before it timed two modes
    (row,) = bench.eval_rows(old)
    assert row["ratio"] == pytest.approx(5.0) and row["ok"] is False
    # --peer: one more row per mode against d3rlpy's sequential loop; the default mode's
    # has the target too
    ev["modes"]["exact"]["speedup_vs_d3rlpy_sequential"] = 8.0
    ev["modes"]["kv-cache"]["speedup_vs_d3rlpy_sequential"] = 24.0
    ev["d3rlpy_sequential"] = {"env_steps_per_s": 125.0}
    peer_rows = bench.eval_rows(ev)[3:]
    assert [r["ratio"] for r in peer_rows] == [8.0, 24.0]
    assert all(r["reference"] == 125.0 for r in peer_rows)
    default = "kv-cache" if getattr(DTConfig(), "kv_cache", False) else "exact"
    (peer_target,) = [r for r in peer_rows if r.get("target")]
    assert default in peer_target["metric"] and peer_target["ok"] is (default == "kv-cache")

