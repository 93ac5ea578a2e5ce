"""Shared network blocks: MLPs, fused critic ensembles, a causal transformer block, and the
small helpers every algorithm needs (soft target updates, weight-decay parameter groups).

No training logic lives here. Shape letters: B batch, E ensemble members, L tokens, H heads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from offrl.block_train import block_train_forward
from offrl.fused_linear import linear
from offrl.relu16 import relu_, relu_backward


def mlp(
    in_dim: int, hidden: Sequence[int], out_dim: int,
    activation: type[nn.Module] = nn.ReLU, dropout: float = 0.0,
) -> nn.Sequential:
    """Linear -> activation (-> dropout) per hidden layer, then a linear output layer."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), activation()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """E independent linear layers evaluated with one batched matmul.

    Input (E, B, in) or (B, in) shared by all members; output (E, B, out). Each member is
    initialized like `nn.Linear` (uniform in +-1/sqrt(in) for weight and bias).
    """

    def __init__(self, in_features: int, out_features: int, ensemble_size: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.ensemble_size = ensemble_size
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:  # shared input: matmul broadcasts (B, in) against (E, in, out)
            return torch.matmul(x, self.weight) + self.bias
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, ensemble_size={self.ensemble_size}"


def _chunk_rows(hidden: Sequence[int], dtype: torch.dtype) -> int:
    """Rows per chunk: one member's activations of one chunk, all layers together, take
    about 2 MiB in float32 (they stay in the core's 2 MiB L2 cache between layers; larger
    chunks measured no faster, smaller ones add Python overhead) and about 6 MiB in 16-bit
    floats, where the matmuls are cheap and the per-op costs of more chunks are not: CQL
    bf16 updates/s +14% at 2 threads and +8% at 1 with 4096-row chunks (two for the paper's
    7936 rows) instead of 1344, interleaved. One chunk for all 7936 rows was 0.8x: its (2,
    7936, 256) activations are served by mmap and page-faulted afresh every update, hence
    also the cap of 4096 rows for narrow networks."""
    size = torch.empty((), dtype=dtype).element_size()
    budget, cap = ((6 << 20), 4096) if size <= 2 else ((2 << 20), None)
    rows = (budget // max(sum(hidden) * size, 1)) // 64 * 64
    return max(64, rows if cap is None else min(rows, cap))


class _EnsembleMLPFunction(torch.autograd.Function):
    """Forward and backward of an ensemble ReLU MLP over a shared input, in row chunks.

    Why a hand-written autograd function: CQL evaluates both critics on B * (1 + 3n) rows
    (7936 for the paper's setup), so each hidden activation is (E, 7936, 256). Layer by layer,
    autograd streams every such tensor through main memory several times (matmul output, bias
    add, ReLU, ReLU backward, bias-gradient sum), which made the elementwise work cost as much
    as the matmuls in fp32 and most of the update in bf16. Here each chunk of rows goes through
    all layers of one member while it sits in cache: bias and ReLU fuse into `addmm(out=)` +
    in-place `relu_`, and the backward masks, sums and multiplies each chunk while it is in
    cache. The math is that of `relu(x @ W + b)` layer by layer (gradients summed chunk by
    chunk).

    Numerics: hidden layers run in `compute_dtype` (float32, or bfloat16 under autocast);
    the output layer always runs in float32 (the Q values feed TD errors whose scale is far
    below a bfloat16 ulp of large returns). Weight and bias gradients accumulate in float32.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, compute_dtype: torch.dtype, chunk: int,
                batched: bool, *params: torch.Tensor) -> torch.Tensor:
        ws, bs = params[0::2], params[1::2]  # (E, in, out), (E, 1, out) per layer
        num_hidden = len(ws) - 1
        e_size, n = ws[0].shape[0], x.shape[0]
        with torch.autocast(x.device.type, enabled=False):
            wc = [w.detach().to(compute_dtype) for w in ws[:-1]] + [ws[-1].detach().float()]
            bc = [b.detach().to(compute_dtype) for b in bs[:-1]] + [bs[-1].detach().float()]
            xc = x.detach().to(compute_dtype)  # (N, in)
            out = torch.empty(e_size, n, ws[-1].shape[2], dtype=torch.float32, device=x.device)
            if batched:
                acts = _EnsembleMLPFunction._forward_batched(xc, wc, bc, chunk, out)
            else:
                acts = [torch.empty(e_size, n, w.shape[2], dtype=compute_dtype,
                                    device=x.device)
                        for w in ws[:-1]]  # post-ReLU activations (E, N, H), for backward
                for r0 in range(0, n, chunk):
                    r1 = min(r0 + chunk, n)
                    for e in range(e_size):
                        h = xc[r0:r1]
                        for i in range(num_hidden):
                            dst = acts[i][e, r0:r1]  # contiguous rows: addmm writes in place
                            torch.addmm(bc[i][e], h, wc[i][e], out=dst)
                            h = relu_(dst)
                        torch.addmm(bc[-1][e], h.float(), wc[-1][e], out=out[e, r0:r1])
        ctx.save_for_backward(xc, *acts, *wc)
        ctx.chunk, ctx.num_hidden, ctx.x_dtype = chunk, num_hidden, x.dtype
        ctx.batched = batched
        return out

    @staticmethod
    def _forward_batched(xc: torch.Tensor, wc: list[torch.Tensor], bc: list[torch.Tensor],
                         chunk: int, out: torch.Tensor) -> list[torch.Tensor]:
        """The forward chunk by chunk with all members in each op (batched matmuls over E):
        with several threads each op splits over the members, so every core keeps its
        members' chunk in its own cache. Activations are kept per chunk, (E, R, H) each, as
        a flat list ordered chunk-major."""
        num_hidden = len(wc) - 1
        e_size, n = out.shape[0], out.shape[1]
        acts = []
        for r0 in range(0, n, chunk):
            r1 = min(r0 + chunk, n)
            h = xc[r0:r1].expand(e_size, -1, -1)  # (E, R, in), the shared input
            for i in range(num_hidden):
                h = relu_(torch.baddbmm(bc[i], h, wc[i]))  # (E, R, H)
                acts.append(h)
            out[:, r0:r1] = torch.baddbmm(bc[-1], h.float(), wc[-1])
        return acts

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        xc, *rest = ctx.saved_tensors
        num_hidden = ctx.num_hidden
        acts, wc = rest[:-(num_hidden + 1)], rest[-(num_hidden + 1):]
        need_x = ctx.needs_input_grad[0]
        need_p = any(ctx.needs_input_grad[4:])
        g_out = g_out.float()
        dws = [torch.zeros(w.shape, dtype=torch.float32, device=xc.device) for w in wc]
        dbs = [torch.zeros(w.shape[0], 1, w.shape[2], dtype=torch.float32, device=xc.device)
               for w in wc]
        dx = torch.zeros(xc.shape, dtype=torch.float32, device=xc.device) if need_x else None
        backward = (_EnsembleMLPFunction._backward_batched if ctx.batched
                    else _EnsembleMLPFunction._backward_members)
        with torch.autocast(xc.device.type, enabled=False):
            backward(ctx.chunk, xc, acts, wc, g_out, dws, dbs, dx, need_p)
        grads: list[torch.Tensor | None] = []
        for dw, db in zip(dws, dbs, strict=True):
            grads += [dw, db] if need_p else [None, None]
        return (dx.to(ctx.x_dtype) if dx is not None else None, None, None, None, *grads)

    @staticmethod
    def _backward_members(chunk: int, xc: torch.Tensor, acts: Sequence[torch.Tensor],
                          wc: Sequence[torch.Tensor], g_out: torch.Tensor,
                          dws: list[torch.Tensor], dbs: list[torch.Tensor],
                          dx: torch.Tensor | None, need_p: bool) -> None:
        """`backward` for the per-member forward (activations (E, N, H) per layer): chunk by
        chunk, one member at a time, through `_backward_rows` on one-member views."""
        n = g_out.shape[1]
        for r0 in range(0, n, chunk):
            rows = slice(r0, min(r0 + chunk, n))
            for e in range(g_out.shape[0]):  # 2-D ops (bf16 batched matmuls of one member
                # measured 1.3x slower)
                _EnsembleMLPFunction._backward_rows(
                    xc[rows], [a[e, rows] for a in acts], [w[e] for w in wc], g_out[e, rows],
                    [dw[e] for dw in dws], [db[e] for db in dbs],
                    None if dx is None else dx[rows], need_p)

    @staticmethod
    def _backward_batched(chunk: int, xc: torch.Tensor, acts: Sequence[torch.Tensor],
                          wc: Sequence[torch.Tensor], g_out: torch.Tensor,
                          dws: list[torch.Tensor], dbs: list[torch.Tensor],
                          dx: torch.Tensor | None, need_p: bool) -> None:
        """`backward` for `_forward_batched`'s per-chunk activations: all members in each op,
        through `_backward_rows`."""
        num_hidden = len(wc) - 1
        e_size, n = g_out.shape[0], g_out.shape[1]
        for c, r0 in enumerate(range(0, n, chunk)):
            rows = slice(r0, min(r0 + chunk, n))
            _EnsembleMLPFunction._backward_rows(
                xc[rows].expand(e_size, -1, -1), acts[c * num_hidden:(c + 1) * num_hidden],
                wc, g_out[:, rows], dws, dbs, None if dx is None else dx[rows], need_p)

    @staticmethod
    def _backward_rows(x_rows: torch.Tensor, acts: Sequence[torch.Tensor],
                       wc: Sequence[torch.Tensor], g_out: torch.Tensor,
                       dws: Sequence[torch.Tensor], dbs: Sequence[torch.Tensor],
                       dx: torch.Tensor | None, need_p: bool) -> None:
        """One chunk of rows, for all members (a leading member axis on every tensor: x_rows
        (E, R, in), acts (E, R, H) per hidden layer, wc (E, in, out), g_out (E, R, out)) or for
        one (the same without that axis); accumulates into dws, dbs (float32, the same
        members) and dx (R, in)."""
        num_hidden = len(wc) - 1
        dtype = x_rows.dtype

        def to_dx(grad: torch.Tensor) -> None:  # summed over members when they are batched
            dx.add_(grad if grad.ndim == 2 else grad.sum(0))
        # Output layer: its (R, out) gradient is tiny; casting it to the compute dtype (not
        # the (R, H) activation to float32) keeps every large tensor in the compute dtype.
        g = g_out.to(dtype)
        w_out = wc[-1].to(dtype)  # ([E,] H, out)
        top = acts[-1] if num_hidden else x_rows
        if need_p:
            dws[-1].add_(top.mT @ g)
            dbs[-1].add_(g_out.sum(-2, keepdim=True))
        if not num_hidden:
            if dx is not None:
                to_dx(g @ w_out.mT)
            return
        g = g @ w_out.mT  # ([E,] R, H) grad wrt the top activation
        for i in range(num_hidden - 1, -1, -1):
            # ReLU backward (what autograd runs for relu, on int16 bits for bf16; masked_fill_
            # with a comparison mask was 10x slower on CPU, bf16 and fp32 alike)
            g = relu_backward(g, acts[i])
            below = acts[i - 1] if i > 0 else x_rows
            if need_p:
                if dtype != torch.float32:  # bf16 product of one chunk, summed in fp32
                    dws[i].add_(below.mT @ g)
                elif g.ndim == 2:
                    dws[i].addmm_(below.mT, g)
                else:
                    dws[i].baddbmm_(below.mT, g)
                dbs[i].add_(g.sum(-2, keepdim=True))
            if i > 0:
                g = g @ wc[i].mT
            elif dx is not None:
                to_dx(g @ wc[0].mT)


class CriticEnsemble(nn.Module):
    """E Q-networks Q_e(s, a) as one MLP of `EnsembleLinear` layers: all critics in one call
    instead of E separate forward passes.

    On the CPU, `_EnsembleMLPFunction` runs them in cache-sized row chunks (see `cpu_path`:
    1.2-1.6x faster per CQL update than layer-wise autograd); with several threads each op
    takes all members at once, so the threads split it by member and each core keeps its
    member's chunk in its own cache. On GPUs the layer-wise path runs. All give the same math
    (up to rounding order), with the output layer in float32 under bf16 autocast.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int],
                 ensemble_size: int = 2) -> None:
        super().__init__()
        dims = [obs_dim + act_dim, *hidden, 1]
        self.layers = nn.ModuleList(
            EnsembleLinear(i, o, ensemble_size) for i, o in zip(dims[:-1], dims[1:], strict=True)
        )
        self.hidden = tuple(hidden)
        self.ensemble_size = ensemble_size

    cpu_path: str = "auto"
    """How the CPU forward/backward runs (class-wide; set on an instance to compare):
    "members" (chunks, one member at a time), "batched" (chunks, all members in each op),
    "layerwise" (plain autograd), "auto" (members for float32 on one thread, else batched).
    CQL updates/s, paper-size critics, interleaved in one process (`benchmarks/
    cql_path_ab.py`, `benchmarks/results/cql_path_ab.json`), batched / members / layerwise:
    2 threads bf16 43.7 / 35.2 / 25.3, fp32 19.4 / 18.0 / 15.8; 1 thread bf16 26.8 / 25.4 /
    17.5, fp32 10.0 / 10.2 / 9.0. With the integer ReLU ops and 4096-row bf16 chunks
    (`benchmarks/results/cql_path_ab_bf16_s8.json`): bf16 2 threads 48.6 / 40.5 / 20.3,
    1 thread 29.2 / 28.3 / 15.1."""

    def _layerwise(self, x: torch.Tensor) -> torch.Tensor:
        """Plain autograd, layer by layer: (N, in) -> (E, N, 1) float32."""
        h = x
        for layer in self.layers[:-1]:
            h = F.relu(layer(h), inplace=True)  # in place: the matmul/add does not keep it
        last = self.layers[-1]
        with torch.autocast(x.device.type, enabled=False):  # fp32 output layer (see above)
            if h.ndim == 2:  # no hidden layer: the shared input
                return torch.matmul(h.float(), last.weight) + last.bias
            return torch.baddbmm(last.bias, h.float(), last.weight)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """obs (B, obs_dim) with actions (B, act_dim) -> Q values (E, B), or with M actions
        per state (B, M, act_dim) -> (E, B, M). Float32 output, also under bf16 autocast."""
        b, per_state = obs.shape[0], actions.ndim == 3
        if per_state:
            m = actions.shape[1]
            obs = obs[:, None].expand(-1, m, -1).reshape(b * m, -1)  # (B*M, obs_dim)
            actions = actions.reshape(b * m, -1)
        x = torch.cat([obs, actions], dim=-1)  # (N, obs+act)
        dtype = (torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu")
                 else torch.float32)
        path = self.cpu_path
        if path == "auto":
            path = ("members" if torch.get_num_threads() == 1 and dtype == torch.float32
                    else "batched")
        if x.device.type == "cpu" and path != "layerwise":
            params = [t for layer in self.layers for t in (layer.weight, layer.bias)]
            q = _EnsembleMLPFunction.apply(x, dtype, _chunk_rows(self.hidden, dtype),
                                           path == "batched", *params)
        else:
            q = self._layerwise(x)
        q = q.squeeze(-1)  # (E, N)
        return q.view(self.ensemble_size, b, -1) if per_state else q


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- (1 - tau) * target + tau * source (one fused foreach op)."""
    t = list(target.parameters())
    s = list(source.parameters())
    if len(t) != len(s):
        raise ValueError(f"soft_update: target has {len(t)} parameters, source {len(s)}")
    torch._foreach_lerp_(t, s, tau)


def optimizer_kwargs(device: torch.device | str) -> dict[str, bool]:
    """Keyword arguments for torch's Adam/AdamW on `device`: the fused (single-kernel)
    implementation where torch has one. On CPU it is ~3.5x faster than the default per-tensor
    loop for a 256x2 MLP (the step was ~30% of a BC update); the math is the same up to
    floating-point rounding order."""
    return {"fused": True} if torch.device(device).type in ("cpu", "cuda") else {}


def weight_decay_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: decay on weight matrices of linear layers only; biases,
    LayerNorm gains and embeddings are not decayed (minGPT's rule)."""
    decay, no_decay = [], []
    for mod in module.modules():
        for pname, p in mod.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if isinstance(mod, nn.Linear | EnsembleLinear) and pname == "weight":
                decay.append(p)
            else:
                no_decay.append(p)
    if weight_decay == 0.0:
        # One group, same parameter order: a fused step runs one kernel per group, and the
        # second group's step cost ~2% of a BC update. Same update either way.
        return [{"params": decay + no_decay, "weight_decay": 0.0}]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def merge_zero_decay_groups(state: dict, groups: int) -> dict:
    """An optimizer state_dict saved with `weight_decay_groups`' two groups at weight decay 0
    (before they became one), for an optimizer with one group: the groups' parameters, in the
    same order, as one. Any other state is returned as it is (torch checks it on load)."""
    saved = state.get("param_groups", [])
    if groups != 1 or len(saved) != 2 or any(g.get("weight_decay") != 0.0 for g in saved):
        return state
    merged = {**saved[0], "params": [*saved[0]["params"], *saved[1]["params"]]}
    return {**state, "param_groups": [merged]}


def gpt_init(module: nn.Module, num_layers: int) -> None:
    """GPT-2 initialization: N(0, 0.02) for linear and embedding weights, zero biases, unit
    LayerNorm, and residual output projections scaled by 1/sqrt(2 * num_layers)."""
    for name, mod in module.named_modules():
        if isinstance(mod, nn.Linear):
            std = 0.02 / math.sqrt(2 * num_layers) if name.endswith("out_proj") else 0.02
            nn.init.normal_(mod.weight, 0.0, std)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
        elif isinstance(mod, nn.Embedding):
            nn.init.normal_(mod.weight, 0.0, 0.02)
        elif isinstance(mod, nn.LayerNorm):
            nn.init.ones_(mod.weight)
            nn.init.zeros_(mod.bias)


_LANES = 1 << 16  # a mask element is one 16-bit lane of a 64-bit random word


def dropout_keep_levels(p: float) -> int:
    """How many of the 2**16 lane values keep an element: p is rounded to a multiple of
    2**-16 (at most 7.6e-6 away), and `dropout` scales by 2**16 / this, the exact inverse of
    the keep probability, so that E[dropout(x)] = x."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    return _LANES - round(p * _LANES)


def dropout_mask(shape: Sequence[int], p: float, dtype: torch.dtype, device: torch.device,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """A keep mask of `shape` in `dtype` with values 0 / 1, and the scale 1/P(keep).

    Why not `torch.bernoulli_`: torch's CPU RNG costs ~2-4 ns per element (one 32-bit draw
    each) plus a float compare, which made the dropout masks ~18% of a bf16 DT update. Here
    one 64-bit draw (`random_` over the whole int64 range, from `generator` or torch's
    default one) gives four independent uniform 16-bit lanes; an element is kept when its
    lane is at least a threshold. The clamp to {t - 1, t} then shift is an exact integer
    compare that yields 0 / 1 without a bool tensor (bool -> float conversion is slow on CPU).
    """
    keep = dropout_keep_levels(p)
    if keep in (0, _LANES):  # p rounds to 0 or 1: no random decision (and no draw)
        return torch.full(tuple(shape), float(keep > 0), dtype=dtype, device=device), 1.0
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(1 << 63), None, generator=generator)  # every int64 value equally likely
    lanes = words.view(torch.int16)[:n].view(tuple(shape))  # uniform on [-2**15, 2**15)
    t = _LANES // 2 - keep  # keep iff lane >= t: `keep` of the 2**16 values
    mask = lanes.clamp(t - 1, t).sub_(t - 1).to(dtype)  # 0 / 1
    return mask, _LANES / keep


def dropout(x: torch.Tensor, p: float, training: bool = True,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted dropout: x * mask / P(keep), the mask from `dropout_mask` (same distribution
    as `F.dropout` up to p's 2**-16 rounding, a different random stream). Identity when not
    training or p == 0. Gradient: grad * mask / P(keep) (plain autograd of the product)."""
    if not training or p == 0.0:
        return x
    mask, scale = dropout_mask(x.shape, p, x.dtype, x.device, generator)
    if x.dtype in (torch.float32, torch.float64):  # scale folded into the mask: one pass
        return x * mask.mul_(scale)
    # Reduced precision: a bf16 copy of the scale would be off by up to 2**-9 (a biased
    # expectation); x * 0/1 is exact and the scalar multiply runs in fp32, then rounds.
    return (x * mask).mul_(scale)


class Dropout(nn.Module):
    """`nn.Dropout` with masks from `dropout_mask` (see there: several times cheaper on CPU).
    `generator` None = torch's default generator, like `nn.Dropout`."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__()
        dropout_keep_levels(p)  # validates p
        self.p, self.generator = float(p), generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training, self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def attention_bias(attn_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An attention mask as an additive bias: bool (True = may attend) -> 0 / -inf; a float
    mask (already additive, as SDPA takes it) is only cast."""
    if attn_mask.dtype == torch.bool:
        return torch.zeros(attn_mask.shape, dtype=dtype, device=attn_mask.device).masked_fill_(
            ~attn_mask, float("-inf"))
    return attn_mask.to(dtype)


class _AttentionFunction(torch.autograd.Function):
    """The attention of `attention_with_dropout` with a hand-written backward.

    Why not autograd of the same ops: under bf16 autocast (which the trainer keeps on
    through `backward`) the backward of an fp32 `bmm` is itself autocast, so each backward
    matmul cast its fp32 operands to bf16 and back, ~10 casts per block. Here forward and
    backward run with autocast off and the backward reuses the saved weights: dV = Wd^T dY,
    dW = (dY V^T) * M, dS = W * (dW - rowsum(dW * W)) (softmax backward), dQ = a dS K,
    dK = a dS^T Q.

    Precision: float32 (or float64) inputs run in their own dtype throughout. bf16/fp16
    inputs (qkv from a linear under autocast) run the five matmuls in that dtype, as
    autocast runs every matmul, with the scores' scale, mask, softmax, dropout mask and
    softmax backward in float32: what GPU mixed precision does for attention. Upcasting q, k
    and v to float32 instead cost a fifth of a bf16 DT update (the casts and fp32 matmuls).
    """

    @staticmethod
    def forward(ctx: Any, qkv: torch.Tensor, bias: torch.Tensor, num_heads: int, p: float,
                generator: torch.Generator | None, rows: slice | None) -> torch.Tensor:
        d = qkv.shape[-1] // 3
        q, k, v = qkv.split(d, dim=-1)  # (B, L, d) strided views, read in place with one head
        if rows is not None:  # only these queries: (B, Lr, d), their bias rows
            q, bias = q[:, rows], bias[:, rows]
        y, saved, meta = attention_qkv_forward(q, k, v, bias, num_heads, p, generator)
        ctx.save_for_backward(*saved)
        ctx.meta, ctx.rows = meta, rows
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        dq, dk, dv = attention_qkv_backward(ctx.saved_tensors, ctx.meta, g)
        if ctx.rows is not None:  # the other queries got no gradient
            dq_rows, dq = dq, dk.new_zeros(dk.shape)  # (B, Lr, d) -> (B, L, d)
            dq[:, ctx.rows] = dq_rows
        return torch.cat([dq, dk, dv], dim=-1), None, None, None, None, None


def attention_qkv_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          bias: torch.Tensor, num_heads: int, p: float,
                          generator: torch.Generator | None
                          ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[Any, ...]]:
    """Attention of Lq queries over L keys (also run inside `offrl.block_train`, where the
    last block asks only the state tokens' queries): q (B, Lq, d), k and v (B, L, d) (views
    may be strided), bias (B*H or 1, Lq, L) additive -> y (B, Lq, d) in q's dtype, the
    tensors `attention_qkv_backward` needs and its other arguments."""
    b, lq, d = q.shape
    length, h = k.shape[1], num_heads
    hd = d // h
    alpha = 1.0 / math.sqrt(hd)
    low = q.dtype in (torch.bfloat16, torch.float16)
    soft = torch.float32 if low else q.dtype  # softmax and mask precision
    with torch.autocast(q.device.type, enabled=False):
        if h > 1:  # (B*H, L, hd): head-major copies
            q, k, v = (t.reshape(b, t.shape[1], h, hd).transpose(1, 2).reshape(
                b * h, t.shape[1], hd) for t in (q, k, v))
        if low:  # matmul in q's dtype, the scale and mask in float32
            scores = torch.bmm(q, k.transpose(1, 2)).float().mul_(alpha).add_(bias.float())
        else:
            scores = torch.baddbmm(bias.to(soft), q, k.transpose(1, 2), alpha=alpha)
        weights = scores.softmax(dim=-1)  # (B*H, Lq, L)
        mask, scale = dropout_mask(weights.shape, p, weights.dtype, weights.device, generator)
        mask.mul_(scale)  # the scale folded into the mask
        dropped = (weights * mask).to(q.dtype)
        y = torch.bmm(dropped, v)  # (B*H, Lq, hd)
    if h > 1:
        y = y.view(b, h, lq, hd).transpose(1, 2).reshape(b, lq, d)
    return y, (q, k, v, weights, dropped, mask), (b, lq, length, d, h, alpha)


def attention_qkv_backward(saved: Sequence[torch.Tensor], meta: tuple[Any, ...],
                           g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`attention_qkv_forward`'s backward: dL/dy (B, Lq, d) -> dL/dq (B, Lq, d), dL/dk and
    dL/dv (B, L, d)."""
    q, k, v, weights, dropped, mask = saved
    b, lq, length, d, h, alpha = meta
    hd = d // h
    with torch.autocast(g.device.type, enabled=False):
        g = g.to(q.dtype)
        if h > 1:
            g = g.reshape(b, lq, h, hd).transpose(1, 2).reshape(b * h, lq, hd)
        dw = torch.bmm(g, v.transpose(1, 2)).to(weights.dtype).mul_(mask)  # (B*H, Lq, L)
        ds = torch.ops.aten._softmax_backward_data(dw, weights, -1, weights.dtype)
        ds = ds.mul_(alpha).to(q.dtype)
        dq = torch.bmm(ds, k)  # (B*H, Lq, hd)
        dk = torch.bmm(ds.transpose(1, 2), q)  # (B*H, L, hd)
        dv = torch.bmm(dropped.transpose(1, 2), g)
        if h == 1:
            return dq, dk, dv
        return tuple(t.view(b, h, t.shape[1], hd).transpose(1, 2).reshape(b, t.shape[1], d)
                     for t in (dq, dk, dv))


def attention_with_dropout(
    qkv: torch.Tensor, num_heads: int, attn_mask: torch.Tensor | None, p: float,
    generator: torch.Generator | None = None, rows: slice | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd) + mask) with `dropout` on the weights, times v, written out
    for training with attention dropout. qkv (B, L, 3d) (rows q, k, v as `nn.Linear(d, 3d)`
    lays them out), attn_mask (B, 1, L, L) bool (True = may attend) or additive float,
    None = causal -> (B, L, d) in qkv's dtype; with `rows` (a slice of the L positions) only
    those queries: (B, Lr, d). Every query must see at least one key (a fully masked row is
    NaN).

    Why not `scaled_dot_product_attention(dropout_p=p)`: with dropout, SDPA on CPU falls back
    to its math path, which copies q, k and v out of the strided qkv view, converts the
    mask and draws a Bernoulli mask per weight. Here, with one head, q, k and v are read in
    place by `baddbmm`/`bmm` (strided operands need no copy), the dropout mask is cheap
    (`dropout_mask`), and the backward is written out (`_AttentionFunction`). Numerics: for
    bf16/fp16 inputs the matmuls run in that dtype, the scale, mask, softmax and dropout in
    float32 (see `_AttentionFunction`).
    """
    b, length, d3 = qkv.shape
    h = num_heads
    if d3 % 3 or (d3 // 3) % h:
        raise ValueError(f"qkv last dim {d3} is not 3 * a multiple of num_heads {h}")
    bias = attention_bias_rows(attn_mask, b, h, length, qkv.dtype, qkv.device)
    return _AttentionFunction.apply(qkv, bias, h, p, generator, rows)


def attention_bias_rows(attn_mask: torch.Tensor | None, b: int, h: int, length: int,
                        dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`attention_qkv_forward`'s bias: (1, L, L) causal for None, else (B*H, L, L) from a
    (B, 1, L, L) bool or additive mask; float64 for float64 inputs, else float32."""
    dtype = torch.float64 if dtype == torch.float64 else torch.float32
    if attn_mask is None:
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        return attention_bias(causal, dtype)[None]  # (1, L, L), broadcast over B*H
    bias = attention_bias(attn_mask, dtype)  # (B, 1, L, L)
    return (bias.flatten(0, 1) if h == 1 else  # (B*H, L, L)
            bias.expand(b, h, length, length).reshape(b * h, length, length))


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention; `attn_mask` (B, 1, L, L) bool (True = may attend) or an
    additive float mask, None = causal.

    The fast path is `scaled_dot_product_attention`; training with attention dropout runs
    `attention_with_dropout` (same math, cheaper on CPU). `return_attention=True` takes a
    plain softmax path that also returns the weights (B, H, L, L), for inspection only: it
    costs nothing when off.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.attn_dropout = dropout
        self.resid_dropout = Dropout(dropout)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
        return_attention: bool = False, rows: slice | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, L, d) -> (B, L, d); with `rows` (a slice of the L positions; not with
        `return_attention`) only those queries are computed: (B, Lr, d)."""
        b, length, d = x.shape
        h = self.num_heads
        p = self.attn_dropout if self.training else 0.0
        weights = None
        if rows is not None and return_attention:
            raise ValueError("rows= and return_attention=True do not combine")
        qkv = linear(x, self.qkv.weight, self.qkv.bias)  # (B, L, 3d)
        if p > 0.0 and not return_attention:
            y = attention_with_dropout(qkv, h, attn_mask, p, rows=rows)  # (B, L or Lr, d)
            return self.resid_dropout(linear(y, self.out_proj.weight, self.out_proj.bias)), None
        q, k, v = qkv.view(b, length, 3, h, d // h).permute(2, 0, 3, 1, 4)  # (B, H, L, hd)
        if rows is not None:
            q = q[:, :, rows]
            if attn_mask is None:  # is_causal aligns a shorter query block at the top left
                attn_mask = torch.ones(length, length, dtype=torch.bool,
                                       device=x.device).tril()
            attn_mask = attn_mask[..., rows, :]  # (Lr, L) or (B, 1, Lr, L)
        if not return_attention:
            if attn_mask is None:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        else:
            if attn_mask is None:
                attn_mask = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // h)  # (B, H, L, L)
            weights = (scores + attention_bias(attn_mask, scores.dtype)).softmax(dim=-1)
            y = dropout(weights, p, self.training) @ v
        y = y.transpose(1, 2).reshape(b, q.shape[2], d)
        return self.resid_dropout(linear(y, self.out_proj.weight, self.out_proj.bias)), weights


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class FeedForward(nn.Module):
    """The transformer's position-wise MLP: Linear(d, 4d) -> activation -> Linear(4d, d) ->
    dropout; `activation` is "relu" or "gelu"."""

    def __init__(self, embed_dim: int, dropout: float, activation: str = "gelu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.fc = nn.Linear(embed_dim, 4 * embed_dim)
        self.out_proj = nn.Linear(4 * embed_dim, embed_dim)  # residual branch: see gpt_init
        self.dropout = Dropout(dropout)
        self.activation = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Rows flattened to 2-D: the linear's output is then a plain tensor, not a view of
        # one, so the in-place ReLU below needs no CopySlices in backward (which zero-fills
        # and copies the whole (N, 4d) gradient). In place because the linear's backward does
        # not need its output and a fresh (N, 4d) tensor costs page faults on CPU.
        rows = x.reshape(-1, x.shape[-1])
        if self.activation is F.relu:  # bias and ReLU inside the matmul under bf16 autocast
            h = linear(rows, self.fc.weight, self.fc.bias, relu=True)  # (N, 4d)
        else:
            h = self.activation(linear(rows, self.fc.weight, self.fc.bias))
        return self.dropout(linear(h, self.out_proj.weight, self.out_proj.bias).view(x.shape))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm GPT-2 block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float,
                 activation: str = "gelu") -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_dim)
        self.attn = CausalSelfAttention(embed_dim, num_heads, dropout)
        self.ln2 = nn.LayerNorm(embed_dim)
        self.mlp = FeedForward(embed_dim, dropout, activation)

    fused_training = True
    """Train on CPU (ReLU MLP, attention dropout > 0) through `offrl.block_train`: one
    autograd node with a hand-written backward instead of ~30. False = module by module."""

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
        return_attention: bool = False, rows: slice | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, L, d) -> (B, L, d), or (B, Lr, d) for `rows`, a slice of the L positions
        (what a model reads of its last block: only those rows' queries, attention output
        and MLP are computed; with `return_attention` the whole block, then the rows), and
        the attention weights (B, H, L, L) when `return_attention`."""
        if (self.fused_training and self.training and not return_attention
                and x.device.type == "cpu" and self.attn.attn_dropout > 0
                and self.mlp.activation is F.relu and self.ln1.weight is not None
                and self.ln2.weight is not None):
            b, length, _ = x.shape
            bias = attention_bias_rows(attn_mask, b, self.attn.num_heads, length, x.dtype,
                                       x.device)
            return block_train_forward(self, x, bias, rows), None
        if rows is not None and not return_attention:
            a, _ = self.attn(self.ln1(x), attn_mask, rows=rows)  # (B, Lr, d)
            x = x[:, rows] + a
            return x + self.mlp(self.ln2(x)), None
        a, weights = self.attn(self.ln1(x), attn_mask, return_attention)
        x = x + a
        x = x + self.mlp(self.ln2(x))
        return (x if rows is None else x[:, rows]), weights
