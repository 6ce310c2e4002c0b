"""GRU4Rec (Hidasi et al., ICLR 2016): a GRU reads the history; its last hidden state is the user.

Paper: B. Hidasi, A. Karatzoglou, L. Baltrunas, D. Tikk, "Session-based Recommendations with
Recurrent Neural Networks", ICLR 2016 (with Hidasi & Karatzoglou, CIKM 2018, for the
cross-entropy / BPR-max losses and the negative sampling that the code uses today).
Official code: hidasib/GRU4Rec (Theano) and hidasib/GRU4Rec_PyTorch_Official.

    item embedding -> dropout -> GRU (n_layers, hidden d) -> dropout -> last hidden state h
    (`--gru-hidden H` != d: a GRU H wide, then RecBole's Linear H -> d)
    score(i) = <h, W_i>

`--output-table` chooses W:
- `shared` (default): W is the input embedding table. This is the official code's default
  (`constrained_embedding=True`, used by all its published best parameter files) and the form
  of ComiRec's GRU4Rec, the code base DimeRec builds on.
- `separate`: an input table plus its own output table W_y, the 2016 paper's feed-forward
  output layer (the paper feeds one-hot items, i.e. an input table of the GRU's input size).

Differences from the official code:
- Training samples. The official code trains session-parallel mini-batches: each of B
  sessions advances one event per step, the hidden state is carried from step to step and
  reset when a session ends. The other rows' targets (plus 2048 popularity-sampled extras)
  are the negatives of a softmax cross-entropy or BPR-max loss. Here every (history prefix,
  next item) sample reruns the GRU over its last max_len items, and the loss is sampled
  softmax against uniform negatives, as the DimeRec paper trains every model (§5.1.4), or with
  `--loss-kind ce` the full softmax over every item (the official cross-entropy without its
  sampling; RecBole's default).
- No per-item output bias b_y, because the harness scores by inner product only. Adam lr
  0.005 comes from the trainer (the official uses Adagrad). d = 64 (the official uses 100
  units). The init follows the official one: Glorot-uniform per table and per gate matrix,
  zero biases.

    python -m dimerec train --model gru4rec --dataset ml-1m --out runs/gru4rec-ml1m

Sampling: by default (`--sampling windows`) one GRU pass over a window of max_len items scores each of its last s
positions, a target reading the state after its own last item (the GRU reads the window from its first item, so a
target sees at least max_len - s + 1 items); `--sampling prefixes` runs the GRU once per (history, next item).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dimerec.models.base import Batch, Recommender, SoftmaxLossConfig, option, softmax_loss

OutputTable = Literal["shared", "separate"]


def left_to_right_aligned(hist: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Move each row's n real items from the last n columns to the first n (what packing expects)."""
    L = hist.shape[1]
    source = (torch.arange(L, device=hist.device)[None, :] + (L - lengths)[:, None]) % L  # [B, L]
    return hist.gather(1, source)


@dataclass
class GRU4RecConfig(SoftmaxLossConfig):
    dim: int = option(64, "embedding size and GRU hidden size d (the DimeRec paper's; the official uses 100)",
                      at_least=1)
    n_layers: int = option(1, "stacked GRU layers (1, the official default)", at_least=1)
    gru_hidden: int | None = option(None, "width of the GRU's state (default: d, the official form); another width "
                                          "adds RecBole's dense layer projecting each state back to d (RecBole's "
                                          "ML-1M hidden_size is 128)", at_least=1)
    dropout_embed: float = option(0.0, "dropout on the input embeddings (0, the official default)",
                                   at_least=0, below=1)
    dropout_hidden: float = option(0.0, "dropout after every GRU layer (0, the official default)",
                                    at_least=0, below=1)
    output_table: OutputTable = option("shared", "shared: score with the input table (the official "
                                                 "constrained_embedding); separate: own output table")


class GRU4Rec(Recommender):
    name = "gru4rec"
    Config = GRU4RecConfig

    def __init__(self, n_items: int, max_len: int, config: GRU4RecConfig):
        super().__init__(n_items, max_len, config)
        d = config.dim
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=n_items)
        self.out_emb = nn.Embedding(n_items, d) if config.output_table == "separate" else None
        self.embed_dropout = nn.Dropout(config.dropout_embed)
        hidden = config.gru_hidden or d
        self.gru = nn.GRU(d, hidden, num_layers=config.n_layers, batch_first=True,
                          dropout=config.dropout_hidden if config.n_layers > 1 else 0.0)
        # RecBole's GRU4Rec: a state wider than d is projected back to d, the item table's width
        self.project = nn.Linear(hidden, d) if hidden != d else nn.Identity()
        self.hidden_dropout = nn.Dropout(config.dropout_hidden)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The official init: uniform +-sqrt(6 / (fan_in + fan_out)) per table and per gate matrix."""
        for table in (self.item_emb, self.out_emb):
            if table is not None:
                nn.init.xavier_uniform_(table.weight)
        self.item_emb.weight[self.n_items].zero_()
        for name, p in self.gru.named_parameters():
            if name.startswith("weight"):
                for gate in p.chunk(3, dim=0):  # [3d, d_in] = reset, update, candidate
                    nn.init.xavier_uniform_(gate)
            else:
                nn.init.zeros_(p)

    def user_vectors(self, hist: torch.Tensor) -> torch.Tensor:
        lengths = (hist != self.pad_id).sum(1).clamp(min=1)  # an empty history reads one pad
        x = self.embed_dropout(self.item_emb(left_to_right_aligned(hist, lengths)))  # [B, L, d]
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h_n = self.gru(packed)  # [n_layers, B, hidden], each row's state after its own last item
        return self.project(self.hidden_dropout(h_n[-1]))[:, None]  # [B, 1, d]

    def item_vectors(self) -> torch.Tensor:
        table = self.out_emb if self.out_emb is not None else self.item_emb
        return table.weight[:self.n_items]

    takes_windows = True
    windows_by_default = True  # position-free: the state after a target's last item

    def column_outputs(self, hist: torch.Tensor) -> torch.Tensor:
        """[B, L] left-padded histories -> [B, L, d]: at each real column the state after that item (the GRU
        reads a row's items from its first; pad columns hold zeros, or the projection's bias)."""
        L = hist.shape[1]
        lengths = (hist != self.pad_id).sum(1).clamp(min=1)
        x = self.embed_dropout(self.item_emb(left_to_right_aligned(hist, lengths)))  # [B, L, d]
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=L)  # real items first
        back = (torch.arange(L, device=hist.device)[None, :] + lengths[:, None]) % L  # undo the alignment
        return self.project(self.hidden_dropout(out.gather(1, back[:, :, None].expand(-1, -1, out.shape[2]))))

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        target = batch.target
        if batch.windowed:  # one GRU pass over the window; target j reads the state at its column
            row, column, target = batch.window_targets()
            user = self.column_outputs(batch.hist)[row, column]
        else:
            user = self.user_vectors(batch.hist)[:, 0]
        kind = self.config.loss_kind
        loss = softmax_loss(user, self.item_vectors(), target, self.config, kind)
        return {"loss": loss, f"L_{kind}": loss}
