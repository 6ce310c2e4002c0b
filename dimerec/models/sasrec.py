"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the history; the user is the last position.

Paper: W.-C. Kang, J. McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018.
Official code: kang205/SASRec (the authors' TensorFlow) and pmixer/SASRec.pytorch (its PyTorch port).

As in the official code: item embeddings scaled by sqrt(d) plus learned positional
embeddings, dropout, pads zeroed; then `n_layers` blocks of

    Q = LN(x);  x = Q + Attention(Q, x, x)       causal, one head by default
    x = LN(x);  x = x + FFN(x);  pads zeroed      FFN = Linear -> ReLU -> dropout -> Linear -> dropout

(the official drops out before its ReLU, the same function: PointWiseFeedForward says why the order matters)

and a final LayerNorm. (The paper writes each residual as x + Dropout(g(LN(x))); both
official codes add the normalised Q instead, which is followed here.) Items are scored by
inner product with the input item table. The user vector is the output at the last
column, which under left padding is the most recent item.

Differences from the official code:
- Loss (`--loss-kind`). `ssm` (default): sampled softmax of the last position against
  uniform negatives, the way the DimeRec paper trains every model (§5.1.4). On ML-1M at the
  harness's lr 0.005 it stays at popularity level (every user vector nearly the same; 11.5%
  validation HR@50 after 3,000 steps); at the official lr 0.001 it reaches 44.3%, and
  `bce-all-positions` at lr 0.001 49.7%. Table 1's tuning grid tries lr x loss.
  `ce`: cross-entropy of the last position over every item, RecBole's default loss for
  SASRec (RecBole also trains on every prefix, so the two objectives coincide).
  `bce-all-positions`: the official objective: at every real position, binary
  cross-entropy of the next item (the history shifted by one, the sample's target last)
  against one uniform negative, with pads masked. The official sampler redraws a negative
  that is anywhere in the user's sequence; here negatives are drawn uniformly from the
  items absent from the row's history and target.
- Samples come from the harness. By default (`--sampling windows`) a sample is a window of
  max_len items whose last s positions are targets, all scored from one causal pass as the
  official code scores every position of a sequence; the official code draws one whole
  sequence per user per batch, ours cuts each sequence into stretches of s targets so an
  epoch visits every (user, position) once, and a target sees the window's items before
  it (at least max_len - s + 1) at the positions the window gives them. `bce-all-positions`
  is then the official objective itself: BCE of each target against one negative. Under
  `--sampling prefixes` (one (history, next item) pair a pass, the committed runs' and
  RecBole's) `bce-all-positions` trains an early position once per later prefix.
- Pads are masked as attention keys, as in the authors' TensorFlow code (the PyTorch port
  lets the zeroed pads take softmax mass). A user's vector then depends on its items only,
  not on how much padding precedes them.
- Position p embeds the distance from the most recent item, which matches the official
  left-padded arrays; a batch narrower than max_len uses the last max_len positions.
- `--block-style recbole` swaps in RecBole's arrangement (its SASRec, for the loo protocol's
  comparison): post-norm blocks x = LN(x + Dropout(Attention(x, x, x))), x = LN(x + Dropout(FFN(x))),
  a LayerNorm on item + position embeddings (no sqrt(d) scaling), no final LayerNorm, every
  matrix drawn from normal(0, 0.02) and every bias zero. The default stays the official one.
- d = 64 (the DimeRec paper's; the official uses 50). Adam lr 0.005 comes from the
  trainer (the official uses 0.001, betas (0.9, 0.98)). No L2 on embeddings (the official
  default l2_emb = 0).

    python -m dimerec train --model sasrec --dataset ml-1m --out runs/sasrec-ml1m
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from dimerec.models.base import Batch, Recommender, SampledSoftmaxConfig, option, softmax_loss
from dimerec.errors import DimeRecError

LossKind = Literal["ssm", "ce", "bce-all-positions"]
Activation = Literal["relu", "gelu"]
BlockStyle = Literal["official", "recbole"]
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class PointWiseFeedForward(nn.Module):
    """The official 1x1-convolution FFN (a Linear per position) with its residual; `hidden` wide (the official: d;
    RecBole: 256) through `activation` (the official ReLU; RecBole's GELU).

    The official code drops out before its ReLU; here the dropout comes after the activation. For ReLU the two
    are the same function of the same mask (ReLU(m z) = m ReLU(z) for m >= 0), so the official model is unchanged.
    For GELU only this order keeps the training-mode expectation equal to the eval-mode output: with dropout 0.5
    before a GELU, loo's SASRec scored valid HR@10 8.9 in eval mode at epoch 17 and 20.3 with that dropout left on
    (issue 28), its validation falling from its peak while its training loss still fell."""

    def __init__(self, dim: int, dropout: float, hidden: int | None = None, activation: str = "relu"):
        super().__init__()
        hidden = hidden or dim
        self.net = nn.Sequential(nn.Linear(dim, hidden), ACTIVATIONS[activation](), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class CausalBlock(nn.Module):
    """One SASRec block in the official arrangement (the residual adds the normalised query)."""

    def __init__(self, dim: int, n_heads: int, dropout: float, ffn_dim: int | None = None, activation: str = "relu"):
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim, eps=1e-8)
        self.attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-8)
        self.ffn = PointWiseFeedForward(dim, dropout, ffn_dim, activation)

    def forward(self, x: torch.Tensor, blocked: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x [B, L, d]; blocked [B*heads, L, L] True where a query may not look; keep [B, L, 1]."""
        q = self.attn_norm(x)
        x = q + self.attn(q, x, x, attn_mask=blocked, need_weights=False)[0]
        return self.ffn(self.ffn_norm(x)) * keep


class PostNormBlock(nn.Module):
    """One block in RecBole's arrangement (its TransformerLayer, BERT's): post-norm, queries, keys and values all
    from x, dropout on the attention output and after the feed-forward's second layer (none inside it).

        x = LN(x + Dropout(Attention(x, x, x)));  x = LN(x + Dropout(W2 act(W1 x)))
    """

    def __init__(self, dim: int, n_heads: int, dropout: float, ffn_dim: int | None = None, activation: str = "relu"):
        super().__init__()
        hidden = ffn_dim or dim
        self.attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.attn_dropout = nn.Dropout(dropout)
        self.attn_norm = nn.LayerNorm(dim, eps=1e-12)  # RecBole's layer_norm_eps
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), ACTIVATIONS[activation](), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: torch.Tensor, blocked: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x [B, L, d]; blocked [B*heads, L, L] True where a query may not look; keep [B, L, 1]."""
        x = self.attn_norm(x + self.attn_dropout(self.attn(x, x, x, attn_mask=blocked, need_weights=False)[0]))
        return self.ffn_norm(x + self.ffn(x)) * keep


def bce_all_positions(out: torch.Tensor, item_table: torch.Tensor, hist: torch.Tensor, target: torch.Tensor,
                      negatives: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The official loss: position t predicts the item after it against negatives[:, t]; pads masked.

    out [B, L, d] position outputs; item_table [n_items + 1, d] (pad row included);
    hist [B, L] left-padded; target [B]; negatives [B, L]. Returns (positive, negative) BCE terms,
    each a mean over the real positions.
    """
    positives = torch.cat([hist[:, 1:], target[:, None]], dim=1)  # [B, L]: history shifted by one
    real = hist != pad_id  # left padding: a real input always has a real next item
    pos_logits = (out * item_table[positives]).sum(-1)[real]
    neg_logits = (out * item_table[negatives]).sum(-1)[real]
    return (F.binary_cross_entropy_with_logits(pos_logits, torch.ones_like(pos_logits)),
            F.binary_cross_entropy_with_logits(neg_logits, torch.zeros_like(neg_logits)))


def negatives_outside_rows(items: torch.Tensor, n_items: int, width: int) -> torch.Tensor:
    """[B, width] negatives, uniform over the items absent from each row of `items` [B, m] (pads allowed)."""
    allowed = torch.ones(items.shape[0], n_items + 1, device=items.device)
    allowed.scatter_(1, items, 0.0)  # column n_items catches the pads and is dropped
    allowed = allowed[:, :n_items]
    allowed[allowed.sum(1) == 0] = 1.0  # a row that holds every item draws from all of them
    return torch.multinomial(allowed, width, replacement=True)


@dataclass
class SASRecConfig(SampledSoftmaxConfig):
    dim: int = option(64, "embedding size d (the DimeRec paper's; the official uses 50)", at_least=1)
    n_layers: int = option(2, "self-attention blocks (the official's)", at_least=1)
    n_heads: int = option(1, "attention heads (the official's)", at_least=1)
    dropout: float = option(0.2, "dropout of embeddings, attention and FFN (the official's for ML-1M)",
                            at_least=0, below=1)
    ffn_dim: int | None = option(None, "width of each block's feed-forward (default: d, the official's; RecBole's "
                                       "inner_size is 256)", at_least=1)
    ffn_activation: Activation = option("relu", "the feed-forward's activation: relu (the official's) or gelu "
                                                "(RecBole's)")
    block_style: BlockStyle = option("official", "official: the authors' pre-norm blocks (the residual adds the "
                                                 "normalised query), embeddings scaled by sqrt(d), Xavier-normal "
                                                 "init, a final LayerNorm; recbole: RecBole's post-norm blocks, "
                                                 "LayerNorm on the embeddings, normal(0, 0.02) init")
    loss_kind: LossKind = option("ssm", "ssm: sampled softmax on the last position (DimeRec's setting); "
                                        "ce: full softmax over every item on the last position (RecBole's "
                                        "CE); bce-all-positions: the official BCE with one negative per position")

    def __post_init__(self):
        super().__post_init__()
        if self.dim % self.n_heads:
            raise DimeRecError(f"--dim must be a multiple of --n-heads ({self.n_heads}); got {self.dim}")


class CausalEncoder(nn.Module):
    """SASRec's encoder: embeddings plus positions, dropout, causal blocks with pad keys masked. `style` official:
    embeddings scaled by sqrt(d), pre-norm blocks, a final LayerNorm, Xavier-normal init (the authors' code);
    recbole: a LayerNorm on the embeddings, post-norm blocks (RecBole's SASRec). Also DimeRec's `--gem sasrec`
    (Table 3)."""

    def __init__(self, dim: int, max_len: int, n_layers: int, n_heads: int, dropout: float, ffn_dim: int | None = None,
                 activation: str = "relu", style: str = "official"):
        super().__init__()
        self.dim, self.n_heads, self.style = dim, n_heads, style
        self.pos_emb = nn.Parameter(torch.empty(max_len, dim))  # row max_len-1 = the most recent item
        self.emb_dropout = nn.Dropout(dropout)
        Block = CausalBlock if style == "official" else PostNormBlock
        self.blocks = nn.ModuleList(Block(dim, n_heads, dropout, ffn_dim, activation) for _ in range(n_layers))
        # official: the norm after the last pre-norm block; recbole: the norm of the embeddings (its blocks end
        # normalised)
        self.last_norm = nn.LayerNorm(dim, eps=1e-8 if style == "official" else 1e-12)
        for p in self.parameters():
            if p.dim() > 1:
                if style == "official":
                    nn.init.xavier_normal_(p)  # the official init: Xavier-normal on every matrix
                else:
                    nn.init.normal_(p, std=0.02)  # RecBole's initializer_range
        if style == "recbole":  # RecBole zeroes every Linear's bias
            for module in self.modules():
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
                if isinstance(module, nn.MultiheadAttention):
                    nn.init.zeros_(module.in_proj_bias)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h [B, L, d] item embeddings, mask [B, L] (True at real items) -> [B, L, d]; position t sees <= t."""
        L = h.shape[1]
        keep = mask[:, :, None]
        if self.style == "official":
            x = self.emb_dropout(h * self.dim ** 0.5 + self.pos_emb[-L:]) * keep
        else:
            x = self.emb_dropout(self.last_norm(h + self.pos_emb[-L:])) * keep
        future = torch.ones(L, L, dtype=torch.bool, device=h.device).triu(1)
        blocked = future | ~mask[:, None, :]  # [B, L, L]: future positions and pad keys
        # a pad query may look at itself, so its softmax is defined; its output is zeroed anyway
        blocked = blocked & ~torch.eye(L, dtype=torch.bool, device=h.device)
        blocked = blocked.repeat_interleave(self.n_heads, dim=0)  # [B*heads, L, L]
        for block in self.blocks:
            x = block(x, blocked, keep)
        return self.last_norm(x) if self.style == "official" else x


class SASRec(Recommender):
    name = "sasrec"
    Config = SASRecConfig

    def __init__(self, n_items: int, max_len: int, config: SASRecConfig):
        super().__init__(n_items, max_len, config)
        d = config.dim
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=n_items)
        if config.block_style == "official":
            nn.init.xavier_normal_(self.item_emb.weight)  # the official init: Xavier-normal on every matrix
        else:
            nn.init.normal_(self.item_emb.weight, std=0.02)  # RecBole's initializer_range
        self.encoder = CausalEncoder(d, max_len, config.n_layers, config.n_heads, config.dropout, config.ffn_dim,
                                     config.ffn_activation, config.block_style)
        with torch.no_grad():
            self.item_emb.weight[n_items].zero_()

    def sequence_outputs(self, hist: torch.Tensor) -> torch.Tensor:
        """[B, L] histories -> [B, L, d] outputs; position t sees positions <= t only."""
        return self.encoder(self.item_emb(hist), hist != self.pad_id)

    def user_vectors(self, hist: torch.Tensor) -> torch.Tensor:
        return self.sequence_outputs(hist)[:, -1:]  # [B, 1, d]

    def item_vectors(self) -> torch.Tensor:
        return self.item_emb.weight[:self.n_items]

    takes_windows = True
    windows_by_default = True  # causal: a window is read as the official code reads a sequence

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.sequence_outputs(batch.hist)  # [B, L, d]
        kind = self.config.loss_kind
        if batch.windowed:
            return self.window_loss(out, batch)
        if kind in ("ssm", "ce"):
            loss = softmax_loss(out[:, -1], self.item_vectors(), batch.target, self.config, kind)
            return {"loss": loss, f"L_{kind}": loss}
        row_items = torch.cat([batch.hist, batch.target[:, None]], dim=1)  # [B, L+1]
        negatives = negatives_outside_rows(row_items, self.n_items, batch.hist.shape[1])
        l_pos, l_neg = bce_all_positions(out, self.item_emb.weight, batch.hist, batch.target, negatives,
                                         self.pad_id)
        return {"loss": l_pos + l_neg, "L_bce_pos": l_pos, "L_bce_neg": l_neg}

    def window_loss(self, out: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """A windows batch: every target scored from the causal output at its column (out [B, L, d]), one
        pass for the window; bce-all-positions is then the official objective itself, each target against one
        negative drawn outside its row's items."""
        row, column, target = batch.window_targets()
        user = out[row, column]  # [N, d]
        kind = self.config.loss_kind
        if kind in ("ssm", "ce"):
            loss = softmax_loss(user, self.item_vectors(), target, self.config, kind)
            return {"loss": loss, f"L_{kind}": loss}
        row_items = torch.cat([batch.hist, batch.target], dim=1)[row]  # [N, L+s]
        negatives = negatives_outside_rows(row_items, self.n_items, 1)[:, 0]  # [N]
        table = self.item_emb.weight
        pos_logits, neg_logits = (user * table[target]).sum(-1), (user * table[negatives]).sum(-1)
        l_pos = F.binary_cross_entropy_with_logits(pos_logits, torch.ones_like(pos_logits))
        l_neg = F.binary_cross_entropy_with_logits(neg_logits, torch.zeros_like(neg_logits))
        return {"loss": l_pos + l_neg, "L_bce_pos": l_pos, "L_bce_neg": l_neg}
