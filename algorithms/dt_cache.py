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

if TYPE_CHECKING:  # dt.py imports this module
    from offrl.algorithms.dt import DecisionTransformer

_EMPTY = -(2**62)  # slot_step of slots that hold no token of the current episode


class DTKVCache:
    """Per-layer keys and values (L, 2, N, H, 3K, hd) plus the env step each slot belongs to.

    Per step the work outside the transformer blocks is a handful of kernels: slot steps,
    window and mask are small host arrays (numpy, ~1 us an op where a torch op costs several),
    the three value embeddings are one matmul with a block-diagonal weight over the
    concatenated inputs (a_{t-1}, R_t, s_t; exact zeros elsewhere, so the same sums), and the
    three timestep embeddings one lookup (about a tenth off an acting step at N=10)."""

    def __init__(self, model: DecisionTransformer, num_envs: int) -> None:
        attn = model.blocks[0].attn
        d = model.embed_ln.normalized_shape[0]
        nh = attn.num_heads
        slots = 3 * model.context
        dev = model.embed_ln.weight.device
        shape = (len(model.blocks), num_envs, nh, slots, d // nh)
        self.num_envs, self.slots = num_envs, slots
        dtype = model.embed_ln.weight.dtype  # bf16 for a bf16 acting copy
        # Keys and values of layer i: kv[i, 0], kv[i, 1]; one copy writes both per step.
        self.kv = torch.zeros((len(model.blocks), 2, *shape[1:]), device=dev, dtype=dtype)
        self.slot_step = np.full((num_envs, slots), _EMPTY, dtype=np.int64)  # host
        self.ptr = 0
        # Per ring position of the new tokens: `keep` (3, 3K) hides from new token j the new
        # tokens after it; `own` (3, 3K) marks its own slot (always visible, so the query of a
        # nonexistent a_{-1} stays finite, as the full model's padding queries do).
        eye = np.eye(slots, dtype=bool)
        self.keep, self.own = [], []
        for p in range(0, slots, 3):
            keep = np.ones((3, slots), dtype=bool)
            keep[:, p:p + 3] = np.tri(3, dtype=bool)
            self.keep.append(keep)
            self.own.append(eye[p:p + 3])
        self.model = model  # the setter takes the parameters out

    @property
    def model(self) -> DecisionTransformer:
        return self._model

    @model.setter
    def model(self, model: DecisionTransformer) -> None:
        """Also takes each block's parameters out of their modules once: `step` calls the
        functional ops directly, since ~20 nn.Module calls per step (hooks, attribute lookups)
        cost about a fifth of a one-env step. Optimizers and `load_state_dict` update
        parameters in place, so the references stay current (not the fused embedding weight,
        a copy: see `refresh_embedding`); a new model (the bf16 acting copy) comes through
        this setter."""
        self._model = model
        self._blocks = [_BlockParams(b) for b in model.blocks]
        embeds = [model.embed_return, model.embed_state]
        if not model.discrete:
            embeds.insert(0, model.embed_action)
        self._embeds = embeds
        self.refresh_embedding()

    def refresh_embedding(self) -> None:
        """Drop the fused value-embedding weight (a copy): call after the model's parameters
        changed in place (`DTPolicy` does, whenever the algorithm has been updated since;
        torch's fused optimizers do not move version counters, so the cache cannot tell)."""
        self._fused: tuple[torch.Tensor, torch.Tensor] | None = None

    def _fused_embedding(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(len(embeds) * h, sum of input widths) block-diagonal weight and bias of the value
        embeddings (a_{t-1} when continuous, R_t, s_t)."""
        if self._fused is None:
            h = self._embeds[0].weight.shape[0]
            widths = [e.weight.shape[1] for e in self._embeds]
            w = self._embeds[0].weight.new_zeros(h * len(widths), sum(widths))
            col = 0
            for j, (e, width) in enumerate(zip(self._embeds, widths, strict=True)):
                w[j * h:(j + 1) * h, col:col + width] = e.weight
                col += width
            self._fused = w, torch.cat([e.bias for e in self._embeds])
        return self._fused

    def reset(self, rows: np.ndarray) -> None:
        """Forget everything cached for the envs in `rows` (bool (N,))."""
        self.slot_step[rows] = _EMPTY

    def step(self, prev_action: torch.Tensor, rtg: np.ndarray, state: np.ndarray,
             t: np.ndarray) -> torch.Tensor:
        """Act for every env: prev_action (N, A) or (N,) = a_{t-1} in model units (ignored
        where t == 0), rtg (N,) scaled R_t, state (N, D) normalized s_t (both float32 host
        arrays), t (N,) int64 steps since reset -> prediction (N, A) or logits (N, n) from
        the s_t token."""
        m = self.model
        n = self.num_envs
        dev, dtype = self.kv.device, self.kv.dtype
        last = m.embed_timestep.num_embeddings - 1  # later steps reuse the last embedding
        # Timesteps of a_{t-1}, R_t, s_t; values: one matmul over [a_{t-1}, R_t, s_t].
        steps = np.minimum(np.stack([np.maximum(t - 1, 0), t, t], axis=1), last)  # (N, 3)
        e_time = F.embedding(torch.from_numpy(steps).to(dev), m.embed_timestep.weight)
        w, bias = self._fused_embedding()
        if m.discrete:
            inputs = np.concatenate([rtg[:, None], state], axis=1)
            rs = F.linear(torch.from_numpy(inputs).to(dev, dtype), w, bias).view(n, 2, -1)
            act = F.embedding(prev_action, m.embed_action.weight).unsqueeze(1)
            values = torch.cat([act, rs], dim=1)
        else:
            inputs = np.concatenate([prev_action.cpu().numpy(), rtg[:, None], state], axis=1)
            values = F.linear(torch.from_numpy(inputs).to(dev, dtype), w, bias).view(n, 3, -1)
        ln = m.embed_ln
        x = F.layer_norm(values + e_time, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
        # x: (N, 3, h), tokens a_{t-1}, R_t, s_t
        new = slice(self.ptr, self.ptr + 3)
        self.slot_step[:, new] = np.stack([np.where(t > 0, t - 1, _EMPTY), t, t], axis=1)
        # Keys of env n's last K steps (the reference's window); (N, 1, 3, 3K) with the
        # causal order among the new tokens and each query allowed to see itself.
        window = self.slot_step > (t - m.context)[:, None]  # (N, 3K)
        # Old slots all hold earlier tokens: only the new ones need a causal order.
        p = self.ptr // 3
        allowed = (window[:, None, :] & self.keep[p]) | self.own[p]  # (N, 3, 3K)
        # As an additive float mask once, for all blocks: a bool mask is converted by every
        # SDPA call (one `where` each, a tenth of a one-env step); same values, same result.
        mask = np.where(allowed, np.float32(0.0), np.float32(-np.inf))
        allowed_bias = torch.from_numpy(mask).to(dev, dtype).unsqueeze(1)  # (N, 1, 3, 3K)
        last = len(self._blocks) - 1
        d = x.shape[-1]
        norm = (d,)
        for i, b in enumerate(self._blocks):  # TransformerBlock.forward in eval mode
            nh = b.num_heads
            qkv = F.linear(F.layer_norm(x, norm, b.ln1_w, b.ln1_b, b.ln1_eps), b.qkv_w, b.qkv_b)
            qkv = qkv.view(n, 3, 3, nh, d // nh).permute(2, 0, 3, 1, 4)  # (3, N, H, 3, hd)
            self.kv[i, :, :, :, new] = qkv[1:]  # this step's keys and values
            q = qkv[0]
            if i == last:  # later steps need a_{t-1}'s and R_t's keys/values, not outputs
                q, x, attn_mask = q[:, :, 2:], x[:, 2:], allowed_bias[:, :, 2:]
            else:
                attn_mask = allowed_bias
            y = F.scaled_dot_product_attention(q, self.kv[i, 0], self.kv[i, 1],
                                               attn_mask=attn_mask)  # (N, H, 3 or 1, hd)
            x = x + F.linear(y.transpose(1, 2).reshape(n, -1, d), b.out_w, b.out_b)
            h = F.linear(F.layer_norm(x, norm, b.ln2_w, b.ln2_b, b.ln2_eps), b.fc_w, b.fc_b)
            h = h.relu_() if b.activation is F.relu else b.activation(h)
            x = x.add_(F.linear(h, b.proj_w, b.proj_b))  # x is this block's own tensor
        self.ptr = (self.ptr + 3) % self.slots
        ln = m.ln_f
        return m._head(F.layer_norm(x[:, -1], ln.normalized_shape, ln.weight, ln.bias, ln.eps))


class _BlockParams:
    """One `TransformerBlock`'s parameters (the tensors themselves, not copies) and settings,
    for the functional ops of `DTKVCache.step`; dropout is left out (acting is eval mode)."""

    def __init__(self, block: torch.nn.Module) -> None:
        attn, mlp = block.attn, block.mlp
        self.num_heads = attn.num_heads
        self.ln1_w, self.ln1_b, self.ln1_eps = block.ln1.weight, block.ln1.bias, block.ln1.eps
        self.qkv_w, self.qkv_b = attn.qkv.weight, attn.qkv.bias
        self.out_w, self.out_b = attn.out_proj.weight, attn.out_proj.bias
        self.ln2_w, self.ln2_b, self.ln2_eps = block.ln2.weight, block.ln2.bias, block.ln2.eps
        self.fc_w, self.fc_b = mlp.fc.weight, mlp.fc.bias
        self.activation = mlp.activation
        self.proj_w, self.proj_b = mlp.out_proj.weight, mlp.out_proj.bias
