"""Issue 16's levers on DimeRec's reverse chain, each behind its own flag: classifier-free guidance, samples
merged as a predictive distribution, a partial (SDEdit) chain, a cross-attention denoiser. Each test compares
against a hand-built equivalent, so a lever that silently did nothing (or changed the default) fails."""
import math

import pytest
import torch

from dimerec import sphere
from dimerec.diffusion import sample_trajectory
from dimerec.errors import DimeRecError
from dimerec.evaluate import evaluate
from dimerec.metrics import mixture_over_samples
from dimerec.models.base import Batch
from dimerec.models.dimerec import DenoiserCrossAttention, DimeRec, DimeRecConfig
from dimerec.serving import DEFAULT, ServeConfig, serving_of, trajectory

N_ITEMS, L, D = 40, 6, 16


def model_with(**settings) -> DimeRec:
    torch.manual_seed(0)
    model = DimeRec(N_ITEMS, L, DimeRecConfig(dim=D, T=6, hidden=32, **settings))
    with torch.no_grad():  # a non-zero null, so that guidance towards it is visible
        if model.config.p_uncond > 0:  # the model learns a null guidance (build_head)
            model.null_guidance.normal_()
    return model.eval()


def histories(b: int = 3) -> torch.Tensor:
    hist = torch.full((b, L), N_ITEMS)
    hist[:, -4:] = torch.arange(4 * b).view(b, 4) % N_ITEMS
    return hist


def chain(model: DimeRec, hist: torch.Tensor, seed: int = 0, n_samples: int = 2, serve: ServeConfig = DEFAULT):
    return trajectory(model, hist, serve, n_samples=n_samples, generator=torch.Generator().manual_seed(seed))


def test_cfg_with_weight_zero_is_the_unguided_model_and_otherwise_follows_the_formula():
    guided0 = model_with(p_uncond=0.2)
    plain = model_with()  # the same seed: the same weights, but no null learned
    plain.load_state_dict({k: v for k, v in guided0.state_dict().items() if k != "null_guidance"})
    hist = histories()
    torch.testing.assert_close(chain(guided0, hist).x_t, chain(plain, hist).x_t, rtol=0, atol=0)

    w = 2.0
    guided = guided0  # the same weights, served with weight w
    g, _ = guided.guidance(hist)
    x_t = sphere.random_points((3, 2), D, torch.Generator().manual_seed(1))
    t = torch.full((3, 2), 4)
    gs = g[:, None].expand(-1, 2, -1, -1)
    by_hand = (1 + w) * guided.predict_x0(gs, x_t, t) - w * guided.predict_x0(
        guided.null_guidance.expand_as(gs), x_t, t)
    torch.testing.assert_close(guided.denoiser_for(g, w)(x_t, t), by_hand)
    served = chain(guided, hist, serve=serving_of(guided, {"guidance_weight": w}))
    assert not torch.allclose(served.final, chain(guided0, hist).final)


def test_guidance_dropout_draws_nothing_when_off_and_drops_rows_when_on():
    plain, cfg = model_with(), model_with(p_uncond=0.5)
    g = torch.randn(400, 4, D)
    state = torch.get_rng_state()
    assert plain.drop_guidance(g) is g
    assert torch.equal(torch.get_rng_state(), state)  # the committed runs' random stream is untouched
    dropped = (cfg.drop_guidance(g) == cfg.null_guidance).all(dim=(1, 2))
    assert 150 < int(dropped.sum()) < 250  # about half of 400 rows
    batch = Batch(histories(4), torch.tensor([1, 2, 3, 4]), N_ITEMS)
    cfg.train()
    cfg.loss(batch)["loss"].backward()
    assert cfg.null_guidance.grad is not None and cfg.null_guidance.grad.abs().sum() > 0


def test_a_guidance_weight_without_a_learned_null_is_refused():
    with pytest.raises(DimeRecError, match="--guidance-weight 1.0 needs a null guidance"):
        serving_of(model_with(), {"guidance_weight": 1.0})
    assert serving_of(model_with(p_uncond=0.2), {"guidance_weight": 1.0}).guidance_weight == 1.0
    with pytest.raises(DimeRecError, match="--serve-merge must be one of max, mixture; got 'vote'"):
        ServeConfig(serve_merge="vote")
    with pytest.raises(DimeRecError, match=r"--serve-start must be at least 1; got 0"):
        ServeConfig(serve_start=0)
    with pytest.raises(DimeRecError, match=r"--serve-start must be at most --T \(6\); got 7"):
        serving_of(model_with(), {"serve_start": 7})
    with pytest.raises(DimeRecError, match="--serve mean serves one vector"):
        serving_of(model_with(), {"serve": "mean", "serve_merge": "mixture"})


def test_the_mixture_of_one_sample_ranks_as_that_sample():
    torch.manual_seed(0)
    users, items = torch.randn(5, 1, D), torch.randn(N_ITEMS, D)
    mixture = mixture_over_samples(users, items, scale=3.0)
    assert torch.equal(mixture.argsort(dim=1, descending=True), (users[:, 0] @ items.T).argsort(dim=1, descending=True))
    # two samples: the mixture is log((p_1 + p_2)), by hand
    two = torch.randn(1, 2, D)
    p = torch.softmax(3.0 * two[0] @ items.T, dim=-1)  # [2, n]
    torch.testing.assert_close(mixture_over_samples(two, items, 3.0)[0], torch.log(p.sum(0)))


def test_serving_with_the_mixture_of_one_sample_scores_as_max_merge(planted_small):
    from dimerec.trainer import build_model

    split = planted_small.split(0)
    metrics = {}
    model = build_model("dimerec", planted_small, seed=0)
    for merge in ("max", "mixture"):
        serve = ServeConfig(serve_merge=merge, serve_samples=1)
        metrics[merge] = evaluate(model, planted_small, split.valid, max_rows=300, seed=0, serve=serve)["final"]
    assert metrics["max"] == metrics["mixture"]
    serve = ServeConfig(serve_merge="mixture", serve_samples=4)
    four = evaluate(model, planted_small, split.valid, max_rows=300, seed=0, serve=serve)["final"]
    assert four != metrics["max"]


def test_a_partial_chain_from_step_T_and_uniform_noise_is_the_full_chain():
    model = model_with()
    g, _ = model.guidance(histories())
    denoise = model.denoiser_for(g)
    full = sample_trajectory(model.diffusion, denoise, 3, 2, torch.Generator().manual_seed(5))
    x_T = model.diffusion.prior_sample((3, 2), torch.Generator().manual_seed(5))
    partial = sample_trajectory(model.diffusion, denoise, 3, 2, torch.Generator().manual_seed(5), x_T=x_T,
                                start=model.config.T)
    assert partial.steps == full.steps
    torch.testing.assert_close(partial.x_t, full.x_t, rtol=0, atol=0)
    # --serve-start T is the default chain
    at_T = chain(model, histories(), serve=ServeConfig(serve_start=6))
    torch.testing.assert_close(at_T.x_t, chain(model, histories()).x_t, rtol=0, atol=0)


@pytest.mark.parametrize("guess", ["mean", "interests"])
def test_a_partial_chain_starts_at_its_guess_noised_to_t_star(guess):
    model = model_with()
    hist = histories()
    traj = chain(model, hist, n_samples=4, serve=ServeConfig(serve_start=2, serve_guess=guess))
    assert traj.steps == [2, 1] and traj.x_t.shape == (3, 3, 4, D)
    generator = torch.Generator().manual_seed(0)
    g, _ = model.guidance(hist)
    start_guess = model.chain_guess(g, model.denoiser_for(g), 4, generator, guess)
    angle = sphere.geodesic_distance(traj.x_t[0], start_guess)
    torch.testing.assert_close(angle, torch.full_like(angle, float(model.diffusion.angles[2])), atol=1e-4, rtol=0)
    if guess == "interests":  # sample s starts from interest s mod K
        torch.testing.assert_close(start_guess[:, 1], sphere.normalize(g[:, 1]))


def test_the_cross_attention_denoiser_reads_every_interest():
    torch.manual_seed(0)
    net = DenoiserCrossAttention(D, 4, 32)
    g, x_t, t = torch.randn(2, 4, D), sphere.random_points((2,), D), torch.tensor([3, 5])
    base = net(g, x_t, t)
    for k in range(4):
        moved = g.clone()
        moved[:, k] += 1.0
        assert (net(moved, x_t, t) - base).abs().amax() > 1e-4, k
    model = model_with(denoiser="cross-attention")
    assert isinstance(model.denoiser, DenoiserCrossAttention)
    terms = model.loss(Batch(histories(), torch.tensor([1, 2, 3]), N_ITEMS))
    assert all(math.isfinite(float(v.detach())) for v in terms.values())


def test_contradicting_diffusion_flags_are_refused_not_silently_fixed():
    with pytest.raises(DimeRecError, match="--no-grw takes the ddpm reverse step .* --reverse ddim"):
        DimeRecConfig(grw=False, reverse="ddim")
    with pytest.raises(DimeRecError, match="--magnitude paper .* with --reverse ddim"):
        DimeRecConfig(magnitude="paper", reverse="ddim")
    assert DimeRecConfig(grw=False).reverse == "ddpm"  # the preset's ddim gives way: it was not asked for
    assert DimeRecConfig(preset="paper", grw=False).reverse == "ddpm"
