"""DreamRec (Yang et al., "Generate What You Prefer", NeurIPS 2023): generate the next item's
embedding with a guided Euclidean diffusion model instead of scoring candidates.

Official code: github.com/YangZhengyi98/DreamRec (DreamRec.py, Modules_ori.py).

A SASRec-style Transformer block reads the history and returns the guidance c (the
hidden state of the last position). Training (DreamRec.py `p_losses`): x0 = the target
item's embedding, x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε, and a denoiser f(x_t, t, c) predicts
x0 under a plain MSE loss; no negatives. With probability p_uncond the guidance is
replaced by a learned null vector (classifier-free guidance). Serving: DDPM ancestral
sampling from x_T ~ N(0, I) with x̂0 = (1 + w) f(x_t, t, c) - w f(x_t, t, null); the user
vector is the generated x0, and items are ranked by inner product with it, as the
official `predict` does. Sampling draws from the global torch RNG (evaluation seeds it).

Diffusion: the project's NoiseSchedule and its Euclidean DDPM (SphereDiffusion with
forward="euclidean", reverse="ddpm", σ_t = sqrt(β̃_t)), which is the official p_sample.

T: the paper searches 500-2000 and the official argparse default is 200. We default to
T = 200 (official): the denoiser is one linear layer over [x_t, c, t], so 200 guided
steps take a few seconds per 10k rows on one CPU core; training cost does not depend on T.

Deviations from the official code:
- β schedule: the official argparse default is `exp` (the VP-SDE discretisation); we
  offer linear (default) and cosine, the schedules dimerec.diffusion builds. Linear β is
  1e-4..0.02 at T = 1000 and, by default, scaled by 1000/T (Nichol & Dhariwal; DiffuRec's
  code does the same) so ᾱ_T ≈ 4e-5 at any T. The official linear option uses the raw
  1e-4..0.02 at any T (`--no-scale-betas`), where ᾱ_T = 0.13 at T = 200 — the forward
  process never reaches the N(0, I) the sampler starts from.
- Left-padded histories: a positional embedding indexes the distance from the most recent
  item (the official pads on the right and indexes from the start). Only the last
  position's output is computed, since everything after attention is position-wise and
  only that position is read.
- Scores exclude the padding row of the item table (the official ranks it too).
- The official learning rate is 0.005 with batch 256, as the harness; its 1000 epochs
  with no early stopping are replaced by the harness's early stopping on HR@50.

Known behaviour: the MSE is the only loss and, as in the official code, it trains the item
table too, so it is minimised by pulling all item embeddings together; ranking quality
peaks early and then decays as the table collapses. On ML-1M (3,000 steps) the most trained,
popular items end with the smallest norms (corr(norm, log popularity) = -0.90) while the
generated x0 has norm ~0.6, so the official inner-product ranking puts rare items first:
0.2% validation HR@50, below random. `--retrieval l2` ranks the items nearest to x0 (what the
paper's "oracle item" describes; the official `predict` uses the inner product); with l2 the
item vectors carry |e|^2 as one extra column, which Table 2's probe then sees. On the planted world (480 items)
the defaults stay below MostPopular; d = 128 with --lr 0.001 beats it
(tests/test_baselines_diff.py). The DimeRec paper reports DreamRec near random on ML-10M.

    python -m dimerec train --model dreamrec --dataset ml-1m --out runs/dreamrec-ml1m
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from dimerec.diffusion import (NoiseSchedule, ScheduleKind, SphereDiffusion, Trajectory, classifier_free,
                               drop_guidance, sample_trajectory, timestep_embedding)
from dimerec.models.base import Batch, Recommender, Settings, option

DenoiserKind = Literal["mlp1", "mlp2"]
RetrievalKind = Literal["dot", "l2"]


@dataclass
class DreamRecConfig(Settings):
    dim: int = option(64, "embedding size d (the paper's and the official code's)", at_least=1)
    T: int = option(200, "diffusion steps (official default 200; the paper searches 500-2000)", at_least=1)
    schedule: ScheduleKind = option("linear", "β schedule")
    beta_start: float = option(1e-4, "first linear β at T = 1000 (DDPM's)", above=0, below=1)
    beta_end: float = option(0.02, "last linear β at T = 1000 (DDPM's)", above=0, below=1)
    scale_betas: bool = option(True, "scale the linear β range by 1000/T so ᾱ_T ≈ 4e-5 at any T; "
                                     "--no-scale-betas is the official raw range")
    p_uncond: float = option(0.1, "probability of training with the null guidance (official default 0.1)",
                             at_least=0, below=1)
    dropout: float = option(0.1, "dropout of the encoder (official default 0.1)", at_least=0, below=1)
    denoiser: DenoiserKind = option("mlp1", "mlp1: one linear layer over [x_t, c, t] (official default); "
                                            "mlp2: two layers with GELU")
    retrieval: RetrievalKind = option("dot", "dot: rank items by inner product with the generated x0 (official "
                                             "`predict`); l2: by Euclidean distance, the items nearest to it")


def make_schedule(c: DreamRecConfig) -> NoiseSchedule:
    scale = 1000 / c.T if c.scale_betas else 1.0
    return NoiseSchedule(c.T, c.schedule, beta_start=c.beta_start * scale, beta_end=min(c.beta_end * scale, 0.999))


class GuidanceEncoder(nn.Module):
    """DreamRec's `cacu_h`: one causal self-attention block (1 head) + feed-forward; c = the last position."""

    def __init__(self, dim: int, max_len: int, dropout: float):
        super().__init__()
        self.pos = nn.Embedding(max_len, dim)  # row 0 = the most recent position
        self.emb_dropout, self.attn_dropout = nn.Dropout(dropout), nn.Dropout(dropout)
        self.ln_1, self.ln_2, self.ln_3, self.ln_ff = (nn.LayerNorm(dim) for _ in range(4))
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(self, seq_emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """seq_emb [B, L, d], mask [B, L] -> c [B, d]."""
        L, d = seq_emb.shape[1], seq_emb.shape[2]
        pos = self.pos.weight[:L].flip(0)  # [L, d]: column L-1 (the most recent item) gets row 0
        seq = self.emb_dropout(seq_emb + pos) * mask[:, :, None]
        query = self.ln_1(seq[:, -1:])  # [B, 1, d]; the last position sees every earlier one (causal)
        scores = self.q(query) @ self.k(seq).transpose(1, 2) / math.sqrt(d)  # [B, 1, L]
        scores = scores.masked_fill(~mask[:, None, :], -2.0 ** 32 + 1)  # the official key masking
        attended = self.attn_dropout(torch.softmax(scores, dim=-1)) @ self.v(seq) + query  # residual on the query
        x = self.ln_2(attended)
        return self.ln_3(self.ln_ff(self.ff(x) + x))[:, 0]  # [B, d]

    def window_forward(self, seq_emb: torch.Tensor, batch) -> torch.Tensor:
        """A windows batch (models.base.Batch), seq_emb [B, L, d] -> c [N, d] of each target: the query at its
        column attends over the row's items up to it (positions as the window gives them)."""
        L, d = seq_emb.shape[1], seq_emb.shape[2]
        row, column, _ = batch.window_targets()
        seq = self.emb_dropout(seq_emb + self.pos.weight[:L].flip(0)) * batch.mask[:, :, None]
        query = self.ln_1(seq[row, column])[:, None]  # [N, 1, d]
        keys, values = self.k(seq)[row], self.v(seq)[row]  # [N, L, d]: computed once per window column
        scores = (self.q(query) @ keys.transpose(1, 2) / math.sqrt(d)).masked_fill(
            ~batch.column_mask()[:, None, :], -2.0 ** 32 + 1)
        x = self.ln_2(self.attn_dropout(torch.softmax(scores, dim=-1)) @ values + query)
        return self.ln_3(self.ln_ff(self.ff(x) + x))[:, 0]  # [N, d]


class DreamRec(Recommender):
    name = "dreamrec"
    Config = DreamRecConfig
    denoises = True
    chain_space = "euclidean"  # x_t in R^d; x_T ~ N(0, I)
    serving_levers = ("serve_samples", "guidance_weight")
    default_guidance_weight = 2.0  # the official default w (serving's --guidance-weight)
    guidable = True  # the null guidance is always learned (--p-uncond, official 0.1)

    def __init__(self, n_items: int, max_len: int, config: DreamRecConfig):
        super().__init__(n_items, max_len, config)
        d = config.dim
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=n_items)
        nn.init.normal_(self.item_emb.weight[:n_items], 0, 1)  # the official N(0, 1): x0 on the noise's scale
        self.null = nn.Parameter(torch.randn(d))  # the unconditional guidance ("none_embedding")
        self.encoder = GuidanceEncoder(d, max_len, config.dropout)
        self.step_mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.denoiser = (nn.Linear(3 * d, d) if config.denoiser == "mlp1" else
                         nn.Sequential(nn.Linear(3 * d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)))
        self.diffusion = SphereDiffusion(make_schedule(config), d, forward="euclidean", reverse="ddpm",
                                         reverse_sigma="sqrt-beta-tilde")

    @property
    def schedule(self) -> NoiseSchedule:
        return self.diffusion.schedule

    def item_vectors(self) -> torch.Tensor:
        items = self.item_emb.weight[:self.n_items]
        if self.config.retrieval == "l2":  # [e, |e|^2]: inner products with [2x, -1] rank as -|x - e|^2 does
            return torch.cat([items, items.pow(2).sum(-1, keepdim=True)], dim=-1)
        return items

    def guidance(self, hist: torch.Tensor) -> torch.Tensor:
        """[B, L] -> c [B, d]."""
        return self.encoder(self.item_emb(hist), hist != self.pad_id)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε for steps t [B] in 1..T."""
        return self.diffusion.q_sample(x0, t, noise)

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """f(x_t, t, c): x_t [B, d], t [B], c [B, d] -> x̂0 [B, d]."""
        step = self.step_mlp(timestep_embedding(t, self.config.dim))
        return self.denoiser(torch.cat([x_t, c, step], dim=-1))

    def guided_x0(self, x_t: torch.Tensor, t: torch.Tensor, c: torch.Tensor, w: float) -> torch.Tensor:
        """Classifier-free guidance (diffusion.classifier_free): (1 + w) f(x_t, t, c) - w f(x_t, t, null)."""
        return classifier_free(self.predict_x0(x_t, t, c), self.predict_x0(x_t, t, self.null.expand_as(c)), w)

    takes_windows = True

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        if batch.windowed:  # the encoder reads the window once; the diffusion loss is per target
            target = batch.window_targets()[2]
            c = self.encoder.window_forward(self.item_emb(batch.hist), batch)
        else:
            target, c = batch.target, self.guidance(batch.hist)
        x0 = self.item_emb(target)  # [B, d]
        c = drop_guidance(c, self.null, self.config.p_uncond)  # the null guidance with probability p_uncond
        t = torch.randint(1, self.config.T + 1, (len(c),), device=c.device)
        mse = F.mse_loss(self.predict_x0(self.q_sample(x0, t), t, c), x0)
        return {"loss": mse, "L_mse": mse}

    def interests(self, hist: torch.Tensor) -> tuple[torch.Tensor, None]:
        """The guidance c as the one vector the model reads the history as: [B, 1, d]."""
        return self.guidance(hist)[:, None], None

    @torch.no_grad()
    def trajectory(self, hist: torch.Tensor, n_samples: int | None = None, generator: torch.Generator | None = None,
                   *, guidance_weight: float | None = None) -> Trajectory:
        """DDPM ancestral sampling guided by the history, S samples per user: x_T ~ N(0, I), then T steps, at
        guidance weight w (default the official 2.0)."""
        w = self.default_guidance_weight if guidance_weight is None else guidance_weight
        c = self.guidance(hist)  # [B, d]

        def denoise(x_t, t):  # x_t [B, S, d], t [B, S]
            return self.guided_x0(x_t, t, c[:, None].expand_as(x_t), w)

        return sample_trajectory(self.diffusion, denoise, len(c), n_samples or 1, generator, device=c.device)


    def chain_user_vectors(self, points: torch.Tensor) -> torch.Tensor:
        """With l2 retrieval a point x scores items as [2x, -1] · [e, |e|^2] = -|x - e|^2 + |x|^2."""
        if self.config.retrieval == "l2":
            return torch.cat([2 * points, -torch.ones_like(points[..., :1])], dim=-1)
        return points

    def user_vectors(self, hist: torch.Tensor) -> torch.Tensor:
        """The contract's default serving: one generated x0 per user, [B, 1, d] (d + 1 with l2)."""
        return self.chain_user_vectors(self.trajectory(hist).final)
