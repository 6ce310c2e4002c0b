"""Serving: how a trained model turns histories into the user vectors retrieval ranks, and the rule it ranks them
by. The one owner of that concern: evaluation (and through it the trainer's validation and final metrics, the
CLI's `evaluate`, reproduce's served rows), the app and the notebooks all call `user_vectors` / `trajectory` with a
`ServeConfig`. A model's own Config holds only what training changes; how a run is served is a call argument
(as a diffusion pipeline keeps its guidance scale), recorded in the run's config.json under "serving".

The knobs apply to models that denoise (`Recommender.denoises`); every other model serves its `user_vectors` and
takes only the defaults (`check_serving` says so in one line).

    x_T ~ U(S^{d-1}) → T reverse steps (Alg. 2) → x_0          serve final (default): S chains' ends [B, S, d]
    x̂0 = f_θ(x_T, T, g), averaged over S uniform x_T             serve mean: E[x0 | g], one vector [B, 1, d]
    score(i) = max_s <x_s, e_i>                                  merge max (the contract's max over K)
    score(i) = log Σ_s softmax_i(scale · <x_s, e_i>)            merge mixture (metrics.mixture_over_samples)
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Literal

import torch

from dimerec.errors import DimeRecError
from dimerec.models.base import Recommender, Settings, option
from dimerec.retrieval import Retriever, TorchRetriever

ServeMode = Literal["final", "mean"]
ServeMerge = Literal["max", "mixture"]
ServeGuess = Literal["mean", "interests"]
SERVE_MERGES = typing.get_args(ServeMerge)


@dataclass
class ServeConfig(Settings):
    """How a run is served. Its fields are the `--serve*` flags of `train` and `evaluate`."""
    serve_samples: int = option(1, "reverse samples per user at serving, merged by --serve-merge", at_least=1)
    serve: ServeMode = option(
        "final", "final: the end x_0 of the reverse chain (Alg. 2); mean: the first reverse step's x̂0 averaged "
                 "over the samples, the denoiser's estimate of E[x0 | guidance] (DimeRec)")
    serve_merge: ServeMerge = option(
        "max", "how the S samples become one ranking: max = an item scores its best sample; mixture = "
               "log Σ_s softmax_i(scale·<x_s, e_i>), the samples as a predictive distribution (exact search only)")
    merge_scale: float | None = option(
        None, "the scale (inverse temperature) of --serve-merge mixture (default: the model's own softmax scale, "
              "DimeRec's learned L_ssm scale s with --ssm-direction, else 1)", above=0)
    guidance_weight: float | None = option(
        None, "classifier-free guidance weight w: x̂0 = (1 + w)·f(x_t, t, g) - w·f(x_t, t, null) (default: the "
              "model's own, DreamRec's official 2.0, DimeRec's 0; DimeRec needs a run trained with --p-uncond > 0)",
        at_least=0)
    serve_start: int | None = option(
        None, "partial chain (SDEdit): start the reverse chain at step t* < T from the model's own guess noised "
              "to t* (--serve-guess), instead of at T from uniform noise (default: T; DimeRec)", at_least=1)
    serve_guess: ServeGuess = option(
        "mean", "the guess a partial chain starts from: mean = the first step's x̂0 (E[x0 | g]); interests = "
                "sample s starts from interest s mod K (DimeRec)")

    def changed(self) -> dict:
        """The fields set away from their defaults, by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default}


SERVING_FIELDS = tuple(f.name for f in dataclasses.fields(ServeConfig))
DEFAULT = ServeConfig()


@dataclass(frozen=True)
class Ranking:
    """The rule an item's score follows from a user's vectors [K, d]: the best inner product ("max", the model
    contract's), or the mixture of the samples' softmaxes at `scale` ("mixture")."""
    merge: str = "max"
    scale: float = 1.0

    def retriever(self, retriever: Retriever | None = None) -> Retriever:
        """`retriever` (default: exact TorchRetriever) for max; a dense TorchRetriever for the mixture, which an
        index cannot search."""
        if self.merge == "max":
            return retriever or TorchRetriever()
        if retriever is not None and type(retriever) is not TorchRetriever:
            raise DimeRecError(f"--serve-merge {self.merge} ranks by dense scores: use --retriever torch, "
                               f"not {type(retriever).__name__}")
        return TorchRetriever(merge=self.merge, scale=self.scale)


def serving_of(model: Recommender, settings: dict | None = None) -> ServeConfig:
    """The ServeConfig of `settings` (a run's recorded "serving", with any changes) checked against `model`,
    its guidance weight resolved to the model's own when unset (so config.json records the weight served)."""
    serve = ServeConfig(**(settings or {}))
    check_serving(model, serve)
    if "guidance_weight" in model.serving_levers:
        serve = dataclasses.replace(serve, guidance_weight=guidance_weight(model, serve))
    return serve


def check_serving(model: Recommender, serve: ServeConfig) -> None:
    """A one-line DimeRecError when `model` cannot be served as `serve` says."""
    changed = serve.changed()
    flags = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in changed.items())
    if not model.denoises:
        if changed:
            raise DimeRecError(f"{flags}: {model.name} serves its user vectors as they are; the serving settings "
                               f"apply to models that denoise (dimerec, dreamrec)")
        return
    levers = model.serving_levers
    unsupported = [k for k in changed if k not in levers]
    if unsupported:
        raise DimeRecError(f"--{unsupported[0].replace('_', '-')} {changed[unsupported[0]]}: {model.name} takes "
                           f"only {', '.join('--' + k.replace('_', '-') for k in levers)} at serving")
    if serve.serve == "mean" and serve.serve_merge != "max":
        raise DimeRecError(f"--serve-merge {serve.serve_merge} merges the S chains' ends; --serve mean serves one "
                           f"vector: drop one of the two")
    if serve.merge_scale is not None and serve.serve_merge != "mixture":
        raise DimeRecError(f"--merge-scale {serve.merge_scale} is the scale of --serve-merge mixture; the max "
                           f"merge has none")
    if serve.serve_start is not None and serve.serve_start > model.diffusion.schedule.T:
        raise DimeRecError(f"--serve-start must be at most --T ({model.diffusion.schedule.T}); got "
                           f"{serve.serve_start}")
    if serve.guidance_weight and not model.guidable:
        raise DimeRecError(f"--guidance-weight {serve.guidance_weight} needs a null guidance: train with "
                           f"--p-uncond > 0 (this run has none)")


def guidance_weight(model: Recommender, serve: ServeConfig) -> float:
    """The weight w of classifier-free guidance served: the one asked for, else the model's own default."""
    return model.default_guidance_weight if serve.guidance_weight is None else serve.guidance_weight


def ranking(model: Recommender, serve: ServeConfig) -> Ranking:
    """The rule the served vectors rank by: max, or the mixture at --merge-scale (default the model's own softmax
    scale, `Recommender.logit_scale`)."""
    if serve.serve_merge == "max":
        return Ranking()
    return Ranking(serve.serve_merge, serve.merge_scale if serve.merge_scale is not None else model.logit_scale())


def trajectory(model: Recommender, hist: torch.Tensor, serve: ServeConfig = DEFAULT, *, n_samples: int | None = None,
               generator: torch.Generator | None = None):
    """The reverse run served as `serve` says (a diffusion.Trajectory, x_t [T+1, B, S, d], x̂0 [T, B, S, d]):
    S = `n_samples` (default --serve-samples) chains, at its guidance weight, from its start step and guess."""
    if not model.denoises:
        raise DimeRecError(f"{model.name} has no reverse diffusion process")
    levers = {}  # only what the model declares it takes (Recommender.serving_levers)
    if "guidance_weight" in model.serving_levers:
        levers.update(guidance_weight=guidance_weight(model, serve))
    if "serve_start" in model.serving_levers:
        levers.update(start=serve.serve_start, guess=serve.serve_guess)
    return model.trajectory(hist, n_samples or serve.serve_samples, generator, **levers)


def user_vectors(model: Recommender, hist: torch.Tensor, serve: ServeConfig = DEFAULT) -> torch.Tensor:
    """[B, L] histories -> the served user vectors [B, K, d]: a model that does not denoise, its own; one that
    does, the S chains' ends (serve final) or the one-step mean (serve mean, [B, 1, d]). Random draws come from
    the global RNG, which evaluation seeds (evaluate.serving)."""
    if not model.denoises:
        return model.user_vectors(hist)
    if serve.serve == "mean":
        return model.one_step_mean(hist, serve.serve_samples, guidance_weight=guidance_weight(model, serve))
    return model.chain_user_vectors(trajectory(model, hist, serve).final)  # [B, S, d]
