"""The contract every recommender implements, and the softmax losses they share: sampled softmax
against uniform negatives (the DimeRec paper's, every model's default) and the full softmax over
every item (`--loss-kind ce`, RecBole's default "CE" loss, for the models whose loss is a softmax
over items).

The contract (checked in one place, `check_contract`; callers read the declared class
attributes, never `hasattr`):
- `user_vectors(hist)`: left-padded histories [B, L] -> user vectors [B, K, d]
  (K = 1 for single-interest models); an item's score is its best inner product over
  the K vectors (metrics.max_over_interests);
- `item_vectors()`: the item table [n_items, d] retrieval ranks;
- `interests(hist)`: what the model reads a history as, for display: vectors [B, K', d'] and,
  where the model attends over the history (`has_attention`), the attention [B, L, K'];
  by default the user vectors themselves;
- `trajectory(hist, n_samples, generator, **levers)`: the reverse process, only where `denoises` is
  True: a diffusion.Trajectory with x_t [T+1, B, S, d] and x̂0 [T, B, S, d]; `levers` are the serving
  settings the model declares in `serving_levers` (dimerec.serving passes them; the merge rule and every
  other serving choice live there, not in the model).
Training calls `loss(batch)`, which returns a dict of named loss terms whose
"loss" entry is the total that is minimised; every term is logged.

Each model has a `Config` dataclass; its fields become command-line flags
(`--field-name`), and it is saved in every checkpoint so a model can be rebuilt
from the file alone.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dimerec.errors import DimeRecError
from dimerec.errors import check_choices

NegativeSampler = Literal["per-positive", "shared"]
NEGATIVE_SAMPLERS = typing.get_args(NegativeSampler)
SoftmaxKind = Literal["ssm", "ce"]
SOFTMAX_KINDS = typing.get_args(SoftmaxKind)


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: each bound inclusive (at_least, at_most) or strict (above, below)."""
    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None

    def allows(self, value) -> bool:
        return ((self.at_least is None or value >= self.at_least) and (self.above is None or value > self.above)
                and (self.at_most is None or value <= self.at_most) and (self.below is None or value < self.below))

    def __str__(self) -> str:
        words = [f"{word} {bound:g}" for word, bound in (("at least", self.at_least), ("above", self.above),
                                                        ("at most", self.at_most), ("below", self.below))
                 if bound is not None]
        return " and ".join(words)


def option(default, help: str, *, at_least: float | None = None, above: float | None = None,
           at_most: float | None = None, below: float | None = None):
    """A config field with its command-line help text and, for a number, the range of values it takes (a numeric
    field must declare one: check_settings refuses a config class whose number has none)."""
    bounds = Range(at_least, above, at_most, below)
    return field(default=default, metadata={"help": help, **({"range": bounds} if bounds != Range() else {})})


def setting_kind(annotation) -> tuple[object, bool]:
    """A field's annotation without its `| None`: (the type, whether None is allowed)."""
    args = typing.get_args(annotation)
    if type(None) in args and typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next(a for a in args if a is not type(None)), True
    return annotation, False


def check_settings(config) -> None:
    """The one check of a config's values, derived from its fields: each value must fit the field's annotation
    (a bool, a whole number, a finite number, one of a Literal's choices; None only where the annotation allows it)
    and the field's declared range (option(..., at_least=1)). A bad value is a one-line DimeRecError naming the
    flag, the value and what is allowed. Every config (Settings) runs it when it is made: TrainConfig and each
    model's Config, so a new option is checked as soon as it is declared; a number declared without a range is a
    programming error (TypeError)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        kind, optional = setting_kind(hints[f.name])
        value, flag = getattr(config, f.name), "--" + f.name.replace("_", "-")
        if value is None:
            if optional:
                continue
            raise DimeRecError(f"{flag} must be set; got None")
        if typing.get_origin(kind) is Literal:
            check_choices({f.name: value}, **{f.name: kind})
        elif kind is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise DimeRecError(f"{flag} must be true or false; got {value!r}")
        elif kind in (int, float):
            bounds = f.metadata.get("range")
            if bounds is None:
                raise TypeError(f"{type(config).__name__}.{f.name}: a numeric option needs its range, "
                                f"option(..., at_least=/above=/at_most=/below=)")
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise DimeRecError(f"{flag} must be a finite number; got {value!r}")
            if kind is int and value != int(value):
                raise DimeRecError(f"{flag} must be a whole number; got {value!r}")
            if not bounds.allows(value):
                raise DimeRecError(f"{flag} must be {bounds}; got {value!r}")
        elif kind is str and not isinstance(value, str):
            raise DimeRecError(f"{flag} must be text; got {value!r}")


@dataclass
class Settings:
    """Base of every config whose fields are flags (TrainConfig, each model's Config): making one checks every
    value (check_settings). A subclass with its own __post_init__ calls super().__post_init__() first."""

    def __post_init__(self):
        check_settings(self)


@dataclass
class Batch:
    """One training batch: `prefixes` (target [B], each row's history is its whole `hist`) or a `windows`
    batch (target [B, s], pad where a stretch has fewer targets; data.dataset.TrainSampler): target j of a row
    is the item after column L - s + j, and its history is the row's items up to that column."""
    hist: torch.Tensor  # [B, L] item ids, left-padded with pad_id
    target: torch.Tensor  # [B] next item, or [B, s] a window's targets
    pad_id: int

    @property
    def mask(self) -> torch.Tensor:  # [B, L] True where a real item sits
        return self.hist != self.pad_id

    @property
    def windowed(self) -> bool:
        return self.target.dim() == 2

    def window_targets(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A windows batch's N real targets in row-major order: (row [N], column of the target's most recent
        history item [N], target item [N]). Per-target draws (negatives, t, noise) follow this order."""
        L, s = self.hist.shape[1], self.target.shape[1]
        row, j = (self.target != self.pad_id).nonzero(as_tuple=True)
        return row, L - s + j, self.target[row, j]

    def column_mask(self) -> torch.Tensor:
        """[N, L] of a windows batch: True where target n's history has a real item (its row's items up to
        its column)."""
        row, column, _ = self.window_targets()
        upto = torch.arange(self.hist.shape[1], device=self.hist.device)[None, :] <= column[:, None]
        return self.mask[row] & upto


class Recommender(nn.Module):
    """Base class. Subclasses set `Config`, `name`, and implement the three methods (and the optional two
    that their declared capabilities promise)."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    trainable: ClassVar[bool] = True
    has_attention: ClassVar[bool] = False  # interests() returns attention over the history [B, L, K]
    denoises: ClassVar[bool] = False  # trajectory() runs a reverse diffusion process
    chain_space: ClassVar[str] = "none"  # where trajectory() lives: "sphere" (DimeRec) or "euclidean"
    # loss() takes `windows` batches (every target of a window scored in one pass); False: the model trains on
    # `prefixes` (or `random-cut`) only
    takes_windows: ClassVar[bool] = False
    # the trainer's default sampling is windows (else prefixes): GRU4Rec and MIND, whose read-out does not depend on
    # where a history starts, and SASRec, whose official code trains every position of a sequence so. Not where an
    # attention or a map reads positions counted from the window's end instead of from each target's last item:
    # ComiRec-SA on planted lost 7 points of validation HR@50 at epoch 3 that way, and none with its positional
    # embeddings removed (docs/protocols.md); DreamRec's windows are unmeasured
    windows_by_default: ClassVar[bool] = False

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

    def interests(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, L] -> the vectors the model reads the history as [B, K, d] and its attention [B, L, K] (None
        unless `has_attention`). Default: the user vectors, no attention."""
        return self.user_vectors(hist), None

    def trajectory(self, hist: torch.Tensor, n_samples: int | None = None, generator: torch.Generator | None = None):
        """The reverse run for a batch of histories (a diffusion.Trajectory); only models with `denoises`."""
        raise ContractError(f"{self.name} has no reverse diffusion process (denoises is False)")

    # a model that denoises: the dimerec.serving.ServeConfig fields it honours beyond their defaults, its own
    # classifier-free guidance weight (serving's default), and whether it learned a null guidance to guide with
    serving_levers: ClassVar[tuple[str, ...]] = ()
    default_guidance_weight: ClassVar[float] = 0.0

    @property
    def guidable(self) -> bool:
        return False

    def logit_scale(self) -> float:
        """The inverse temperature of the model's softmax over items (serving's default mixture scale)."""
        return 1.0

    def one_step_mean(self, hist: torch.Tensor, n_samples: int, guidance_weight: float = 0.0) -> torch.Tensor:
        """[B, L] -> [B, 1, d]: the first reverse step's x̂0 averaged over `n_samples` uniform starts (serving's
        `--serve mean`); only models whose `serving_levers` name "serve"."""
        raise ContractError(f"{self.name} has no one-step mean (serving_levers has no 'serve')")

    def chain_user_vectors(self, points: torch.Tensor) -> torch.Tensor:
        """Points of the reverse chain (x_t or x̂0) [..., d] -> the user vectors retrieval scores them as (the
        same, unless the model ranks by something other than the inner product with the point)."""
        return points

    def fit_statistics(self, data, train_users) -> None:
        """Hook for models that read counts from the training data before training."""


class ContractError(DimeRecError):
    """A model broke the contract of this module: the message names the model, the method and the shapes."""


def check_contract(model: Recommender, hist: torch.Tensor, n_samples: int = 2) -> None:
    """Run every method the model's declared capabilities promise on histories [B, L] and check the shapes;
    ContractError naming the first violation. The one place that knows what a model must expose."""
    B, L = hist.shape
    name = model.name or type(model).__name__

    def fail(what: str) -> None:
        raise ContractError(f"{name}: {what}")

    with torch.no_grad():
        items = model.item_vectors()
        if items.dim() != 2 or items.shape[0] != model.n_items:
            fail(f"item_vectors() must be [n_items={model.n_items}, d], got {list(items.shape)}")
        d = items.shape[1]
        users = model.user_vectors(hist)
        if users.dim() != 3 or users.shape[0] != B or users.shape[2] != d:
            fail(f"user_vectors() must be [B={B}, K, d={d}], got {list(users.shape)}")
        vectors, attention = model.interests(hist)
        if vectors.dim() != 3 or vectors.shape[0] != B:
            fail(f"interests() vectors must be [B={B}, K, d], got {list(vectors.shape)}")
        if model.has_attention:
            if attention is None or list(attention.shape) != [B, L, vectors.shape[1]]:
                fail(f"interests() attention must be [B={B}, L={L}, K={vectors.shape[1]}], got "
                     f"{None if attention is None else list(attention.shape)}")
        elif attention is not None:
            fail("interests() returned attention, but the model does not declare has_attention")
        if model.denoises:
            if model.chain_space not in ("sphere", "euclidean"):
                fail(f"chain_space must be sphere or euclidean for a model that denoises, got {model.chain_space!r}")
            traj = model.trajectory(hist, n_samples=n_samples, generator=torch.Generator().manual_seed(0))
            T = len(traj.steps)
            chain_d = traj.x_t.shape[-1]
            if list(traj.x_t.shape) != [T + 1, B, n_samples, chain_d] or list(traj.pred_x0.shape) != [
                    T, B, n_samples, chain_d]:
                fail(f"trajectory() must give x_t [T+1={T + 1}, B={B}, S={n_samples}, d] and x̂0 [T, B, S, d], "
                     f"got {list(traj.x_t.shape)} and {list(traj.pred_x0.shape)}")
            served = model.chain_user_vectors(traj.final)
            if served.shape[-1] != d:
                fail(f"chain_user_vectors() must map chain points to d={d}, got {served.shape[-1]}")


@dataclass
class SampledSoftmaxConfig(Settings):
    n_negatives: int = option(10, "uniform negatives per positive (the paper's 10, §5.1.4)", at_least=1)
    negative_sampler: NegativeSampler = option(
        "per-positive", "per-positive: each row its own negatives (the paper); shared: all rows share n*B")


@dataclass
class SoftmaxLossConfig(SampledSoftmaxConfig):
    loss_kind: SoftmaxKind = option("ssm", "ssm: sampled softmax against --n-negatives uniform negatives (the "
                                           "DimeRec paper's); ce: cross-entropy over every item (RecBole's CE)")


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
                 config: SampledSoftmaxConfig, kind: str = "ssm",
                 negatives: torch.Tensor | None = None) -> torch.Tensor:
    """The model's softmax over items, `kind` ssm (against `negatives`, or ones drawn here from config's
    n_negatives and negative_sampler: a model whose terms share one draw passes it) or ce (every item; nothing
    drawn, `negatives` unused)."""
    if kind == "ce":
        return full_softmax_loss(user, item_table, target)
    if kind != "ssm":
        raise ValueError(f"softmax loss must be one of {SOFTMAX_KINDS}, got {kind!r}")
    if negatives is None:
        negatives = draw_negatives(target, item_table.shape[0], config.n_negatives, config.negative_sampler)
    return sampled_softmax_loss(user, item_table, target, negatives)
