"""The contract every recommender implements, and the softmax losses they share: sampled softmax
against uniform negatives (the DimeRec paper's, every model's default) and the full softmax over
every item (`--loss-kind ce`, RecBole's default "CE" loss, for the models whose loss is a softmax
over items).

A model turns a batch of left-padded histories [B, L] into user vectors [B, K, d]
(K = 1 for single-interest models) and exposes its item table [n_items, d]; an
item's score is its best inner product over the K vectors (metrics.max_over_interests).
Training calls `loss(batch)`, which returns a dict of named loss terms whose
"loss" entry is the total that is minimised; every term is logged.

Each model has a `Config` dataclass; its fields become command-line flags
(`--field-name`), and it is saved in every checkpoint so a model can be rebuilt
from the file alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

NegativeSampler = Literal["per-positive", "shared"]
NEGATIVE_SAMPLERS = ("per-positive", "shared")
SoftmaxKind = Literal["ssm", "ce"]
SOFTMAX_KINDS = ("ssm", "ce")


def option(default, help: str):
    """A config field with its command-line help text."""
    return field(default=default, metadata={"help": help})


@dataclass
class Batch:
    hist: torch.Tensor  # [B, L] item ids, left-padded with pad_id
    target: torch.Tensor  # [B] next item
    pad_id: int

    @property
    def mask(self) -> torch.Tensor:  # [B, L] True where a real item sits
        return self.hist != self.pad_id


class Recommender(nn.Module):
    """Base class. Subclasses set `Config`, `name`, and implement the three methods."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    trainable: ClassVar[bool] = True

    def __init__(self, n_items: int, max_len: int, config):
        super().__init__()
        self.n_items, self.max_len, self.config = n_items, max_len, config

    @property
    def pad_id(self) -> int:
        return self.n_items

    def user_vectors(self, hist: torch.Tensor) -> torch.Tensor:
        """[B, L] histories -> [B, K, d] user vectors."""
        raise NotImplementedError

    def item_vectors(self) -> torch.Tensor:
        """[n_items, d] item table used for retrieval."""
        raise NotImplementedError

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Named loss terms of one batch; "loss" is the total."""
        raise NotImplementedError

    def fit_statistics(self, data, train_users) -> None:
        """Hook for models that read counts from the training data before training."""


@dataclass
class SampledSoftmaxConfig:
    n_negatives: int = option(10, "uniform negatives per positive (the paper's 10, §5.1.4)")
    negative_sampler: NegativeSampler = option(
        "per-positive", "per-positive: each row its own negatives (the paper); shared: all rows share n*B")


@dataclass
class SoftmaxLossConfig(SampledSoftmaxConfig):
    loss_kind: SoftmaxKind = option("ssm", "ssm: sampled softmax against --n-negatives uniform negatives (the "
                                           "DimeRec paper's); ce: cross-entropy over every item (RecBole's CE)")

    def __post_init__(self):
        if self.loss_kind not in SOFTMAX_KINDS:
            raise ValueError(f"loss_kind must be one of {SOFTMAX_KINDS}, got {self.loss_kind!r}")


def draw_negatives(target: torch.Tensor, n_items: int, n_negatives: int, sampler: str) -> torch.Tensor:
    """Uniform negatives. per-positive: [B, n] (the paper); shared: [n*B] used by every row."""
    if sampler == "per-positive":
        return torch.randint(0, n_items, (target.shape[0], n_negatives), device=target.device)
    if sampler == "shared":
        return torch.randint(0, n_items, (target.shape[0] * n_negatives,), device=target.device)
    raise ValueError(f"negative_sampler must be one of {NEGATIVE_SAMPLERS}, got {sampler!r}")


def sampled_softmax_loss(user: torch.Tensor, item_table: torch.Tensor, target: torch.Tensor,
                         negatives: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the target against sampled negatives (Eq. 19 and 22).

    user [B, d]; item_table [n_items, d]; target [B]; negatives [B, n] or [m] (shared).
    A negative that equals the row's target is masked out (an accidental hit).
    Uniform sampling makes the logQ correction a constant, so none is applied.
    """
    pos = (user * item_table[target]).sum(-1, keepdim=True)  # [B, 1]
    if negatives.dim() == 2:
        neg = torch.einsum("bd,bnd->bn", user, item_table[negatives])  # [B, n]
        hit = negatives == target[:, None]
    else:
        neg = user @ item_table[negatives].T  # [B, m]
        hit = negatives[None, :] == target[:, None]
    neg = neg.masked_fill(hit, float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros_like(target))


def full_softmax_loss(user: torch.Tensor, item_table: torch.Tensor, target: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the target against every item: -log softmax(user · item_table^T)[target], the mean
    over rows. user [B, d]; item_table [n_items, d] (no pad row); target [B]."""
    return F.cross_entropy(user @ item_table.T / temperature, target)


def softmax_loss(user: torch.Tensor, item_table: torch.Tensor, target: torch.Tensor,
                 config: SampledSoftmaxConfig, kind: str = "ssm") -> torch.Tensor:
    """The model's softmax over items, `kind` ssm (negatives drawn here, from config's n_negatives and
    negative_sampler) or ce (every item; nothing drawn)."""
    if kind == "ce":
        return full_softmax_loss(user, item_table, target)
    if kind != "ssm":
        raise ValueError(f"softmax loss must be one of {SOFTMAX_KINDS}, got {kind!r}")
    negatives = draw_negatives(target, item_table.shape[0], config.n_negatives, config.negative_sampler)
    return sampled_softmax_loss(user, item_table, target, negatives)
