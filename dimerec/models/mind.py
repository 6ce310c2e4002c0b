"""MIND (Li et al., CIKM 2019): multi-interest extraction by behaviour-to-interest (B2I) dynamic routing.

Paper: "Multi-Interest Network with Dynamic Routing for Recommendation at Tmall", §4.
Official code: none public; the reference implementation is ComiRec's `Model_MIND`
(THUDM/ComiRec, src/model.py: `CapsuleNetwork(bilinear_type=0, relu_layer=True)`), which we follow.

B2I routing: one bilinear map S (d×d) SHARED by all K interests, û_i = S e_i. With a
shared map, zero routing logits would give K identical capsules, so the logits
b_ji are drawn at random (truncated normal, std 1, as in the code) and, like the
code, drawn afresh at every training forward. For 3 iterations: w_i = softmax over
interests(b_i) (padded positions get weight 0), s_j = Σ_i w_ji û_i, c_j = squash(s_j),
b_ji += ⟨û_i, c_j⟩; only the last iteration back-propagates (`dynamic_routing`,
shared with comirec_dr.py). The capsules then pass a ReLU layer (the code's
`relu_layer`, standing in for the paper's ReLU layers above the capsules) to give
the K interests. Training reads out one interest per sample with label-aware
attention softmax(pow(⟨v_k, e_target⟩, p)); ComiRec's code uses its hard limit
(argmax, p → ∞), which is the default here (`--label-power 0`), via `select_interest`.
Loss: sampled softmax of the read-out against the target (`--loss-kind ce`: the full softmax
over every item instead).

Deviations: (1) no user-profile features (none in our data); (2) a fixed K = 4
instead of the paper's per-user K'_u = max(1, min(K, log2 |history|)), as in
ComiRec's code; (3) S has no bias (the paper's bilinear form; ComiRec's dense layer
adds one); (4) in eval mode the routing logits are one fixed draw kept in the
checkpoint, so a user's vectors do not change from call to call (ComiRec redraws
them at serving too); (5) uniform negatives (per positive or shared), not
log-uniform; histories are left-padded.
Sampling (`--sampling windows`, the default: MIND reads no positions): û = S e is computed once per window
column; the routing logits are drawn and the routing run for each target over its own history (the window's items
up to it), under a mask.

    python -m dimerec train --model mind --dataset ml-1m --out runs/mind-ml1m
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from dimerec.models.base import Batch, Recommender, SoftmaxLossConfig, option, softmax_loss
from dimerec.models.comirec_dr import dynamic_routing
from dimerec.models.comirec_sa import select_interest


def label_aware_attention(interests: torch.Tensor, target_emb: torch.Tensor, power: int) -> torch.Tensor:
    """MIND's Eq. (9): softmax_k(pow(⟨v_k, e⟩, p)) weighted sum of interests. [B, K, d], [B, d] -> [B, d]."""
    scores = torch.einsum("bkd,bd->bk", interests, target_emb).pow(power)
    return torch.einsum("bk,bkd->bd", torch.softmax(scores, dim=1), interests)


class B2IRouting(nn.Module):
    """MIND's extractor: item embeddings -> K capsules [B, K, d] (norm < 1) and routing weights [B, L, K]."""

    def __init__(self, dim: int, n_interests: int, max_len: int, iterations: int = 3):
        super().__init__()
        self.n_interests, self.iterations = n_interests, iterations
        self.bilinear = nn.Linear(dim, dim, bias=False)  # S, shared by every interest
        nn.init.xavier_uniform_(self.bilinear.weight)
        # the eval-mode routing logits: one truncated-normal draw, aligned to the newest item
        self.register_buffer("eval_logits", nn.init.trunc_normal_(torch.empty(n_interests, max_len), std=1.0,
                                                                  a=-2.0, b=2.0))

    def initial_logits(self, batch: int, length: int, like: torch.Tensor) -> torch.Tensor:
        if self.training:  # a fresh draw per forward, as ComiRec's tf.truncated_normal
            return nn.init.trunc_normal_(like.new_empty(batch, self.n_interests, length), std=1.0, a=-2.0, b=2.0)
        return self.eval_logits[:, -length:].expand(batch, -1, -1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, L, _ = h.shape
        h = h * mask[..., None]  # the code zeroes padded embeddings before mapping
        u_hat = self.bilinear(h)  # [B, L, d]: one map for every interest
        return dynamic_routing(u_hat, self.initial_logits(B, L, h), mask, self.iterations)

    def window_forward(self, h: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """A windows batch (models.base.Batch), h [B, L, d] -> each target's capsules [N, K, d] and weights
        [N, L, K]: û = S e computed once per window column, the routing logits drawn and routed per target."""
        row, _, _ = batch.window_targets()
        u_hat = self.bilinear(h * batch.mask[..., None])[row]  # [N, L, d], shared by the K interests
        return dynamic_routing(u_hat, self.initial_logits(len(row), h.shape[1], h), batch.column_mask(),
                               self.iterations)


@dataclass
class MINDConfig(SoftmaxLossConfig):
    dim: int = option(64, "embedding size d (DimeRec's setting for every model)", at_least=1)
    n_interests: int = option(4, "K interests (DimeRec's setting; ComiRec's code uses a fixed K too)", at_least=1)
    routing_iterations: int = option(3, "B2I routing iterations (the paper's and ComiRec's 3)", at_least=1)
    relu_layer: bool = option(True, "a ReLU layer over the capsules (ComiRec's Model_MIND default)")
    label_power: int = option(0, "label-aware attention power p; 0 = hard argmax, its p→∞ limit (ComiRec's code)",
                              at_least=0)


class MIND(Recommender):
    name = "mind"
    Config = MINDConfig

    def __init__(self, n_items: int, max_len: int, config: MINDConfig):
        super().__init__(n_items, max_len, config)
        self.item_emb = nn.Embedding(n_items + 1, config.dim, padding_idx=n_items)
        nn.init.normal_(self.item_emb.weight[:n_items], std=0.02)
        self.extractor = B2IRouting(config.dim, config.n_interests, max_len, config.routing_iterations)
        self.proj = nn.Sequential(nn.Linear(config.dim, config.dim), nn.ReLU()) if config.relu_layer else nn.Identity()
        if config.relu_layer:
            nn.init.xavier_uniform_(self.proj[0].weight)
            nn.init.zeros_(self.proj[0].bias)

    def capsules(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The routing's output before the ReLU layer: capsules [B, K, d], weights [B, L, K]."""
        return self.extractor(self.item_emb(hist), hist != self.pad_id)

    def user_vectors(self, hist: torch.Tensor) -> torch.Tensor:
        return self.proj(self.capsules(hist)[0])  # [B, K, d]

    def item_vectors(self) -> torch.Tensor:
        return self.item_emb.weight[:self.n_items]

    takes_windows = True
    windows_by_default = True  # position-free: one map S for every position

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        table, target = self.item_vectors(), batch.target
        if batch.windowed:  # û shared by the window, routing per target over its own history
            interests = self.proj(self.extractor.window_forward(self.item_emb(batch.hist), batch)[0])
            target = batch.window_targets()[2]
        else:
            interests = self.user_vectors(batch.hist)
        if self.config.label_power == 0:
            readout = select_interest(interests, table[target].detach())
        else:
            readout = label_aware_attention(interests, table[target], self.config.label_power)
        return {"loss": softmax_loss(readout, table, target, self.config, self.config.loss_kind)}
