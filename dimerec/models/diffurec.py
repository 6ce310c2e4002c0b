"""DiffuRec (Li, Sun & Li, "DiffuRec: A Diffusion Model for Sequential Recommendation", TOIS 2023):
corrupt the target item's embedding and reconstruct it with a Transformer over the history.

Official code: github.com/WHUIR/DiffuRec (src/diffurec.py, src/model.py, src/trainer.py).

Training (`DiffuRec.forward`, `loss_diffu_ce`): x0 = the target item's embedding,
x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε with t uniform in 1..T, and the approximator
reads the history embeddings (dropout, LayerNorm) plus λ ⊙ (x_t + step embedding) added
at every position, λ ~ N(δ, δ) elementwise, through pre-LN Transformer blocks; x̂0 is the
output at the last position. The loss is the full softmax cross-entropy of x̂0 · item
table over all items. Serving (`reverse_p_sample`): x_T ~ N(0, I), T reverse steps
x_{t-1} = μ̃_t(x_t, x̂0) + sqrt(β_t) ε (no noise at the last step); the user vector is the
final x̂0 and items are ranked by inner product with it. Sampling draws from the global
torch RNG (evaluation seeds it).

T: 32, the official default. Each reverse step runs the whole Transformer, so serving
costs T encoder passes; the schedule `trunc-lin` (official default) is linear β from
1000/T·1e-4 + 0.01 to 1000/T·0.02 + 0.01 (for T = 32: 0.013 .. 0.635, ᾱ_T ≈ 1e-7).
`linear` drops the +0.01 truncation (improved-diffusion's 1000/T scaling).
Both are built by the project's NoiseSchedule; the forward noise is its Euclidean q_sample.

Deviations from the official code:
- d = 64 (the DimeRec paper's size for every model; the official default is 128).
- Attention masks the padding keys. The official mask blanks the padded *query* rows and
  lets every position attend to the padding embedding.
- The step embedding is the project's `timestep_embedding` ([sin, cos]; the official orders
  [cos, sin], a permutation of the same features).
- PyTorch's default initialisation of the attention and feed-forward layers (the official
  applies xavier_normal to the feed-forward and output projections).
- The official time-step sampler "lossaware" is never updated in its training loop, so it
  stays uniform; we sample t uniformly.
- Learning rate: the harness's --lr (default 0.005) replaces the official 0.001 with
  StepLR(100, 0.1); pass --lr 0.001 to match it. Batch 256 instead of 512.
- Scores and the loss exclude the padding row of the item table (the official includes it).

Sampling: DiffuRec keeps `--sampling prefixes` (one target a pass), the only sequential model that does. Its
approximator adds each target's own noised x_t to EVERY history position before the Transformer reads them, so
two targets of one window would need two different encoder inputs: no pass can be shared between them exactly.

    python -m dimerec train --model diffurec --dataset ml-1m --out runs/diffurec-ml1m
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from dimerec.diffusion import NoiseSchedule, SphereDiffusion, Trajectory, sample_trajectory, timestep_embedding
from dimerec.models.base import Batch, Recommender, Settings, option
from dimerec.errors import DimeRecError

ScheduleName = Literal["trunc-lin", "linear"]


@dataclass
class DiffuRecConfig(Settings):
    dim: int = option(64, "embedding size d (the DimeRec paper's; the official default is 128)", at_least=1)
    T: int = option(32, "diffusion steps (official default 32)", at_least=1)
    schedule: ScheduleName = option("trunc-lin", "trunc-lin: official truncated linear β; linear: without the +0.01")
    n_blocks: int = option(4, "Transformer blocks of the approximator (official 4)", at_least=1)
    n_heads: int = option(4, "attention heads (official 4)", at_least=1)
    dropout: float = option(0.1, "dropout of the approximator (official 0.1)", at_least=0, below=1)
    emb_dropout: float = option(0.3, "dropout of the history's item embeddings (official 0.3)",
                                 at_least=0, below=1)
    lambda_uncertainty: float = option(0.001, "δ: x_t enters as λ ⊙ x_t with λ ~ N(δ, δ) (official default 0.001)",
                                       at_least=0)

    def __post_init__(self):
        super().__post_init__()
        if self.dim % self.n_heads:
            raise DimeRecError(f"--dim must be a multiple of --n-heads ({self.n_heads}); got {self.dim}")


def make_schedule(T: int, name: ScheduleName) -> NoiseSchedule:
    """The official get_named_beta_schedule('trunc_lin' | 'linear') as a NoiseSchedule."""
    scale = 1000 / T
    shift = 0.01 if name == "trunc-lin" else 0.0
    beta_end = scale * 0.02 + shift
    if beta_end > 1:  # the official fallback for very small T
        beta_end = scale * 0.001 + shift
    return NoiseSchedule(T, "linear", beta_start=scale * 1e-4 + shift, beta_end=beta_end)


class Block(nn.Module):
    """Pre-LN Transformer block: x + drop(attn(LN x)), x + drop(FFN(LN x)), then dropout (official)."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln_attn, self.ln_ff = nn.LayerNorm(dim, eps=1e-12), nn.LayerNorm(dim, eps=1e-12)
        self.attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Dropout(dropout),
                                nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, padding: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """x [B, L, d], padding [B, L] True at padded positions -> [B, L, d], or [B, 1, d] with `last_only`.

        `last_only` computes the last position's output alone, exactly: a position's output reads every key and
        value but only its own query, residual and feed-forward row. The approximator's last block needs no more
        (x̂0 is its last position), and skipping the other rows' query, attention and FFN takes a third off a
        training pass (loss and backward at B 256, L 70, d 64, one thread: median 1.87 -> 1.26 s)."""
        a = self.ln_attn(x)
        query, x = (a[:, -1:], x[:, -1:]) if last_only else (a, x)
        x = x + self.drop(self.attn(query, a, a, key_padding_mask=padding, need_weights=False)[0])
        x = x + self.drop(self.ff(self.ln_ff(x)))
        return self.drop(x)


class DiffuRec(Recommender):
    name = "diffurec"
    Config = DiffuRecConfig
    denoises = True
    chain_space = "euclidean"  # x_t in R^d; x_T ~ N(0, I)
    serving_levers = ("serve_samples",)  # S chains' ends, merged by max (dimerec.serving)

    def __init__(self, n_items: int, max_len: int, config: DiffuRecConfig):
        super().__init__(n_items, max_len, config)
        d = config.dim
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=n_items)  # N(0, 1), PyTorch's default as official
        self.emb_dropout = nn.Dropout(config.emb_dropout)
        self.emb_norm = nn.LayerNorm(d, eps=1e-12)
        self.time_embed = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
        self.blocks = nn.ModuleList(Block(d, config.n_heads, config.dropout) for _ in range(config.n_blocks))
        self.out_dropout = nn.Dropout(config.dropout)
        self.out_norm = nn.LayerNorm(d, eps=1e-12)
        self.diffusion = SphereDiffusion(make_schedule(config.T, config.schedule), d, forward="euclidean",
                                         reverse="ddpm", reverse_sigma="sqrt-beta")  # official σ_t² = β_t

    @property
    def schedule(self) -> NoiseSchedule:
        return self.diffusion.schedule

    def item_vectors(self) -> torch.Tensor:
        return self.item_emb.weight[:self.n_items]

    def encode(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L] -> history representation [B, L, d] and padding mask [B, L] (True = pad)."""
        padding = hist == self.pad_id
        padding[:, -1] = False  # an empty history still has a key to attend to
        return self.emb_norm(self.emb_dropout(self.item_emb(hist))), padding

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε for steps t [B] in 1..T."""
        return self.diffusion.q_sample(x0, t, noise)

    def predict_x0(self, h: torch.Tensor, padding: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The approximator: h [B, L, d], x_t [B, d], t [B] in 1..T -> x̂0 [B, d] (the last position)."""
        c = self.config
        steps = (t - 1).float() * (1000.0 / c.T)  # official index t-1 in 0..T-1, rescaled to 0..1000
        x_t = x_t + self.time_embed(timestep_embedding(steps, c.dim))
        lam = torch.normal(c.lambda_uncertainty, c.lambda_uncertainty, size=h.shape, device=h.device)
        z = h + lam * x_t[:, None]  # [B, L, d]: the noised target added at every position
        for block in self.blocks[:-1]:
            z = block(z, padding)
        z = self.blocks[-1](z, padding, last_only=True)  # [B, 1, d]: only x̂0's row is read
        return self.out_norm(self.out_dropout(z))[:, -1]

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        h, padding = self.encode(batch.hist)
        x0 = self.item_emb(batch.target)  # [B, d]
        t = torch.randint(1, self.config.T + 1, (len(x0),), device=x0.device)
        x0_hat = self.predict_x0(h, padding, self.q_sample(x0, t), t)
        ce = F.cross_entropy(x0_hat @ self.item_vectors().T, batch.target)  # full softmax over all items
        return {"loss": ce, "L_ce": ce}

    @torch.no_grad()
    def trajectory(self, hist: torch.Tensor, n_samples: int | None = None,
                   generator: torch.Generator | None = None) -> Trajectory:
        """The official reverse_p_sample for S samples per user: x_T ~ N(0, I), T steps with σ_t² = β_t."""
        h, padding = self.encode(hist)
        B, S = len(hist), n_samples or 1
        if S > 1:  # every sample reads its user's history
            h, padding = h.repeat_interleave(S, 0), padding.repeat_interleave(S, 0)

        def denoise(x_t, t):  # x_t [B, S, d], t [B, S] -> x̂0 [B, S, d]
            return self.predict_x0(h, padding, x_t.reshape(B * S, -1), t.reshape(-1)).view(B, S, -1)

        return sample_trajectory(self.diffusion, denoise, B, S, generator, device=hist.device)

    def sample(self, hist: torch.Tensor) -> torch.Tensor:
        """The final x̂0 [B, d] (at t = 1, μ̃_1 = x̂0 and no noise is added, so x_0 = x̂0)."""
        return self.trajectory(hist).final[:, 0]

    def user_vectors(self, hist: torch.Tensor) -> torch.Tensor:
        return self.sample(hist)[:, None]  # [B, 1, d]
