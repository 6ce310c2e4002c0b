"""ComiRec-DR (Cen et al., KDD 2020): multi-interest extraction by capsule dynamic routing.

Paper: "Controllable Multi-Interest Framework for Recommendation", §3.2 (dynamic routing).
Official code: THUDM/ComiRec, src/model.py, `CapsuleNetwork(bilinear_type=2)` inside `Model_ComiRec_DR`.

Every history position i and interest j has its own bilinear map, ê_{j|i} = W_ij e_i
(the code's weight [seq_len, K·d, d], drawn N(0, 1)). Routing logits b_ij start at
zero; for 3 iterations: w_i = softmax over interests(b_i) (padded positions get
weight 0), s_j = Σ_i w_ij ê_{j|i}, v_j = squash(s_j), b_ij += ⟨ê_{j|i}, v_j⟩. As in the
code, the first two iterations see ê with gradients stopped, so only the last
iteration back-propagates (into W and the item embeddings); the routing weights
themselves carry no gradient. The K capsules v_j are the interests (norm < 1).
Training picks the interest nearest the target (hard argmax, `select_interest`)
and applies sampled softmax to it (`--loss-kind ce`: the full softmax over every item).

`dynamic_routing` is shared with MIND (mind.py), as ComiRec's code shares one
CapsuleNetwork; `RoutingInterests` has SelfAttentiveInterests' signature so DimeRec
can use it as its GEM (Table 3's ComiRec-DR row).

Harness differences: histories are left-padded, so the per-position maps are
indexed from the most recent item (ComiRec right-pads and indexes from the oldest
item of the window; both agree when the window is full); negatives are uniform (per
positive as the paper states, or shared), not ComiRec's log-uniform.

    python -m dimerec train --model comirec-dr --dataset ml-1m --out runs/comirec-dr-ml1m
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from dimerec.models.base import Batch, Recommender, SoftmaxLossConfig, option, softmax_loss
from dimerec.models.comirec_sa import select_interest


def squash(s: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Capsule squash along the last axis: ‖s‖²/(1+‖s‖²) · s/‖s‖, so every norm lies in [0, 1)."""
    norm2 = s.pow(2).sum(-1, keepdim=True)
    return norm2 / (1 + norm2) * s / torch.sqrt(norm2 + eps)


def dynamic_routing(u_hat: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor,
                    iterations: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Behaviour-to-interest routing as in ComiRec's CapsuleNetwork.

    u_hat: the mapped behaviour capsules, [B, K, L, d] (ComiRec-DR: a map per interest) or [B, L, d] (MIND: one
    map S shared by every interest; routing then multiplies [B, K, L] by [B, L, d] and never builds the K copies,
    ten times faster at a window batch's 8,960 targets); logits [B, K, L] initial routing logits;
    mask [B, L] True at real items. Returns capsules [B, K, d] and the last iteration's
    routing weights [B, L, K] (a softmax over the K interests at each real position, 0 at padding).
    Only the last iteration back-propagates; the logits never do.
    """
    pool, agree = ("bkl,bkld->bkd", "bkld,bkd->bkl") if u_hat.dim() == 4 else ("bkl,bld->bkd", "bld,bkd->bkl")
    u_hat_iter = u_hat.detach()  # the code's stop_gradient on ê for iterations 1..n-1
    logits = logits.detach()
    keep = mask[:, None, :]  # [B, 1, L]
    for i in range(iterations):
        weights = torch.softmax(logits, dim=1).masked_fill(~keep, 0.0)  # [B, K, L], softmax over interests
        if i < iterations - 1:
            capsules = squash(torch.einsum(pool, weights, u_hat_iter))  # [B, K, d]
            logits = logits + torch.einsum(agree, u_hat_iter, capsules)
        else:
            capsules = squash(torch.einsum(pool, weights, u_hat))
    return capsules, weights.transpose(1, 2)


class RoutingInterests(nn.Module):
    """ComiRec-DR's extractor: item embeddings of a history -> K capsule interests (and routing weights)."""

    def __init__(self, dim: int, n_interests: int, max_len: int, iterations: int = 3):
        super().__init__()
        self.n_interests, self.iterations = n_interests, iterations
        # W_ij for every position i and interest j, stacked as [L, K·d, d]; N(0, 1) as in the code
        self.maps = nn.Parameter(torch.randn(max_len, n_interests * dim, dim))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h [B, L, d], mask [B, L] -> interests [B, K, d], routing weights [B, L, K]."""
        B, L, d = h.shape
        h = h * mask[..., None]  # the code zeroes padded embeddings before mapping
        u_hat = torch.einsum("lod,bld->blo", self.maps[-L:], h)  # [B, L, K·d], map aligned to the newest item
        u_hat = u_hat.view(B, L, self.n_interests, d).transpose(1, 2)  # [B, K, L, d]
        logits = h.new_zeros(B, self.n_interests, L)  # ComiRec-DR starts from zero logits
        return dynamic_routing(u_hat, logits, mask, self.iterations)

    def window_forward(self, h: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """A windows batch (models.base.Batch), h [B, L, d] its rows' embeddings -> each target's interests
        [N, K, d] and routing weights [N, L, K]: the mapped capsules û are computed once per window column
        (the maps index the window's columns), then each target routes over its own history."""
        B, L, d = h.shape
        row, _, _ = batch.window_targets()
        u_hat = torch.einsum("lod,bld->blo", self.maps[-L:], h * batch.mask[..., None])
        u_hat = u_hat.view(B, L, self.n_interests, d).transpose(1, 2)[row]  # [N, K, L, d]
        return dynamic_routing(u_hat, h.new_zeros(len(row), self.n_interests, L), batch.column_mask(),
                               self.iterations)


@dataclass
class ComiRecDRConfig(SoftmaxLossConfig):
    dim: int = option(64, "embedding size d (the paper's)", at_least=1)
    n_interests: int = option(4, "K interests (the paper's)", at_least=1)
    routing_iterations: int = option(3, "dynamic-routing iterations (the paper's and the code's 3)", at_least=1)


class ComiRecDR(Recommender):
    name = "comirec-dr"
    Config = ComiRecDRConfig

    def __init__(self, n_items: int, max_len: int, config: ComiRecDRConfig):
        super().__init__(n_items, max_len, config)
        self.item_emb = nn.Embedding(n_items + 1, config.dim, padding_idx=n_items)
        nn.init.normal_(self.item_emb.weight[:n_items], std=0.02)
        self.extractor = RoutingInterests(config.dim, config.n_interests, max_len, config.routing_iterations)

    def routing(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, L] -> interests [B, K, d] and the final routing weights (a softmax over interests, not positions)."""
        return self.extractor(self.item_emb(hist), hist != self.pad_id)

    def user_vectors(self, hist: torch.Tensor) -> torch.Tensor:
        return self.routing(hist)[0]

    def item_vectors(self) -> torch.Tensor:
        return self.item_emb.weight[:self.n_items]

    takes_windows = True

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        table, target = self.item_vectors(), batch.target
        if batch.windowed:  # û shared by the window, routing per target over its own history
            interests = self.extractor.window_forward(self.item_emb(batch.hist), batch)[0]
            target = batch.window_targets()[2]
        else:
            interests = self.user_vectors(batch.hist)
        selected = select_interest(interests, table[target].detach())
        return {"loss": softmax_loss(selected, table, target, self.config, self.config.loss_kind)}
