"""Key/value cache for acting with a Decision Transformer: each step embeds only the three
new tokens (a_{t-1}, R_t, s_t) and attends over cached keys and values, instead of
re-running the whole K-step window.

Exactness. While an episode is shorter than the context (t < K), the result equals
`DecisionTransformer.predict_last` on the left-padded window (tested): the causal mask means
a token's keys and values never depend on later tokens. Once the window slides (t >= K) it is
a DEVIATION from the reference: the reference recomputes every token from the last K steps
only, whereas cached keys and values of layers 2+ were computed when their token was new and
so still carry information from steps that have since left the window (the sliding-window
attention of streaming LLM inference). Its first layer stays exact. It is therefore opt-in
(`DTConfig.kv_cache`); measure returns both ways before relying on it.

Layout. One ring of 3K token slots per layer, shared by all N envs, which act in lockstep:
every call writes its three tokens into the next three slots (K calls fill the ring, so the
three new slots are always contiguous). A slot is a valid key for env n when its token
belongs to one of env n's last K steps since its last reset (`slot_step`); the one extra
slot a ring of 3K holds beyond the reference's 3K-1 tokens (a_{t-K}) fails that test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from offrl.relu16 import relu_

if TYPE_CHECKING:  # dt.py imports this module
    from offrl.algorithms.dt import DecisionTransformer

_EMPTY = -(2**62)  # slot_step of slots that hold no token of the current episode


class DTKVCache:
    """Per-layer keys and values (L, 2, N, H, 3K, hd) plus the env step each slot belongs to.

    Acting at N=10 is a few dozen small kernels per step, so their count and their cost
    decide its speed (measured, 1 thread: ~0.8 -> ~0.6 ms a step, env stepping excluded).
    What `step` does for that:
    - slot steps, window and mask are small host arrays (numpy, ~1 us an op where a torch op
      costs several); the additive mask is one `where` between two precomputed rows per ring
      position;
    - the three new tokens' value embeddings are one matmul over [a_{t-1}, R_t, s_t, 1] with
      a block-diagonal weight (exact zeros elsewhere) whose last row holds the three biases,
      added onto the gathered timestep embeddings (the matmul's accumulator);
    - every matrix is kept transposed and contiguous (`addmm(b, x, W^T)`), which MKL runs
      1.1-1.9x faster than `F.linear`'s transposed operand at these sizes (30 x 512 x 128:
      20 vs 38 us), and the residual adds ride in the output projections' accumulator.
    These are copies of the weights: `refresh_weights` after the parameters change in place.
    The result equals the module's forward up to float rounding order (tests: 1e-5)."""

    def __init__(self, model: DecisionTransformer, num_envs: int) -> None:
        attn = model.blocks[0].attn
        d = model.embed_ln.normalized_shape[0]
        nh = attn.num_heads
        slots = 3 * model.context
        dev = model.embed_ln.weight.device
        layers = len(model.blocks)
        shape = (layers, num_envs, nh, slots, d // nh)
        self.num_envs, self.slots = num_envs, slots
        dtype = model.embed_ln.weight.dtype  # bf16 for a bf16 acting copy
        # Keys and values of layer i: kv[i, 0], kv[i, 1]; one copy writes both per step.
        self.kv = torch.zeros((layers, 2, *shape[1:]), device=dev, dtype=dtype)
        self._keys = [self.kv[i, 0] for i in range(layers)]
        self._values = [self.kv[i, 1] for i in range(layers)]
        # The three new slots of layer i at ring position p: _new_slots[p // 3][i].
        self._new_slots = [[self.kv[i, :, :, :, p:p + 3] for i in range(layers)]
                           for p in range(0, slots, 3)]
        self.slot_step = np.full((num_envs, slots), _EMPTY, dtype=np.int64)  # host
        self.ptr = 0
        # Additive masks (3, 3K) per ring position p of the new tokens, for a slot inside
        # the env's window and for one outside it. Inside, new token j sees every old slot
        # and the new tokens up to itself; outside, only its own slot (always visible, so
        # the query of a nonexistent a_{-1} stays finite, as the full model's padding
        # queries do).
        eye = np.eye(slots, dtype=bool)
        self._mask_in, self._mask_out = [], []
        for p in range(0, slots, 3):
            keep = np.ones((3, slots), dtype=bool)
            keep[:, p:p + 3] = np.tri(3, dtype=bool)
            own = eye[p:p + 3]
            self._mask_in.append(np.where(keep | own, np.float32(0.0), np.float32(-np.inf)))
            self._mask_out.append(np.where(own, np.float32(0.0), np.float32(-np.inf)))
        self._step_offset = np.array([1, 0, 0])  # timesteps of a_{t-1}, R_t, s_t: t - offset
        self.model = model  # the setter takes the parameters out

    @property
    def model(self) -> DecisionTransformer:
        return self._model

    @model.setter
    def model(self, model: DecisionTransformer) -> None:
        """Also takes each block's parameters out of their modules once: `step` calls the
        functional ops directly, since ~20 nn.Module calls per step (hooks, attribute lookups)
        cost about a fifth of a one-env step. Vectors (biases, LayerNorm gains) are the
        parameters themselves, which optimizers and `load_state_dict` update in place; the
        matrices are transposed copies (see `refresh_weights`); a new model (the bf16 acting
        copy) comes through this setter."""
        self._model = model
        self._blocks = [_BlockParams(b) for b in model.blocks]
        embeds = [model.embed_return, model.embed_state]
        if not model.discrete:
            embeds.insert(0, model.embed_action)
        self._embeds = embeds
        width = sum(e.weight.shape[1] for e in embeds) + 1  # [a_{t-1},] R_t, s_t, 1
        self._inputs = np.ones((self.num_envs, width), dtype=np.float32)
        self._inputs_t = torch.from_numpy(self._inputs)  # shares memory with the array
        self.refresh_weights()

    def refresh_weights(self) -> None:
        """Drop the transposed weight copies: call after the model's parameters changed in
        place (`DTPolicy` does, whenever the algorithm's `weights_stamp` moved; torch's fused
        optimizers do not move version counters, so the cache cannot tell)."""
        self._copies: _WeightCopies | None = None

    def _weights(self) -> _WeightCopies:
        if self._copies is None:
            self._copies = _WeightCopies(self._model, self._embeds)
        return self._copies

    def reset(self, rows: np.ndarray) -> None:
        """Forget everything cached for the envs in `rows` (bool (N,))."""
        self.slot_step[rows] = _EMPTY

    def step(self, prev_action: torch.Tensor, rtg: np.ndarray, state: np.ndarray,
             t: np.ndarray) -> torch.Tensor:
        """Act for every env: prev_action (N, A) or (N,) = a_{t-1} in model units (ignored
        where t == 0), rtg (N,) scaled R_t, state (N, D) normalized s_t (both float32 host
        arrays), t (N,) int64 steps since reset -> prediction (N, A) or logits (N, n) from
        the s_t token."""
        m, w = self.model, self._weights()
        n = self.num_envs
        dev, dtype = self.kv.device, self.kv.dtype
        d = w.embed_dim
        # Timestep embeddings of a_{t-1}, R_t, s_t (later steps reuse the last one), then
        # the value embeddings added by one matmul over [a_{t-1}, R_t, s_t, 1].
        steps = np.minimum(np.maximum(t[:, None] - self._step_offset, 0), w.last_timestep)
        e_time = m.embed_timestep.weight.index_select(
            0, torch.from_numpy(steps.reshape(-1)).to(dev)).view(n, 3 * d)
        inputs = self._inputs
        if m.discrete:
            inputs[:, 0], inputs[:, 1:-1] = rtg, state
            x_rs = torch.addmm(e_time[:, d:], self._inputs_t.to(dev, dtype), w.embed)
            x_a = m.embed_action.weight.index_select(0, prev_action) + e_time[:, :d]
            x = torch.cat([x_a, x_rs], dim=1)
        else:
            a = prev_action.shape[1]
            inputs[:, :a], inputs[:, a], inputs[:, a + 1:-1] = prev_action.cpu().numpy(), rtg, state
            x = torch.addmm(e_time, self._inputs_t.to(dev, dtype), w.embed)
        norm = (d,)
        ln = m.embed_ln
        x = torch.layer_norm(x.view(n * 3, d), norm, ln.weight, ln.bias, ln.eps)
        # x: (3N, d), tokens a_{t-1}, R_t, s_t of env 0, then of env 1, ...
        p = self.ptr // 3
        new = slice(self.ptr, self.ptr + 3)
        slot_step = self.slot_step
        slot_step[:, new] = t[:, None] - self._step_offset
        slot_step[t == 0, self.ptr] = _EMPTY  # no a_{-1}
        # Keys of env n's last K steps (the reference's window), as an additive mask (a bool
        # mask is converted by every SDPA call): (N, 1, 3, 3K).
        window = slot_step > (t - m.context)[:, None]  # (N, 3K)
        mask = np.where(window[:, None, :], self._mask_in[p], self._mask_out[p])
        allowed_bias = torch.from_numpy(mask).to(dev, dtype).unsqueeze(1)
        last = len(self._blocks) - 1
        for i, (b, bw) in enumerate(zip(self._blocks, w.blocks, strict=True)):
            # TransformerBlock.forward in eval mode
            nh = b.num_heads
            h = torch.layer_norm(x, norm, b.ln1_w, b.ln1_b, b.ln1_eps)
            qkv = torch.addmm(b.qkv_b, h, bw.qkv).view(n, 3, 3, nh, d // nh)
            qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, N, H, 3, hd)
            self._new_slots[p][i].copy_(qkv[1:])  # this step's keys and values
            q = qkv[0]
            if i == last:  # later steps need a_{t-1}'s and R_t's keys/values, not outputs
                q, x, attn_mask = q[:, :, 2:], x.view(n, 3, d)[:, 2], allowed_bias[:, :, 2:]
            else:
                attn_mask = allowed_bias
            y = F.scaled_dot_product_attention(q, self._keys[i], self._values[i],
                                               attn_mask=attn_mask)  # (N, H, 3 or 1, hd)
            # The residual is the accumulator of the output projection: in place where x is
            # this step's own contiguous tensor, a new one from the last block's view.
            y = y.transpose(1, 2).reshape(x.shape[0], d)
            x = (torch.addmm(x, y, bw.out) if i == last else x.addmm_(y, bw.out)).add_(b.out_b)
            h = torch.addmm(b.fc_b, torch.layer_norm(x, norm, b.ln2_w, b.ln2_b, b.ln2_eps),
                            bw.fc)
            h = relu_(h) if b.activation is F.relu else b.activation(h)
            x = x.addmm_(h, bw.proj).add_(b.proj_b)
        self.ptr = (self.ptr + 3) % self.slots
        ln = m.ln_f
        out = torch.addmm(m.action_head.bias, torch.layer_norm(x, norm, ln.weight, ln.bias,
                                                               ln.eps), w.head)
        return out if m.discrete else out.tanh_()


class _WeightCopies:
    """The matrices `DTKVCache.step` multiplies by, transposed and contiguous (copies)."""

    def __init__(self, model: DecisionTransformer, embeds: list[torch.nn.Module]) -> None:
        d = model.embed_ln.normalized_shape[0]
        self.embed_dim = d
        self.last_timestep = model.embed_timestep.num_embeddings - 1
        # (sum of input widths + 1, len(embeds) * d): block j maps its input's columns to
        # output columns j*d:(j+1)*d; the last row holds the biases (the inputs end in a 1).
        widths = [e.weight.shape[1] for e in embeds]
        first = embeds[0].weight
        w = first.new_zeros(sum(widths) + 1, d * len(widths))
        row = 0
        for j, (e, width) in enumerate(zip(embeds, widths, strict=True)):
            w[row:row + width, j * d:(j + 1) * d] = e.weight.detach().T
            w[-1, j * d:(j + 1) * d] = e.bias.detach()
            row += width
        self.embed = w
        self.blocks = [_BlockWeights(b) for b in model.blocks]
        self.head = _transposed(model.action_head.weight)


class _BlockWeights:
    """One block's matrices, transposed: (in, out) contiguous."""

    def __init__(self, block: torch.nn.Module) -> None:
        self.qkv = _transposed(block.attn.qkv.weight)
        self.out = _transposed(block.attn.out_proj.weight)
        self.fc = _transposed(block.mlp.fc.weight)
        self.proj = _transposed(block.mlp.out_proj.weight)


def _transposed(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().T.contiguous()


class _BlockParams:
    """One `TransformerBlock`'s vector parameters (the tensors themselves, not copies) and
    settings, for the functional ops of `DTKVCache.step`; dropout is left out (acting is
    eval mode)."""

    def __init__(self, block: torch.nn.Module) -> None:
        attn, mlp = block.attn, block.mlp
        self.num_heads = attn.num_heads
        self.ln1_w, self.ln1_b, self.ln1_eps = block.ln1.weight, block.ln1.bias, block.ln1.eps
        self.qkv_b = attn.qkv.bias
        self.out_b = attn.out_proj.bias
        self.ln2_w, self.ln2_b, self.ln2_eps = block.ln2.weight, block.ln2.bias, block.ln2.eps
        self.fc_b = mlp.fc.bias
        self.activation = mlp.activation
        self.proj_b = mlp.out_proj.bias
