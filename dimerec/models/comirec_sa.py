"""ComiRec-SA (Cen et al., KDD 2020): self-attentive multi-interest extraction; DimeRec's GEM (SPEC §1, Eq. 16-19).

A = softmax over positions( W2 · tanh(W1 · (H + P)) ) ∈ R^{L×K}, padded positions
masked; the K interests are g = Aᵀ H. As in ComiRec's code, the positional
embeddings P enter only the attention scores and the interests are weighted sums
of the raw item embeddings. Training selects the interest closest to the target
(hard argmax, Eq. 18) and applies sampled softmax to it (Eq. 19); `--loss-kind ce` applies
the full softmax over every item instead.

Harness differences: histories are left-padded, so a positional embedding indexes
the distance from the most recent item (ComiRec right-pads); negatives are uniform
(per positive as the paper states, or shared across the batch), not log-uniform.

Sampling: `--sampling windows` computes the logits once per window column and runs each target's softmax over its
own history, but its positional embeddings then count from the window's end, not from the target's last item;
that cost about 7 points of validation HR@50 at epoch 3 on planted, so the default stays `prefixes`
(docs/protocols.md).

    python -m dimerec train --model comirec-sa --dataset ml-1m --out runs/comirec-sa-ml1m
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from dimerec.models.base import Batch, Recommender, SoftmaxLossConfig, option, softmax_loss


class SelfAttentiveInterests(nn.Module):
    """Eq. 16-17: item embeddings of a history -> K interest vectors (and the attention)."""

    def __init__(self, dim: int, n_interests: int, max_len: int):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(max_len, dim))
        nn.init.normal_(self.pos, std=0.02)
        self.w1 = nn.Linear(dim, 4 * dim, bias=False)
        self.w2 = nn.Linear(4 * dim, n_interests, bias=False)

    def forward(self, h: torch.Tensor, mask: torch.Tensor, w1_h: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """h [B, L, d], mask [B, L] -> interests [B, K, d], attention [B, L, K].

        `w1_h` [B, L, 4d], when given, is W1·h already computed: W1(h + P) = W1·h + W1·P, and
        W1·h can be gathered from W1 applied once to the item table (`from_table`), which costs
        |I| instead of B·L matrix-vector products.
        """
        pos = self.pos[-h.shape[1]:]
        pre = self.w1(h + pos) if w1_h is None else w1_h + self.w1(pos)
        scores = self.w2(torch.tanh(pre))  # [B, L, K]
        scores = scores.masked_fill(~mask[:, :, None], float("-inf"))
        attention = torch.softmax(scores, dim=1)  # over positions
        return torch.einsum("blk,bld->bkd", attention, h), attention

    def scores(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Eq. 16's attention logits of every column, pads at -inf: h [B, L, d] -> [B, L, K]. (A windows batch
        has few rows, so W1 is applied to them rather than to the whole table as `from_table` does.)"""
        return self.w2(torch.tanh(self.w1(h + self.pos[-h.shape[1]:]))).masked_fill(~mask[:, :, None], float("-inf"))

    def window_forward(self, table: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """A windows batch (models.base.Batch) -> each target's interests [N, K, d] and attention [N, L, K]:
        the logits are computed once per window column, then each target's softmax runs over its own history
        (the row's items up to its column), so one pass serves the window's s targets."""
        L, s = batch.hist.shape[1], batch.target.shape[1]
        h = F.embedding(batch.hist, table)  # [B, L, d]
        logits = self.scores(h, batch.mask)  # [B, L, K]
        later = torch.arange(L, device=logits.device)[None, :] > torch.arange(L - s, L, device=logits.device)[:, None]
        real = batch.target != batch.pad_id  # [B, s]; a slot without a target reads the whole row (never NaN)
        hidden = later[None] & real[:, :, None]  # [B, s, L]: the columns after a target's own
        attention = torch.softmax(logits[:, None].masked_fill(hidden[..., None], float("-inf")), dim=2)
        interests = torch.einsum("bslk,bld->bskd", attention, h)  # [B, s, K, d]
        return interests[real], attention[real]  # row-major, the order of batch.window_targets()

    def from_table(self, table: torch.Tensor, hist: torch.Tensor, mask: torch.Tensor):
        """The same as forward(table[hist], mask), faster: W1 is applied to the table, then gathered.
        (F.embedding's backward is ~3.5x faster on CPU than that of advanced indexing.)"""
        return self.forward(F.embedding(hist, table), mask, F.embedding(hist, self.w1(table)))


def select_interest(interests: torch.Tensor, target_emb: torch.Tensor) -> torch.Tensor:
    """Eq. 18: the interest with the largest inner product with the target. [B, K, d], [B, d] -> [B, d]."""
    best = torch.einsum("bkd,bd->bk", interests, target_emb).argmax(dim=1)  # [B]
    return interests[torch.arange(len(best), device=best.device), best]


@dataclass
class ComiRecSAConfig(SoftmaxLossConfig):
    dim: int = option(64, "embedding size d (the paper's)", at_least=1)
    n_interests: int = option(4, "K interests (the paper's)", at_least=1)


class ComiRecSA(Recommender):
    name = "comirec-sa"
    Config = ComiRecSAConfig

    def __init__(self, n_items: int, max_len: int, config: ComiRecSAConfig):
        super().__init__(n_items, max_len, config)
        self.item_emb = nn.Embedding(n_items + 1, config.dim, padding_idx=n_items)
        nn.init.normal_(self.item_emb.weight[:n_items], std=0.02)
        self.extractor = SelfAttentiveInterests(config.dim, config.n_interests, max_len)

    has_attention = True

    def interests(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L] -> interests [B, K, d] and the attention over the history behind them [B, L, K]."""
        return self.extractor.from_table(self.item_emb.weight, hist, hist != self.pad_id)

    def user_vectors(self, hist: torch.Tensor) -> torch.Tensor:
        return self.interests(hist)[0]

    def item_vectors(self) -> torch.Tensor:
        return self.item_emb.weight[:self.n_items]

    takes_windows = True

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        table, target = self.item_vectors(), batch.target
        if batch.windowed:  # each target's interests pooled over its own history, the logits shared by the window
            interests = self.extractor.window_forward(self.item_emb.weight, batch)[0]
            target = batch.window_targets()[2]
        else:
            interests = self.user_vectors(batch.hist)
        selected = select_interest(interests, table[target].detach())
        l_gem = softmax_loss(selected, table, target, self.config, self.config.loss_kind)
        return {"loss": l_gem, "L_gem": l_gem}
