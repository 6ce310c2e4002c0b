"""DimeRec (Li et al., 2024): a multi-interest guidance extractor (GEM) and a diffusion
aggregation module (DAM) on the unit sphere, trained jointly (SPEC §1).

  L = L_gem + λ L_recon + μ L_ssm                                   (Eq. 23)

GEM turns the history into K guidance vectors (rule-based Eq. 15, or ComiRec-SA
Eq. 16-17; Table 3's alternatives: ComiRec-DR, a SASRec encoder, an MLP, via
`--gem`); DAM corrupts the normalised target embedding by a geodesic random walk
(Alg. 1) and an MLP f_θ(x_t, t, g) reconstructs it (Eq. 20). Serving runs the
reverse process from a random point on the sphere (Alg. 2) and retrieves by inner
product. `--preset paper` is the paper as written; `--preset ours` (default) is the
variant decided in docs/design.md. `dimerec-nodiff` is the control:
the same GEM and losses, the DAM replaced by an MLP over the K interests; it builds
no diffusion and takes none of its flags.
`--gem-weight 0` drops L_gem from the total (Table 4's "w/o L_gem"); it is still logged.
`--loss-kind ce` scores L_gem and L_ssm by the full softmax over every item instead of the paper's sampled one.
`--sampling windows` (not the default: ComiRec-SA's attention then reads positions counted from the window's
end; docs/protocols.md): the GEM reads a window once and each target's K interests are pooled from its own history
(`batch_guidance`); L_gem, the DAM's t, noise and L_recon, and L_ssm with its negatives stay per target, so a
window's loss is the mean of its targets' (tests/test_windows.py).

    python -m dimerec train --model dimerec --dataset ml-1m --out runs/dimerec-ml1m
    python -m dimerec train --model dimerec --preset paper --dataset ml-1m --out runs/dimerec-paper-ml1m
    python -m dimerec train --model dimerec-nodiff --dataset ml-1m --out runs/nodiff-ml1m
    python -m dimerec train --model dimerec --gem comirec-dr --dataset ml-1m --out runs/dimerec-dr-ml1m
    python -m dimerec train --model dimerec --gem-weight 0 --dataset ml-1m --out runs/dimerec-nogem-ml1m
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn as nn

from dimerec import sphere
from dimerec.diffusion import (NoiseMagnitude, NoiseSchedule, ReverseKind, ScheduleKind, SphereDiffusion, Trajectory,
                               classifier_free, cpu_randn_shape, drop_guidance, sample_trajectory, timestep_embedding)
from dimerec.errors import DimeRecError
from dimerec.models.base import Batch, Recommender, SoftmaxLossConfig, draw_negatives, option, softmax_loss
from dimerec.models.comirec_dr import RoutingInterests
from dimerec.models.comirec_sa import SelfAttentiveInterests, select_interest
from dimerec.models.sasrec import CausalEncoder, SASRecConfig

GemKind = Literal["comirec-sa", "rule", "comirec-dr", "sasrec", "mlp"]
GEM_KINDS = typing.get_args(GemKind)
DenoiserKind = Literal["mlp", "cross-attention"]
ReverseSigmaKind = Literal["beta-tilde", "sqrt-beta-tilde", "none"]  # the diffusion's, less DiffuRec's sqrt-beta
Preset = Literal["ours", "paper"]

# What each preset decides (SPEC §1 open points); an explicit flag overrides it. The control takes the keys it has.
PRESETS = {
    "paper": dict(schedule="linear", magnitude="paper", reverse="ddpm", reverse_sigma="beta-tilde",
                  ssm_direction=False, detach_x0=False),
    "ours": dict(schedule="cosine", magnitude="angle", reverse="ddim", reverse_sigma="none",
                 ssm_direction=True, detach_x0=True),
}
@dataclass
class GemConfig(SoftmaxLossConfig):
    """What DimeRec and its no-diffusion control share: the GEM and L_gem, L_ssm's read-out and its weight μ."""
    preset: Preset = option("ours", "ours: the decided variant (docs/design.md); paper: as written")
    dim: int = option(64, "embedding size d (the paper's)", at_least=1)
    n_interests: int = option(4, "K guidance vectors (the paper's)", at_least=1)
    gem: GemKind = option(
        "comirec-sa", "guidance extractor (Table 3): comirec-sa = ComiRec-SA (Eq. 16-17); rule = the last K items "
                      "(Eq. 15); comirec-dr = ComiRec-DR's dynamic routing (3 iterations); sasrec = SASRec's causal "
                      "encoder, its last position one interest repeated K times (the denoiser still reads K·d); "
                      "mlp = an MLP over the mean history embedding giving K interests")
    gem_weight: float = option(1.0, "weight of L_gem in Eq. 23; 0 removes it (Table 4 'w/o L_gem')", at_least=0)
    ssm_direction: bool | None = option(
        None, "L_ssm logits s·<x̂0/|x̂0|, e_i> with a learned scale s: L_ssm shapes x̂0's direction, L_recon alone "
              "its length (default: by preset; paper: <x̂0, e_i>)")
    mu_ssm: float | None = option(None, "μ of L_ssm (default: 1; the paper preset takes 10 on MovieLens, Table 8)",
                                  at_least=0)
    hidden: int = option(256, "hidden width of the denoiser MLP (the control's MLP over the K interests)",
                         at_least=1)

    def __post_init__(self):
        super().__post_init__()
        own = {f.name for f in fields(self)}
        for key, value in PRESETS[self.preset].items():
            if key in own and getattr(self, key) is None:
                setattr(self, key, value)

    def mu_for(self, dataset: str | None) -> float:
        """μ of L_ssm: --mu-ssm, else 1, except Table 8's 10 for the paper preset on MovieLens (`dataset` ml-*;
        None: no data read yet). The one place that writes μ's default."""
        if self.mu_ssm is not None:
            return self.mu_ssm
        return 10.0 if self.preset == "paper" and (dataset or "").startswith("ml-") else 1.0


@dataclass
class DimeRecConfig(GemConfig):
    T: int = option(20, "diffusion steps (Table 5: 20)", at_least=1)
    schedule: ScheduleKind | None = option(None, "β schedule (default: by preset)")
    magnitude: NoiseMagnitude | None = option(
        None, "forward noise size: paper = sqrt(1-ᾱ_t)·ε_tan radians (wraps past π); angle = "
              "arctan of the same size, never past π/2 (default: by preset)")
    reverse: ReverseKind | None = option(
        None, "reverse step: ddpm = Eq. 8-9 then L2-normalise; ddim = DDIM on the angle process (default: by preset)")
    reverse_sigma: ReverseSigmaKind | None = option(
        None, "reverse noise of the ddpm step: β̃_t·ε (Alg. 2 as written), sqrt(β̃_t)·ε (DDPM) or none "
              "(default: by preset)")
    noise_scale: float = option(1.0, "multiplies the forward noise (and the reverse angles)", above=0)
    eta: float = option(0.0, "fresh noise in the ddim reverse step (0: deterministic after x_T)",
                        at_least=0)
    grw: bool = option(True, "geodesic random walk; --no-grw uses Euclidean noise (Eq. 4), the ablation")
    lambda_recon: float = option(0.1, "λ of L_recon (Table 7: 0.1)", at_least=0)
    detach_x0: bool | None = option(
        None, "stop L_recon's gradient into the target embedding, x0 a fixed target (default: by preset)")
    # issue 16's levers, each off by default (the committed runs are these defaults)
    denoiser: DenoiserKind = option(
        "mlp", "mlp: Eq. 20's MLP over [g_1..g_K, x_t, t] (flat concatenation); cross-attention: x_t and t "
               "attend over the K interests, then an MLP (a denoiser that must read each interest)")
    p_uncond: float = option(0.0, "classifier-free guidance, training: the denoiser sees a learned null guidance "
                                  "instead of the GEM's with this probability (0: no null is learned; serving "
                                  "guides with --guidance-weight)",
                            at_least=0, below=1)
    def __post_init__(self):
        explicit_reverse = self.reverse
        super().__post_init__()
        if not self.grw:  # Euclidean noise (Eq. 4) has only the DDPM posterior step (Eq. 8-9)
            if explicit_reverse not in (None, "ddpm"):
                raise DimeRecError(f"--no-grw takes the ddpm reverse step (Eq. 8-9); --reverse {explicit_reverse} "
                                   f"needs the geodesic forward process: drop one of the two flags")
            self.reverse = "ddpm"
        if self.grw and self.magnitude == "paper" and self.reverse == "ddim":
            raise DimeRecError("--magnitude paper (noise that wraps past π) with --reverse ddim (DDIM on the angle "
                               "process, which assumes --magnitude angle): choose --magnitude angle or --reverse ddpm")


@dataclass
class DimeRecNoDiffConfig(GemConfig):
    pass


class CausalEncoderInterest(CausalEncoder):
    """Table 3's SASRec GEM: SASRec's encoder over the shared item table; its last position is ONE
    interest, which DimeRec repeats K times so the denoiser's input stays K·d."""

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return super().forward(h, mask)[:, -1]


class MeanMLPInterests(nn.Module):
    """Table 3's MLP GEM: the mean of the history's item embeddings (pads excluded) -> an MLP -> K interests."""

    def __init__(self, dim: int, n_interests: int, hidden: int):
        super().__init__()
        self.n_interests = n_interests
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, n_interests * dim))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h [B, L, d], mask [B, L] -> interests [B, K, d]; an empty history has mean 0."""
        weight = mask[..., None].to(h.dtype)
        mean = (h * weight).sum(1) / weight.sum(1).clamp(min=1.0)
        return self.net(mean).view(h.shape[0], self.n_interests, h.shape[-1])


def build_extractor(config: GemConfig, max_len: int) -> nn.Module | None:
    """The GEM's parameters for `config.gem` (None for the rule-based Eq. 15)."""
    c = config
    if c.gem == "comirec-sa":
        return SelfAttentiveInterests(c.dim, c.n_interests, max_len)
    if c.gem == "comirec-dr":
        return RoutingInterests(c.dim, c.n_interests, max_len)
    if c.gem == "sasrec":  # SASRec's own defaults for depth, heads and dropout
        s = SASRecConfig(dim=c.dim)
        return CausalEncoderInterest(c.dim, max_len, s.n_layers, s.n_heads, s.dropout)
    if c.gem == "mlp":
        return MeanMLPInterests(c.dim, c.n_interests, 4 * c.dim)
    return None  # rule (the config has checked the choice)


def build_diffusion(config: DimeRecConfig) -> SphereDiffusion:
    """The SphereDiffusion (schedule, forward noise, reverse step) a DimeRec with this config uses,
    without building a model."""
    c = config
    return SphereDiffusion(
        NoiseSchedule(c.T, c.schedule), c.dim, forward="geodesic" if c.grw else "euclidean", magnitude=c.magnitude,
        reverse=c.reverse, reverse_sigma=c.reverse_sigma, noise_scale=c.noise_scale, eta=c.eta)


class DenoiserCrossAttention(nn.Module):
    """Issue 16, hypothesis 4: a denoiser that must read each interest. The query [x_t, t] attends over the K
    interests (one head, scaled dot product); the MLP then reads [x_t, t, the attended interest]:
        a = softmax_k(<W_q [x_t; e_t], W_k g_k> / sqrt(d)),  x̂0 = MLP([x_t; e_t; Σ_k a_k W_v g_k])."""

    def __init__(self, dim: int, n_interests: int, hidden: int):
        super().__init__()
        self.dim = dim
        self.time = nn.Sequential(nn.Linear(dim, dim), nn.SiLU())
        self.query, self.key, self.value = nn.Linear(2 * dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.net = nn.Sequential(nn.Linear(3 * dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, dim))

    def forward(self, guidance: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """guidance [..., K, d], x_t [..., d], t [...] -> [..., d]."""
        state = torch.cat([x_t, self.time(timestep_embedding(t, self.dim))], dim=-1)  # [..., 2d]
        q = self.query(state)[..., None, :]  # [..., 1, d]
        weights = torch.softmax((q * self.key(guidance)).sum(-1) / self.dim ** 0.5, dim=-1)  # [..., K]
        context = (weights[..., None] * self.value(guidance)).sum(-2)  # [..., d]
        return self.net(torch.cat([state, context], dim=-1))


class DenoiserMLP(nn.Module):
    """Eq. 20: x̂0 = MLP(x_t, t, g). The K guidance vectors are concatenated (ComiRec's interests
    keep their slot from user to user); t is a sinusoidal embedding through a linear layer.
    With use_xt=False it is the no-diffusion control's aggregator: MLP(g)."""

    def __init__(self, dim: int, n_interests: int, hidden: int, use_xt: bool = True):
        super().__init__()
        self.dim, self.use_xt = dim, use_xt
        in_dim = n_interests * dim + (2 * dim if use_xt else 0)
        self.time = nn.Sequential(nn.Linear(dim, dim), nn.SiLU()) if use_xt else None
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, dim))

    def forward(self, guidance: torch.Tensor, x_t: torch.Tensor | None = None,
                t: torch.Tensor | None = None) -> torch.Tensor:
        """guidance [..., K, d], x_t [..., d], t [...] -> [..., d]."""
        parts = [guidance.flatten(-2)]
        if self.use_xt:
            parts += [x_t, self.time(timestep_embedding(t, self.dim))]
        return self.net(torch.cat(parts, dim=-1))


class GemModel(Recommender):
    """What DimeRec and its control share: the item table, the GEM with L_gem, and L_ssm's read-out weighted by μ.
    A subclass adds its head (`build_head`): DimeRec's denoiser, the control's MLP over the K interests."""

    def __init__(self, n_items: int, max_len: int, config: GemConfig):
        super().__init__(n_items, max_len, config)
        c = config
        self.item_emb = nn.Embedding(n_items + 1, c.dim, padding_idx=n_items)
        nn.init.normal_(self.item_emb.weight[:n_items], std=0.02)
        self.extractor = build_extractor(c, max_len)
        self.build_head(c)  # between the GEM and the scale: the parameter order checkpoints and Adam's state keep
        self.log_ssm_scale = nn.Parameter(torch.zeros(()), requires_grad=bool(c.ssm_direction))

    def build_head(self, config: GemConfig) -> None:
        raise NotImplementedError

    def fit_statistics(self, data, train_users) -> None:
        self.config.mu_ssm = self.config.mu_for(data.name)  # resolved once the data is known, saved in config.json

    @property
    def mu(self) -> float:
        return self.config.mu_for(None)

    def ssm_user(self, x0_hat: torch.Tensor) -> torch.Tensor:
        """The user vector L_ssm scores (open point 4)."""
        if self.config.ssm_direction:
            return self.log_ssm_scale.exp() * sphere.normalize(x0_hat)
        return x0_hat

    def item_vectors(self) -> torch.Tensor:
        return self.item_emb.weight[:self.n_items]

    @property
    def has_attention(self) -> bool:  # only ComiRec-SA's GEM attends over the history's positions
        return self.config.gem == "comirec-sa"

    def interests(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The contract's interests: the GEM's guidance [B, K, d] and its attention [B, L, K] (ComiRec-SA)."""
        return self.guidance(hist)

    def guidance(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """GEM: [B, L] -> guidance [B, K, d] and, for ComiRec-SA, its attention [B, L, K].
        The sasrec GEM's one interest is repeated K times (the denoiser's input stays K·d)."""
        gem, K, mask = self.config.gem, self.config.n_interests, hist != self.pad_id
        if gem == "rule":  # Eq. 15: the last K items (left padding puts them last)
            return self.item_emb(hist[:, -K:]), None
        if gem == "comirec-sa":
            return self.extractor.from_table(self.item_emb.weight, hist, mask)
        h = self.item_emb(hist)
        if gem == "comirec-dr":  # routing weights are a softmax over interests, not positions: not shown
            return self.extractor(h, mask)[0], None
        if gem == "sasrec":
            return self.extractor(h, mask)[:, None].expand(-1, K, -1), None
        return self.extractor(h, mask), None  # mlp

    takes_windows = True

    def batch_guidance(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The guidance of each target of a training batch and the targets: ([B, K, d], [B]) for prefixes, or
        for a windows batch ([N, K, d], [N]), each target's K interests read from its own history (the row's
        items up to its column): ComiRec-SA's logits and ComiRec-DR's capsules are computed once per window
        column, the SASRec GEM is causal, the rule and MLP GEMs read the items up to the column."""
        if not batch.windowed:
            return self.guidance(batch.hist)[0], batch.target
        gem, K = self.config.gem, self.config.n_interests
        row, column, target = batch.window_targets()
        if gem == "comirec-sa":
            return self.extractor.window_forward(self.item_emb.weight, batch)[0], target
        if gem == "rule":  # Eq. 15: the K items up to the column (pads before a history's first item)
            columns = column[:, None] - torch.arange(K - 1, -1, -1, device=column.device)  # [N, K]
            items = batch.hist[row[:, None], columns.clamp(min=0)].masked_fill(columns < 0, self.pad_id)
            return self.item_emb(items), target
        h = self.item_emb(batch.hist)
        if gem == "comirec-dr":
            return self.extractor.window_forward(h, batch)[0], target
        if gem == "sasrec":
            out = CausalEncoder.forward(self.extractor, h, batch.mask)[row, column]  # [N, d]: every column at once
            return out[:, None].expand(-1, K, -1), target
        return self.extractor(h[row], batch.column_mask()), target  # mlp: the mean of the items up to the column

    def shared_negatives(self, target: torch.Tensor) -> torch.Tensor | None:
        """The negatives L_gem and L_ssm share ([B, n] or [n·B]); None under --loss-kind ce, which draws none."""
        c = self.config
        return None if c.loss_kind == "ce" else draw_negatives(target, self.n_items, c.n_negatives, c.negative_sampler)

    def item_loss(self, user: torch.Tensor, table: torch.Tensor, target: torch.Tensor,
                  negatives: torch.Tensor | None) -> torch.Tensor:
        """The softmax over items of Eq. 19 and Eq. 22 (--loss-kind): against the shared sampled negatives (the
        paper's), or against every item (ce). user [B, d]; table [n_items, d]; target [B]."""
        return softmax_loss(user, table, target, self.config, self.config.loss_kind, negatives)

    def gem_loss(self, guidance: torch.Tensor, table: torch.Tensor, target: torch.Tensor,
                 negatives: torch.Tensor | None) -> torch.Tensor:
        """L_gem (Eq. 18-19): the interest nearest the target (selected without gradient) scored by the softmax."""
        return self.item_loss(select_interest(guidance, table[target].detach()), table, target, negatives)

    def weighted_gem(self, l_gem: torch.Tensor) -> torch.Tensor | float:
        """gem_weight · L_gem for the total; with weight 0 the term (and its gradient) is left out entirely."""
        return self.config.gem_weight * l_gem if self.config.gem_weight else 0.0


class DimeRec(GemModel):
    name = "dimerec"
    Config = DimeRecConfig
    denoises = True
    chain_space = "sphere"
    serving_levers = ("serve_samples", "serve", "serve_merge", "merge_scale", "guidance_weight", "serve_start",
                      "serve_guess")  # every dimerec.serving.ServeConfig field

    def __init__(self, n_items: int, max_len: int, config: DimeRecConfig):
        super().__init__(n_items, max_len, config)
        self.diffusion = build_diffusion(config)

    def build_head(self, config: DimeRecConfig) -> None:
        c = config
        if c.denoiser == "cross-attention":
            self.denoiser = DenoiserCrossAttention(c.dim, c.n_interests, c.hidden)
        else:
            self.denoiser = DenoiserMLP(c.dim, c.n_interests, c.hidden)
        if c.p_uncond > 0:  # classifier-free guidance: the learned "no guidance" the denoiser is trained with
            self.null_guidance = nn.Parameter(torch.zeros(c.n_interests, c.dim))

    def predict_x0(self, guidance: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Eq. 20: x̂0 = f_θ(x_t, t, g), unnormalised (its length is L_recon's, its direction L_ssm's)."""
        return self.denoiser(guidance, x_t, t)

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        c, table = self.config, self.item_vectors()
        guidance, target = self.batch_guidance(batch)  # [B or N, K, d]; a window's targets each their own row
        target_emb = table[target]
        negatives = self.shared_negatives(target)
        l_gem = self.gem_loss(guidance, table, target, negatives)
        x0 = self.diffusion.prepare_x0(target_emb.detach() if c.detach_x0 else target_emb)  # Alg. 1 line 5
        t = torch.randint(1, c.T + 1, (len(target),)).to(target.device)  # Alg. 1 line 4
        x_t = self.diffusion.q_sample(x0, t)  # Alg. 1 lines 6-8
        x0_hat = self.predict_x0(self.drop_guidance(guidance), x_t, t)  # Eq. 20
        l_recon = ((x0 - x0_hat) ** 2).sum(-1).mean()  # Eq. 21
        l_ssm = self.item_loss(self.ssm_user(x0_hat), table, target, negatives)  # Eq. 22
        total = self.weighted_gem(l_gem) + c.lambda_recon * l_recon + self.mu * l_ssm  # Eq. 23
        return {"loss": total, "L_gem": l_gem, "L_recon": l_recon, "L_ssm": l_ssm}

    def drop_guidance(self, guidance: torch.Tensor) -> torch.Tensor:
        """Classifier-free guidance training: guidance [B, K, d], each row the learned null with probability
        p_uncond (diffusion.drop_guidance; nothing drawn at p_uncond = 0, so such runs repeat the committed ones)."""
        if not self.config.p_uncond:
            return guidance
        return drop_guidance(guidance, self.null_guidance, self.config.p_uncond)

    @property
    def guidable(self) -> bool:  # a null guidance was learned (--p-uncond > 0)
        return self.config.p_uncond > 0

    def logit_scale(self) -> float:
        """L_ssm's scale s (learned with --ssm-direction, else 1): each sample's softmax is the one L_ssm trained."""
        return float(self.log_ssm_scale.detach().exp()) if self.config.ssm_direction else 1.0

    def denoiser_for(self, guidance: torch.Tensor, guidance_weight: float = 0.0):
        """The denoiser with the users' guidance fixed: (x_t [B, S, d], t [B, S]) -> x̂0 [B, S, d]; with a
        guidance weight w, classifier-free guidance (diffusion.classifier_free)."""
        w = guidance_weight

        def denoise(x_t, t):
            g = guidance[:, None].expand(-1, x_t.shape[1], -1, -1)  # [B, S, K, d]
            if not w:
                return self.predict_x0(g, x_t, t)
            return classifier_free(self.predict_x0(g, x_t, t),
                                   self.predict_x0(self.null_guidance.expand_as(g), x_t, t), w)
        return denoise

    @torch.no_grad()
    def trajectory(self, hist: torch.Tensor, n_samples: int | None = None, generator: torch.Generator | None = None,
                   *, guidance_weight: float = 0.0, start: int | None = None, guess: str = "mean") -> Trajectory:
        """The whole reverse run (Alg. 2) for a batch of histories: x_t and x̂0 at every step; with a start step
        t* < T (--serve-start), the partial chain t*, ..., 1 from the model's `guess` noised to t*."""
        guidance, _ = self.guidance(hist)
        B, S = hist.shape[0], n_samples or 1
        denoise = self.denoiser_for(guidance, guidance_weight)
        x_start = None
        if start is not None and start < self.config.T:
            x_start = self.diffusion.q_sample(self.chain_guess(guidance, denoise, S, generator, guess),
                                              torch.full((B, S), start, dtype=torch.long, device=hist.device),
                                              cpu_randn_shape((B, S, self.config.dim), generator, hist.device))
        return sample_trajectory(self.diffusion, denoise, B, S, generator, x_T=x_start, device=hist.device,
                                 start=start if x_start is not None else None)

    def chain_guess(self, guidance: torch.Tensor, denoise, n_samples: int, generator: torch.Generator | None,
                    guess: str) -> torch.Tensor:
        """Where a partial chain starts before noising, [B, S, d] on the sphere: `guess` mean, the first step's x̂0
        from a uniform x_T (the model's own E[x0 | g]); interests, sample s at interest s mod K."""
        if guess == "interests":
            return sphere.normalize(guidance[:, torch.arange(n_samples) % guidance.shape[1]])
        return self.first_step_guess(guidance, denoise, n_samples, generator)

    def first_step_guess(self, guidance: torch.Tensor, denoise, n_samples: int,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """The first reverse step's x̂0 from uniform starts x_T, on the sphere: [B, S, d]. x_T carries no
        information, so this is the denoiser's estimate of E[x0 | g] (--serve mean, --serve-guess mean)."""
        x_T = self.diffusion.prior_sample((guidance.shape[0], n_samples), generator, guidance.device)
        t = torch.full((guidance.shape[0], n_samples), self.config.T, dtype=torch.long, device=guidance.device)
        return sphere.normalize(denoise(x_T, t))

    def one_step_mean(self, hist: torch.Tensor, n_samples: int, guidance_weight: float = 0.0) -> torch.Tensor:
        """--serve mean: the first step's x̂0 averaged over `n_samples` uniform starts, [B, 1, d]."""
        guidance, _ = self.guidance(hist)
        guess = self.first_step_guess(guidance, self.denoiser_for(guidance, guidance_weight), n_samples)
        return guess.mean(1, keepdim=True)

    def user_vectors(self, hist: torch.Tensor) -> torch.Tensor:
        """The contract's default serving, one chain's end x_0 [B, 1, d] (dimerec.serving serves it otherwise)."""
        return self.trajectory(hist).final


class DimeRecNoDiff(GemModel):
    """The control: the same GEM and L_gem + μ L_ssm, with an MLP over the K interests in place of the DAM; it
    builds no diffusion and takes none of its flags."""

    name = "dimerec-nodiff"
    Config = DimeRecNoDiffConfig

    def build_head(self, config: DimeRecNoDiffConfig) -> None:
        # named `denoiser`: the key its checkpoints were saved under while the control subclassed DimeRec
        self.denoiser = DenoiserMLP(config.dim, config.n_interests, config.hidden, use_xt=False)

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        table = self.item_vectors()
        guidance, target = self.batch_guidance(batch)
        negatives = self.shared_negatives(target)
        l_gem = self.gem_loss(guidance, table, target, negatives)
        l_ssm = self.item_loss(self.ssm_user(self.denoiser(guidance)), table, target, negatives)
        return {"loss": self.weighted_gem(l_gem) + self.mu * l_ssm, "L_gem": l_gem, "L_ssm": l_ssm}

    def user_vectors(self, hist: torch.Tensor) -> torch.Tensor:
        return self.denoiser(self.guidance(hist)[0])[:, None]  # [B, 1, d]
