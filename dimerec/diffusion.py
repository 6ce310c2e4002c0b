"""DimeRec's diffusion: the noise schedule, the forward process and the reverse sampler.

Split the diffusers way: `NoiseSchedule` holds the numbers (no module state),
`SphereDiffusion` adds noise (`q_sample`) and takes one reverse step (`step`),
and `sample_trajectory` is the one reverse loop, used by evaluation, the app and
the notebooks alike. The denoiser (an nn.Module) lives in dimerec.models.dimerec.

Two consistent settings are offered (SPEC §1, open points 1-2):
- `paper`: the paper as written. Forward: geodesic random walk with tangent noise
  v = sqrt(1 - ᾱ_t) · ε_tan (‖ε_tan‖ ≈ sqrt(d-1), so x0 moves by up to ~7.9 rad in
  64-d and wraps around the sphere); reverse: Eq. 8-9's Euclidean posterior mean,
  plus β̃_t·ε′ as Alg. 2 writes it, then L2-normalised.
- `ours`: x_t lies at the angle θ_t = arctan( sqrt((d-1)(1-ᾱ_t)/ᾱ_t) ) from x0 along a
  uniformly random tangent direction: the angle that the Euclidean DDPM sample
  sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε_tan makes with x0, i.e. the paper's noise size
  mapped through arctan so that it never wraps past π/2. In d = 64 an angle of 1.2
  rad still identifies x0 among thousands of items (cos θ ≫ 1/sqrt(d)); this
  scale keeps x_t informative only as long as a DDPM's x_t would be. With the
  cosine schedule ᾱ_T = 0, so θ_T = π/2: exactly where a uniformly random start
  on the 64-d sphere lies (±0.13 rad). The reverse step is DDIM on this process
  (x_t = cos θ_t x0 + sin θ_t u, u a unit tangent).
Both also offer the Euclidean forward noise of Eq. 4 (the `--no-grw` ablation),
whose reverse step is Eq. 8-9 without normalisation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch

from dimerec import sphere
from dimerec.errors import check_choices

ScheduleKind = Literal["linear", "cosine"]
ForwardKind = Literal["geodesic", "euclidean"]
NoiseMagnitude = Literal["paper", "angle"]
ReverseKind = Literal["ddpm", "ddim"]
ReverseSigma = Literal["beta-tilde", "sqrt-beta-tilde", "sqrt-beta", "none"]


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer (or real) steps t [...] -> [..., dim]: [sin, cos] at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[..., None] * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal (2021); the last β is 1, so ᾱ_T = 0 exactly."""
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    return (1 - alphas_cumprod[1:] / alphas_cumprod[:-1]).clamp(0, 1)


class NoiseSchedule:
    """β_t, ᾱ_t and the posterior coefficients of Eq. 8-9, indexed by t = 0..T (entry 0 is "no noise")."""

    def __init__(self, T: int = 20, kind: ScheduleKind = "linear", beta_start: float = 1e-4, beta_end: float = 0.02):
        check_choices({"schedule": kind}, schedule=ScheduleKind)
        if T < 1:
            raise ValueError(f"T must be at least 1, got {T}")
        betas = linear_betas(T, beta_start, beta_end) if kind == "linear" else cosine_betas(T)
        self.T, self.kind = T, kind
        self.betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])
        self.alphas_cumprod = torch.cumprod(1 - self.betas, dim=0)  # Eq. 3: ᾱ_t = Π_{i≤t} (1 - β_i)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.alphas_cumprod_prev = prev
        denom = (1 - self.alphas_cumprod).clamp_min(1e-20)
        # Eq. 8: μ̃_t = coef_xt · x_t + coef_x0 · x̂0
        self.posterior_coef_xt = torch.sqrt(1 - self.betas) * (1 - prev) / denom
        self.posterior_coef_x0 = torch.sqrt(prev) * self.betas / denom
        # Eq. 9: β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)
        self.posterior_variance = self.betas * (1 - prev) / denom
        for name in ("posterior_coef_xt", "posterior_coef_x0", "posterior_variance"):
            getattr(self, name)[0] = 0.0

    def angles(self, dim: int, noise_scale: float = 1.0) -> torch.Tensor:
        """θ_t, t = 0..T: the angle between x0 and sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t)·noise_scale·ε_tan in R^dim,
        whose tangent Gaussian ε_tan has length ≈ sqrt(dim - 1)."""
        spread = noise_scale * torch.sqrt((dim - 1) * (1 - self.alphas_cumprod))
        return torch.atan2(spread, torch.sqrt(self.alphas_cumprod))

    def at(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Gather a per-step coefficient for integer steps t [B...] and shape it to broadcast over like's last dim."""
        return getattr(self, name).to(like.device, like.dtype)[t][..., None]


@dataclass
class StepOutput:
    prev_sample: torch.Tensor  # x_{t-1}
    pred_x0: torch.Tensor  # x̂0 as the step used it


@dataclass
class Trajectory:
    """A reverse run for B users and S samples each; index 0 is the first reverse step (t = T)."""
    steps: list[int]  # [T, T-1, ..., 1]
    x_t: torch.Tensor  # [T+1, B, S, d]: x_T, x_{T-1}, ..., x_0
    pred_x0: torch.Tensor  # [T, B, S, d]: x̂0 predicted at t = T, ..., 1

    @property
    def final(self) -> torch.Tensor:  # [B, S, d]
        return self.x_t[-1]


class SphereDiffusion:
    def __init__(self, schedule: NoiseSchedule, dim: int, *, forward: ForwardKind = "geodesic",
                 magnitude: NoiseMagnitude = "angle", reverse: ReverseKind = "ddim",
                 reverse_sigma: ReverseSigma = "none", noise_scale: float = 1.0, eta: float = 0.0):
        check_choices(dict(forward=forward, magnitude=magnitude, reverse=reverse, reverse_sigma=reverse_sigma),
                      forward=ForwardKind, magnitude=NoiseMagnitude, reverse=ReverseKind, reverse_sigma=ReverseSigma)
        if forward == "euclidean" and reverse != "ddpm":
            raise ValueError(f"the {reverse} reverse step needs the geodesic forward process; use reverse='ddpm'")
        self.schedule, self.forward, self.magnitude, self.reverse = schedule, forward, magnitude, reverse
        self.reverse_sigma, self.noise_scale, self.eta = reverse_sigma, noise_scale, eta
        self.dim = dim
        self.angles = schedule.angles(dim, noise_scale)  # [T+1], θ_0 = 0

    @property
    def T(self) -> int:
        return self.schedule.T

    def prepare_x0(self, target_embedding: torch.Tensor) -> torch.Tensor:
        """Alg. 1 line 5 normalises the target; Eq. 4 (no GRW) keeps it as it is."""
        return sphere.normalize(target_embedding) if self.forward == "geodesic" else target_embedding

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Forward noise at integer steps t [B] (1..T)."""
        noise = torch.randn_like(x0) if noise is None else noise
        if self.forward == "euclidean":  # Eq. 4
            abar = self.schedule.at("alphas_cumprod", t, x0)
            return abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        v = sphere.tangent(noise, x0)  # Alg. 1 line 6
        if self.magnitude == "paper":  # Alg. 1 line 7: v <- sqrt(1 - ᾱ_t) v
            v = (1 - self.schedule.at("alphas_cumprod", t, x0)).sqrt() * v
            v = self.noise_scale * v
        else:  # ours: a uniformly random direction at angle θ_t
            v = sphere.normalize(v) * self.angles.to(x0.device, x0.dtype)[t][..., None]
        return sphere.exp_map(x0, v)  # Alg. 1 line 8

    def prior_sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
        """x_T: a uniformly random point on the sphere (Alg. 2), or N(0, I) for the Euclidean variant.
        Drawn on the CPU (from `generator` or the global RNG) and moved to `device`, as all of the sampler's noise
        is: a run on a GPU samples the same noise as on the CPU."""
        if self.forward == "euclidean":
            return torch.randn(*shape, self.dim, generator=generator).to(device)
        return sphere.random_points(shape, self.dim, generator).to(device)

    def step(self, pred_x0: torch.Tensor, t: int, x_t: torch.Tensor,
             generator: torch.Generator | None = None) -> StepOutput:
        """One reverse step x_t -> x_{t-1} given the denoiser's x̂0 (Alg. 2 line 7)."""
        if self.reverse == "ddim":
            # x_t = cos θ_t x0 + sin θ_t u with u a unit tangent (the angle forward process), so DDIM's
            # deterministic update applies with (a, b) = (cos θ, sin θ): 1. the implied noise
            # û = (x_t - cos θ_t x̂0) / sin θ_t; 2. x_{t-1} = cos θ_{t-1} x̂0 + sin θ_{t-1} û; 3. back onto
            # the sphere. x̂0 stays unnormalised: its length below 1 carries the denoiser's uncertainty.
            theta_t, theta_prev = float(self.angles[t]), float(self.angles[t - 1])
            noise_hat = (x_t - math.cos(theta_t) * pred_x0) / max(math.sin(theta_t), 1e-6)
            if self.eta > 0:
                noise_hat = noise_hat + self.eta * cpu_randn(x_t, generator) / math.sqrt(x_t.shape[-1])
            return StepOutput(sphere.normalize(math.cos(theta_prev) * pred_x0 + math.sin(theta_prev) * noise_hat),
                              pred_x0)
        # 1. Eq. 8: the posterior mean; 2. Eq. 9: the posterior spread (none at the last step, as in DDPM;
        # sqrt-beta is DDPM's other choice, σ_t² = β_t); 3. project back onto the sphere.
        tt = torch.full(x_t.shape[:-1], t, dtype=torch.long, device=x_t.device)
        mean = (self.schedule.at("posterior_coef_xt", tt, x_t) * x_t
                + self.schedule.at("posterior_coef_x0", tt, x_t) * pred_x0)
        prev = mean
        if self.reverse_sigma != "none" and t > 1:
            variance = self.schedule.at("posterior_variance", tt, x_t)
            sigma = {"beta-tilde": variance, "sqrt-beta-tilde": variance.sqrt(),
                     "sqrt-beta": self.schedule.at("betas", tt, x_t).sqrt()}[self.reverse_sigma]
            prev = mean + sigma * cpu_randn(x_t, generator)
        return StepOutput(sphere.normalize(prev) if self.forward == "geodesic" else prev, pred_x0)


def cpu_randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, I) shaped like `like`, drawn on the CPU and moved to like's device (see prior_sample)."""
    return cpu_randn_shape(like.shape, generator, like.device)


def cpu_randn_shape(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """N(0, I) of `shape`, drawn on the CPU (from `generator` or the global RNG) and moved to `device`."""
    return torch.randn(shape, generator=generator).to(device)


Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t [B, S, d], t [B, S]) -> x̂0 [B, S, d]


@torch.no_grad()
def sample_trajectory(diffusion: SphereDiffusion, denoise: Denoiser, batch: int, n_samples: int,
                      generator: torch.Generator | None = None, x_T: torch.Tensor | None = None,
                      device: torch.device | str | None = None, start: int | None = None) -> Trajectory:
    """Alg. 2 for `batch` users × `n_samples` samples each, recording x_t and x̂0 at every step.

    `denoise` closes over the users' guidance (see DimeRec.denoiser_for); `device`: where x_T is put (the
    denoiser's), unless `x_T` is given. `start` (t*, default T) runs a partial chain t*, ..., 1 from `x_T`,
    which then is x_{t*} (SDEdit: a guess noised to t*, `SphereDiffusion.q_sample`).
    """
    start = diffusion.T if start is None else start
    if not 1 <= start <= diffusion.T:
        raise ValueError(f"the chain's start step must be in 1..{diffusion.T}, got {start}")
    if start != diffusion.T and x_T is None:
        raise ValueError("a partial chain needs its start point x_T (a guess noised to step start)")
    x = diffusion.prior_sample((batch, n_samples), generator, device) if x_T is None else x_T
    xs, preds = [x], []
    for t in range(start, 0, -1):
        pred = denoise(x, torch.full((batch, n_samples), t, dtype=torch.long, device=x.device))
        out = diffusion.step(pred, t, x, generator)
        x = out.prev_sample
        xs.append(x)
        preds.append(out.pred_x0)
    return Trajectory(steps=list(range(start, 0, -1)), x_t=torch.stack(xs), pred_x0=torch.stack(preds))


def drop_guidance(guidance: torch.Tensor, null: torch.Tensor, p_uncond: float) -> torch.Tensor:
    """Classifier-free guidance training (Ho & Salimans, 2022): each row of `guidance` [B, ...] replaced by the
    learned `null` (shaped like one row) with probability `p_uncond`; with p_uncond = 0 nothing is drawn, so the
    random stream is that of a model without guidance dropout."""
    if not p_uncond:
        return guidance
    drop = torch.rand(len(guidance), device=guidance.device) < p_uncond
    return torch.where(drop.view(-1, *[1] * (guidance.dim() - 1)), null.expand_as(guidance), guidance)


def classifier_free(x0_guided: torch.Tensor, x0_null: torch.Tensor, weight: float) -> torch.Tensor:
    """Classifier-free guidance at serving: x̂0 = (1 + w)·f(x_t, t, g) - w·f(x_t, t, null)."""
    return (1 + weight) * x0_guided - weight * x0_null
