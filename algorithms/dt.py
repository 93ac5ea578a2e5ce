"""Decision Transformer (Chen et al. 2021): return-conditioned sequence modelling of actions."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from offrl.algorithms.base import (
    OfflineAlgorithm,
    check_env_mask,
    check_policy_inputs,
    dataset_env_facts,
    env_max_episode_steps,
    is_mujoco_like,
)
from offrl.algorithms.dt_cache import DTKVCache
from offrl.datasets.core import EpisodeDataset
from offrl.datasets.samplers import SequenceSampler
from offrl.nn import (
    Dropout,
    TransformerBlock,
    attention_bias,
    gpt_init,
    optimizer_kwargs,
    weight_decay_groups,
)
from offrl.optim import AdamW
from offrl.types import SequenceBatch


@dataclass(frozen=True)
class DTConfig:
    """Decision Transformer (Chen et al. 2021, https://arxiv.org/abs/2106.01345).

    Tokens (return-to-go, state, action) per timestep plus a learned timestep embedding,
    causal GPT-2 blocks, the action predicted from each state token. Box actions: tanh head
    scaled to the action bounds, MSE over real (unpadded) steps. Discrete actions: logits and
    cross-entropy. Defaults are the paper's MuJoCo setup (K=20, 128-dim, 3 layers, 1 head,
    dropout 0.1, AdamW 1e-4 with weight decay 1e-4, 10k-step linear warm-up, grad-norm clip
    0.25, batch 64); like the reference gym code the transformer MLPs use ReLU (GPT-2's GELU
    is an option). Windows are left-padded (see `offrl.types`), in training and when acting.

    Deviations from the reference code (github.com/kzl/decision-transformer), and why:
    - padding values: the reference pads training windows with states of -mean/std and
      actions of -10 but acting windows with zeros (harmless there, since both mask padded
      keys); here training and acting both pad with exact zeros after normalization, so the
      model sees identical inputs in both. Padded keys are masked as in the reference; each
      token may still attend to itself so that fully padded query rows stay finite;
    - weight decay applies to linear weight matrices only (the gym reference decays every
      parameter; the Atari reference, like minGPT, decays only weights): embeddings, biases
      and LayerNorms are not decayed;
    - no state or return prediction heads (the gym reference builds them but never trains
      them); no positional embedding besides the timestep embedding, as in the reference;
    - dropout masks come from `offrl.nn.Dropout` (one 64-bit draw per four 16-bit lanes; p
      rounded to a multiple of 2**-16, kept elements scaled by the exact inverse keep
      probability): the distribution of torch's dropout, a different random stream, so a
      seed does not reproduce runs of the reference code bit for bit; ~4x cheaper on CPU.
    """

    batch_size: int = 64
    """Sequences (K-step windows) per gradient step."""
    context: int = 20
    """Context length K in timesteps (3K tokens)."""
    embed_dim: int = 128
    """Token embedding width."""
    num_layers: int = 3
    """Number of transformer blocks."""
    num_heads: int = 1
    """Attention heads per block (must divide embed_dim)."""
    dropout: float = 0.1
    """Dropout on embeddings, attention weights and residual branches."""
    learning_rate: float = 1e-4
    """Peak AdamW learning rate (reached after the warm-up)."""
    weight_decay: float = 1e-4
    """AdamW weight decay on linear weight matrices only."""
    warmup_steps: int = 10_000
    """Linear learning-rate warm-up from lr/warmup_steps to lr over this many updates."""
    grad_clip: float = 0.25
    """Gradient-norm clipping threshold."""
    activation: Literal["relu", "gelu"] = "relu"
    """Activation of the transformer MLPs (the reference gym code's default is relu)."""
    return_scale: float | None = None
    """Returns-to-go are divided by this. None = the env facts table's value, else 1000 for
    MuJoCo envs, else the largest absolute episode return in the dataset."""
    target_return: float | None = None
    """Default return-to-go target when acting. None = the env facts table's first target,
    else the best episode return in the dataset."""
    kv_cache: bool = False
    """Act with a key/value cache (`offrl.algorithms.dt_cache`): ~10x less compute per step,
    exact while t < K, a documented deviation once the window slides. Off = the reference's
    full K-step recomputation."""
    act_precision: Literal["fp32", "bf16"] = "fp32"
    """Precision of the acting forward (evaluation only; training follows the run's
    `precision`): "bf16" acts with a bf16 copy of the model, ~1.75x faster per 10-env exact
    step on CPUs with bf16 matmuls, not bit-identical to fp32 (benchmarks/eval_speed.py)."""
    max_timestep: int | None = None
    """Size of the timestep embedding. None = the larger of the longest episode in the data
    and the env's time limit; later timesteps reuse the last embedding."""
    timestep_init_std: float | None = None
    """Initial std of the timestep embedding. None = torch's N(0, 1), as in the reference
    code (only its GPT-2 part gets GPT-2 init); 0.02 = GPT-2 init, as d3rlpy and CORL do. It
    changes the fit at small budgets (hopper medium-replay, 5k updates: training loss 0.128
    instead of 0.148, d3rlpy's level) but not, there, the score (experiments/README.md,
    peer check)."""

    def __post_init__(self) -> None:
        if self.context < 1 or self.batch_size < 1 or self.num_layers < 1:
            raise ValueError(f"DTConfig: context, batch_size and num_layers must be >= 1, "
                             f"got {self.context}, {self.batch_size}, {self.num_layers}")
        if self.num_heads < 1 or self.embed_dim % self.num_heads:
            raise ValueError(f"DTConfig: embed_dim {self.embed_dim} must be divisible by "
                             f"num_heads {self.num_heads}")
        if self.return_scale is not None and self.return_scale <= 0:
            raise ValueError(f"DTConfig.return_scale must be > 0, got {self.return_scale}")
        if self.warmup_steps < 0 or self.grad_clip <= 0:
            raise ValueError("DTConfig: warmup_steps must be >= 0 and grad_clip > 0")
        if self.timestep_init_std is not None and not self.timestep_init_std > 0:
            raise ValueError(f"DTConfig.timestep_init_std must be > 0 or None, "
                             f"got {self.timestep_init_std}")


_STATE_ROWS = slice(1, None, 3)  # the s_t tokens of the (R_t, s_t, a_t) interleaving


class DecisionTransformer(nn.Module):
    """GPT over interleaved (R_t, s_t, a_t) tokens; predicts a_t from the s_t token."""

    def __init__(
        self, obs_dim: int, act_dim: int, discrete: bool, context: int, max_timestep: int,
        embed_dim: int, num_layers: int, num_heads: int, dropout: float,
        activation: str = "relu", timestep_init_std: float | None = None,
    ) -> None:
        super().__init__()
        h = embed_dim
        self.discrete, self.context = discrete, context
        self.embed_timestep = nn.Embedding(max_timestep, h)
        if timestep_init_std is not None:
            nn.init.normal_(self.embed_timestep.weight, 0.0, timestep_init_std)
        self.embed_return = nn.Linear(1, h)
        self.embed_state = nn.Linear(obs_dim, h)
        self.embed_action = nn.Embedding(act_dim, h) if discrete else nn.Linear(act_dim, h)
        self.embed_ln = nn.LayerNorm(h)
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(h, num_heads, dropout, activation) for _ in range(num_layers))
        self.ln_f = nn.LayerNorm(h)
        self.action_head = nn.Linear(h, act_dim)
        # As in the reference, only the GPT part gets GPT-2 init; embeddings keep torch's.
        gpt_init(self.blocks, num_layers)
        gpt_init(self.ln_f, num_layers)
        length = 3 * context
        self.register_buffer("causal", torch.ones(length, length, dtype=torch.bool).tril(),
                             persistent=False)
        self.register_buffer("eye", torch.eye(length, dtype=torch.bool), persistent=False)

    def forward(
        self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor,
        timesteps: torch.Tensor, mask: torch.Tensor, return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """states (B, K, D) normalized, actions (B, K, A) in [-1, 1] or (B, K) int64,
        returns_to_go (B, K) scaled, timesteps (B, K) int64, mask (B, K) bool ->
        actions (B, K, A) in [-1, 1] or logits (B, K, n); with `return_attention`, also
        one (B, H, 3K, 3K) attention map per block (token order R, s, a per step)."""
        b, k = mask.shape
        tokens = self._tokens(states, actions, returns_to_go, timesteps)  # (B, 3K, h)
        x = self.drop(self.embed_ln(tokens))
        length = 3 * k
        key_ok = mask.repeat_interleave(3, dim=1)  # (B, 3K)
        # Causal, padding keys hidden; the diagonal keeps padding queries finite.
        attn_mask = (self.causal[:length, :length]
                     & (key_ok[:, None, :] | self.eye[:length, :length]))[:, None]  # (B,1,L,L)
        if self.training and not return_attention:  # one additive mask for every block
            attn_mask = attention_bias(attn_mask, x.dtype)
        maps = []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            # Only the state tokens of the last block are read: it computes just those rows
            # (the same result with ~20% fewer FLOPs; with return_attention, the whole block).
            x, w = block(x, attn_mask, return_attention, _STATE_ROWS if i == last else None)
            if return_attention:
                maps.append(w)
        x = self.ln_f(x)  # (B, K, h) state tokens only
        return (self._head(x), maps) if return_attention else self._head(x)

    def _tokens(self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor,
                timesteps: torch.Tensor) -> torch.Tensor:
        """(B, 3K, h) token embeddings in the order R_1, s_1, a_1, R_2, ..., each plus its
        step's timestep embedding."""
        b, k = timesteps.shape
        if k > self.context:
            raise ValueError(f"sequence length {k} exceeds the context {self.context}")
        t = self.embed_timestep(timesteps)  # (B, K, h)
        return torch.stack([
            self.embed_return(returns_to_go.unsqueeze(-1)) + t,
            self.embed_state(states) + t,
            self.embed_action(actions) + t,
        ], dim=2).reshape(b, 3 * k, -1)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        out = self.action_head(x)
        return out if self.discrete else torch.tanh(out)

    def predict_last(
        self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor,
        timesteps: torch.Tensor, mask: torch.Tensor, full: bool | None = None,
    ) -> torch.Tensor:
        """`forward(...)[:, -1]` (the prediction from the last state token) for acting, with
        the work nothing reads left out: the last action token (no earlier token attends to
        it), and in the last block every query but that state token's, plus its MLP, final
        LayerNorm and head. Same inputs as `forward`; eval mode (no dropout) only. Saves
        about a third of the compute of a 3-layer model; tests check it against `forward`.

        `full`: every row's window is unpadded (`mask.all()`, checked here when None; a
        caller that knows it saves a device sync). Then attention is plain causal: SDPA's
        `is_causal` path skips the upper triangle and builds no (B, 1, L, L) mask, the case
        of nearly every acting step once episodes are K steps old."""
        if self.training:
            raise RuntimeError("predict_last is for acting: call model.eval() first")
        b, k = mask.shape
        tokens = self._tokens(states, actions, returns_to_go, timesteps)[:, :-1]  # ends: s_K
        x = self.embed_ln(tokens)  # (B, L=3K-1, h)
        length = 3 * k - 1
        if full is None:
            full = bool(mask.all())
        if full:  # None = causal (CausalSelfAttention); the last query sees every key
            attn_mask = last_mask = None
        else:
            key_ok = mask.repeat_interleave(3, dim=1)[:, :-1]  # (B, L)
            attn_mask = (self.causal[:length, :length]
                         & (key_ok[:, None, :] | self.eye[:length, :length]))[:, None]
            last_mask = attn_mask[:, :, -1:]  # (B, 1, 1, L)
        for block in self.blocks[:-1]:
            x, _ = block(x, attn_mask)
        last = self.blocks[-1]
        attn, d = last.attn, x.shape[-1]
        nh = attn.num_heads
        xn = last.ln1(x)
        w, bias = attn.qkv.weight, attn.qkv.bias  # rows: q, k, v
        q = F.linear(xn[:, -1:], w[:d], bias[:d]).view(b, 1, nh, d // nh).transpose(1, 2)
        kv = F.linear(xn, w[d:], bias[d:]).view(b, length, 2, nh, d // nh).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=last_mask)
        h = x[:, -1] + attn.out_proj(y.transpose(1, 2).reshape(b, d))  # (B, h)
        h = h + last.mlp(last.ln2(h))
        return self._head(self.ln_f(h))  # (B, A) or (B, n)


class DT(OfflineAlgorithm):
    """Decision Transformer; see `DTConfig`. Resolved defaults: return_scale, target_return,
    max_timestep."""

    name = "dt"
    batch_kind = "sequence"
    return_conditioned = True  # the evaluator passes target returns to its policy
    Config = DTConfig

    @classmethod
    def resolve(cls, config: DTConfig, dataset: EpisodeDataset) -> dict[str, float | int]:
        if dataset.discount != 1.0:
            raise ValueError(f"{dataset.meta.name}: DT needs undiscounted returns-to-go "
                             f"(the policy subtracts raw rewards), dataset has discount "
                             f"{dataset.discount}")
        facts = dataset_env_facts(dataset)
        returns = dataset.episode_returns
        if config.return_scale is not None:
            scale = config.return_scale
        elif facts is not None:
            scale = facts.return_scale
        elif is_mujoco_like(dataset):
            scale = 1000.0
        else:
            scale = float(np.abs(returns).max()) or 1.0
        if config.target_return is not None:
            target = config.target_return
        elif facts is not None and facts.target_returns:
            target = facts.target_returns[0]
        else:
            target = float(returns.max())
        longest = int(dataset.episode_lengths.max())
        if config.max_timestep is not None:
            if config.max_timestep < longest:
                raise ValueError(f"DTConfig.max_timestep={config.max_timestep} is shorter than "
                                 f"the longest episode in {dataset.meta.name} ({longest})")
            max_t = config.max_timestep
        else:
            max_t = max(longest, env_max_episode_steps(dataset) or 0)
        return {"return_scale": float(scale), "target_return": float(target),
                "max_timestep": int(max_t)}

    def _build(self) -> None:
        c, s = self.config, self.spaces
        self.model = DecisionTransformer(
            s.obs_dim, s.act_dim, s.discrete, c.context, int(self.resolved["max_timestep"]),
            c.embed_dim, c.num_layers, c.num_heads, c.dropout, c.activation,
            c.timestep_init_std).to(self.device)
        self.nets = self.model
        opt = AdamW(weight_decay_groups(self.model, c.weight_decay), lr=c.learning_rate,
                    **optimizer_kwargs(self.device))
        warm = max(c.warmup_steps, 1)
        self.optimizers = {"model": opt}
        self.schedulers = {"model": torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: min((step + 1) / warm, 1.0))}

    def make_sampler(self, dataset: EpisodeDataset, seed: int) -> SequenceSampler:
        return SequenceSampler(dataset, self.config.batch_size, self.config.context,
                               self.resolved["return_scale"], seed, self.device)

    def prepare(self, batch: SequenceBatch) -> tuple[torch.Tensor, ...]:
        """Model inputs from a raw batch: normalized states and [-1, 1] actions, re-zeroed on
        padding exactly as the policy pads; timesteps clamped to the embedding."""
        m = batch.mask
        states = self.normalize_obs(batch.states) * m[..., None]  # (B, K, D)
        actions = batch.actions if self.spaces.discrete else (
            self.actions.to_unit(batch.actions) * m[..., None])
        timesteps = batch.timesteps.clamp(max=int(self.resolved["max_timestep"]) - 1)
        return states, actions, batch.returns_to_go, timesteps, m

    def update(self, batch: SequenceBatch) -> dict[str, float]:
        self.train_mode()
        states, actions, rtg, timesteps, m = self.prepare(batch)
        pred = self.model(states, actions, rtg, timesteps, m)  # (B, K, A) or (B, K, n)
        if self.spaces.discrete:
            loss = F.cross_entropy(pred[m], actions[m])
        else:
            loss = (pred - actions).pow(2).mean(-1)[m].mean()
        opt = self.optimizers["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        lr = opt.param_groups[0]["lr"]
        opt.step()
        self.schedulers["model"].step()
        self.num_updates += 1
        return self.metrics({"loss": loss, "grad_norm": grad_norm, "lr": lr})

    def make_policy(self, num_envs: int) -> DTPolicy:
        return DTPolicy(self, num_envs)


ACT_PRECISIONS = ("fp32", "bf16")


class DTPolicy:
    """Serves N envs with preallocated (N, K, .) left-padded context buffers.

    `reset` clears the masked rows and sets their raw return-to-go to the target. `act`
    subtracts each row's last raw reward (except on its first step), shifts the window left
    by one, writes the new state, predicts from the state token at position K-1 and writes
    the chosen action back into the buffer. The buffers are public for inspection/tests.
    With the KV cache (`kv_cache=True`) the cache holds the context instead: only
    `actions[:, -1]` (each row's last action, which callers may overwrite) is kept current.

    `precision="bf16"` (opt-in; default `config.act_precision`, itself fp32 by default)
    acts with a bf16 copy of the model: weights, activations, LayerNorms and the KV cache
    in bf16 (bf16 matmuls run on AMX/AVX512-BF16 CPUs and tensor cores). Actions differ from
    fp32 by bf16 rounding (~1e-2 in [-1, 1] units), so returns differ too: measure before
    relying on it (benchmarks/eval_speed.py reports both). Buffers and outputs stay fp32.
    """

    def __init__(self, algo: DT, num_envs: int, kv_cache: bool | None = None,
                 precision: str | None = None) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.algo, self.num_envs = algo, num_envs
        precision = precision or algo.config.act_precision
        if precision not in ACT_PRECISIONS:
            raise ValueError(f"precision must be one of {ACT_PRECISIONS}, got {precision!r}")
        self.precision = precision
        self._dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self._copy_of: tuple[int, int] | None = None  # algo.weights_stamp of the bf16 copy
        model = self._acting_model()
        use_cache = algo.config.kv_cache if kv_cache is None else kv_cache
        self.cache = DTKVCache(model, num_envs) if use_cache else None
        self._cache_of = algo.weights_stamp  # the cache's weight copies are of this model
        s, k, dev = algo.spaces, algo.config.context, algo.device
        n = num_envs
        self.states = torch.zeros(n, k, s.obs_dim, device=dev)  # normalized
        self.actions = (torch.zeros(n, k, dtype=torch.int64, device=dev) if s.discrete
                        else torch.zeros(n, k, s.act_dim, device=dev))  # [-1, 1] units
        self.returns_to_go = torch.zeros(n, k, device=dev)  # scaled
        self.timesteps = torch.zeros(n, k, dtype=torch.int64, device=dev)
        self.mask = torch.zeros(n, k, dtype=torch.bool, device=dev)
        self.raw_return_to_go = np.zeros(n, dtype=np.float64)  # unscaled, per env
        self.t = np.zeros(n, dtype=np.int64)  # steps taken since the row's reset
        # For inspection: called with each act's raw prediction, (N, A) in [-1, 1] or
        # logits (N, n), float32, before the action is chosen (experiments/decision_margins.py).
        self.on_prediction: Callable[[torch.Tensor], None] | None = None
        self.reset(np.ones(n, dtype=bool))

    def _acting_model(self) -> DecisionTransformer:
        """The model in eval mode; for precision "bf16", a bf16 copy of it, remade whenever
        the algorithm has been updated since (a policy may outlive a few updates)."""
        model = self.algo.model
        if model.training:  # `DT.update` switches back; toggling per call cost ~1/3 of act
            model.eval()
        if self.precision == "fp32":
            return model
        if self._copy_of != self.algo.weights_stamp:
            self._bf16_model = copy.deepcopy(model).to(torch.bfloat16).eval()
            self._copy_of = self.algo.weights_stamp
            if getattr(self, "cache", None) is not None:
                self.cache.model = self._bf16_model
        return self._bf16_model

    @property
    def _buffers(self) -> tuple[torch.Tensor, ...]:
        return self.states, self.actions, self.returns_to_go, self.timesteps, self.mask

    def reset(self, env_mask: np.ndarray, target_return: float | None = None) -> None:
        m = check_env_mask(env_mask, self.num_envs)
        target = self.algo.resolved["target_return"] if target_return is None else target_return
        rows = torch.as_tensor(m, device=self.algo.device)
        for buf in self._buffers:
            buf[rows] = 0
        self.raw_return_to_go[m] = float(target)
        self.t[m] = 0
        if self.cache is not None:
            self.cache.reset(m)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, last_reward: np.ndarray) -> np.ndarray:
        algo = self.algo
        check_policy_inputs(obs, last_reward, self.num_envs, algo.spaces.obs_shape)
        started = self.t > 0  # a row's first step after reset has no previous reward
        self.raw_return_to_go[started] -= np.asarray(last_reward, np.float64)[started]
        if self.cache is not None:
            return self._act_cached(obs)
        for buf in self._buffers:  # newest step moves to K-1; same-size copy, no growth
            buf.copy_(buf.roll(-1, dims=1))
        dev = algo.device
        x = torch.as_tensor(np.asarray(obs, np.float32), device=dev)
        self.states[:, -1] = algo.normalize_obs(x)
        self.actions[:, -1] = 0  # placeholder: the state token at K-1 cannot see it
        self.returns_to_go[:, -1] = torch.as_tensor(
            self.raw_return_to_go / algo.resolved["return_scale"], dtype=torch.float32,
            device=dev)
        max_t = int(algo.resolved["max_timestep"]) - 1
        self.timesteps[:, -1] = torch.as_tensor(np.minimum(self.t, max_t), device=dev)
        self.mask[:, -1] = True
        model = self._acting_model()
        dt = self._dtype  # bf16: inputs cast here, the buffers stay fp32
        acts = self.actions if algo.spaces.discrete else self.actions.to(dt)
        full = bool(self.t.min() >= self.states.shape[1] - 1)  # no padded step left
        pred = model.predict_last(self.states.to(dt), acts, self.returns_to_go.to(dt),
                                  self.timesteps, self.mask, full)  # (N, A) or (N, n)
        return self._finish(pred)

    def _act_cached(self, obs: np.ndarray) -> np.ndarray:
        """The KV-cache step: only the new tokens' inputs are built (the cache holds the rest
        of the context), so the window buffers are not shifted; `actions[:, -1]` still holds
        each row's last action (a_{t-1} for this step; callers may overwrite it)."""
        algo = self.algo
        self._acting_model()  # remakes the bf16 copy (and the cache's model) after updates
        if self._cache_of != algo.weights_stamp:  # the fp32 model changed in place
            self.cache.refresh_weights()
            self._cache_of = algo.weights_stamp
        # Host arrays: the cache builds its inputs with numpy (a few us per op less).
        state = algo.normalize_obs(np.asarray(obs, np.float32))
        rtg = (self.raw_return_to_go / algo.resolved["return_scale"]).astype(np.float32)
        pred = self.cache.step(self.actions[:, -1], rtg, state, self.t)
        return self._finish(pred)

    def _finish(self, pred: torch.Tensor) -> np.ndarray:
        """Record the predicted action as the row's last and return it in env units."""
        algo = self.algo
        pred = pred.float()  # no-op in fp32
        if self.on_prediction is not None:
            self.on_prediction(pred)
        self.t += 1
        if algo.spaces.discrete:
            action = pred.argmax(dim=-1)  # (N,)
            self.actions[:, -1] = action
            return action.cpu().numpy().astype(np.int64)
        self.actions[:, -1] = pred
        return algo.actions.to_env(pred)
