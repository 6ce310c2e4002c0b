"""The two diffusion baselines, DreamRec and DiffuRec: contract, forward noise, guidance,
seeded sampling, and a short training on the planted world that must beat MostPopular."""
import math

import pytest
import torch

from dimerec.data.planted import make_planted
from dimerec.diffusion import NoiseSchedule
from dimerec.errors import DimeRecError
from dimerec.models.base import Batch
from dimerec.models.diffurec import DiffuRec
from dimerec.models.diffurec import make_schedule as diffurec_schedule
from dimerec.models.dreamrec import DreamRec, DreamRecConfig
from dimerec.models.pop import MostPopular, PopConfig
from dimerec.trainer import TrainConfig, train

N_ITEMS, MAX_LEN, B = 50, 8, 6
TINY = {DreamRec: dict(dim=8, T=50), DiffuRec: dict(dim=8, T=32, n_blocks=1, n_heads=2)}  # no β clamping at these T


def tiny(cls, **overrides):
    torch.manual_seed(0)
    return cls(N_ITEMS, MAX_LEN, cls.Config(**{**TINY[cls], **overrides}))


def histories() -> torch.Tensor:
    """Left-padded [B, L] histories of lengths 1..B (pad id = N_ITEMS)."""
    hist = torch.full((B, MAX_LEN), N_ITEMS)
    for row in range(B):
        n = row + 1
        hist[row, MAX_LEN - n:] = torch.randint(0, N_ITEMS, (n,), generator=torch.Generator().manual_seed(row))
    return hist


@pytest.fixture(params=[DreamRec, DiffuRec], ids=["dreamrec", "diffurec"])
def model(request):
    return tiny(request.param)


def test_shapes_and_finite_loss(model):
    hist = histories()
    model.eval()
    users = model.user_vectors(hist)
    assert users.shape == (B, 1, 8) and torch.isfinite(users).all()
    assert model.item_vectors().shape == (N_ITEMS, 8)
    model.train()
    terms = model.loss(Batch(hist, torch.arange(B), N_ITEMS))
    assert "loss" in terms and terms["loss"].dim() == 0 and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    assert model.item_emb.weight.grad is not None


def test_forward_noise_is_the_ddpm_marginal(model):
    """q_sample(x0, t, ε) = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε, ᾱ from the project's NoiseSchedule."""
    c = model.config
    schedule = (NoiseSchedule(c.T, "linear", 1e-4 * 1000 / c.T, 0.02 * 1000 / c.T) if isinstance(model, DreamRec)
                else NoiseSchedule(c.T, "linear", 1000 / c.T * 1e-4 + 0.01, 1000 / c.T * 0.02 + 0.01))
    x0, eps = torch.randn(4, 8), torch.randn(4, 8)
    t = torch.tensor([1, 2, c.T, c.T - 1])
    abar = torch.cumprod(1 - schedule.betas[1:], 0)[t - 1].float()[:, None]
    expected = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    torch.testing.assert_close(model.q_sample(x0, t, eps), expected)
    assert model.q_sample(x0, t).ne(expected).any()  # without ε it draws fresh noise


def test_diffurec_truncated_linear_schedule_matches_the_official_formula():
    T = 32
    betas = diffurec_schedule(T, "trunc-lin").betas[1:]
    scale = 1000 / T
    torch.testing.assert_close(betas, torch.linspace(scale * 1e-4 + 0.01, scale * 0.02 + 0.01, T, dtype=torch.float64))
    assert diffurec_schedule(T, "trunc-lin").alphas_cumprod[-1] < 1e-5  # x_T is noise
    assert diffurec_schedule(T, "linear").betas[1] == pytest.approx(scale * 1e-4)


def test_dreamrec_schedule_reaches_noise_at_any_T():
    for T in (20, 200, 1000):
        s = DreamRec(N_ITEMS, MAX_LEN, DreamRecConfig(dim=8, T=T)).schedule
        assert s.alphas_cumprod[-1] < 1e-4
    raw = DreamRec(N_ITEMS, MAX_LEN, DreamRecConfig(dim=8, T=200, scale_betas=False)).schedule
    torch.testing.assert_close(raw.betas[1:], torch.linspace(1e-4, 0.02, 200, dtype=torch.float64))


def test_classifier_free_guidance():
    m = tiny(DreamRec).eval()
    with torch.no_grad():
        c = m.guidance(histories())
        x_t, t = torch.randn(B, 8), torch.full((B,), 3)
        conditional = m.predict_x0(x_t, t, c)
        unconditional = m.predict_x0(x_t, t, m.null.expand_as(c))
        torch.testing.assert_close(m.guided_x0(x_t, t, c, w=0.0), conditional)
        torch.testing.assert_close(m.guided_x0(x_t, t, c, w=2.0), 3 * conditional - 2 * unconditional)
    assert not torch.allclose(conditional, unconditional)


def test_dreamrec_drops_guidance_with_p_uncond():
    """p_uncond = 1 - ε trains on the null vector only: the encoder gets no gradient."""
    m = tiny(DreamRec, p_uncond=0.999999, dropout=0.0)
    m.loss(Batch(histories(), torch.arange(B), N_ITEMS))["loss"].backward()
    assert m.null.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.encoder.parameters())


def test_sampling_is_seeded_by_the_global_rng(model):
    model.eval()
    hist = histories()
    torch.manual_seed(5)
    a = model.user_vectors(hist)
    torch.manual_seed(5)
    b = model.user_vectors(hist)
    torch.manual_seed(6)
    c = model.user_vectors(hist)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_dreamrec_l2_retrieval_ranks_the_items_nearest_to_the_generated_x0():
    dot, l2 = tiny(DreamRec), tiny(DreamRec, retrieval="l2")
    l2.load_state_dict(dot.state_dict())  # the option changes serving only
    dot.eval(), l2.eval()
    hist = histories()
    torch.manual_seed(3)
    x0 = dot.user_vectors(hist)[:, 0]
    torch.manual_seed(3)
    scores = (l2.user_vectors(hist) @ l2.item_vectors().T)[:, 0]  # [B, n_items]
    distances = torch.cdist(x0, dot.item_vectors())
    assert (scores.argsort(dim=1, descending=True) == distances.argsort(dim=1)).all()
    dot_order = (x0 @ dot.item_vectors().T).argsort(dim=1, descending=True)
    assert not (scores.argsort(dim=1, descending=True) == dot_order).all()
    with pytest.raises(DimeRecError, match="--retrieval must be one of dot, l2; got 'cosine'"):
        DreamRecConfig(retrieval="cosine")


def test_diffurec_final_vector_is_the_last_x0_prediction():
    """At t = 1 the posterior mean is x̂0 itself and no noise is added."""
    m = tiny(DiffuRec, T=1, lambda_uncertainty=0.0).eval()
    hist = histories()
    with torch.no_grad():
        h, padding = m.encode(hist)
        expected = m.predict_x0(h, padding, torch.zeros(B, 8), torch.ones(B, dtype=torch.long))
        assert torch.allclose(m.sample(hist), expected, atol=1e-5)  # λ = 0: x_T does not reach the output


def test_diffurec_last_block_computes_the_last_row_exactly_as_the_whole_sequence_would():
    """Block(last_only=True) gives the full block's last row, in values and in gradients (padding included)."""
    m = tiny(DiffuRec, n_blocks=2).eval()
    hist = histories()
    h, padding = m.encode(hist)
    h = h.detach().requires_grad_()
    whole = m.blocks[1](m.blocks[0](h, padding), padding)[:, -1]
    (grad_whole,) = torch.autograd.grad(whole.square().sum(), h)
    last = m.blocks[1](m.blocks[0](h, padding), padding, last_only=True)
    assert last.shape == (B, 1, 8) and padding[:, :-1].any()  # some histories are padded
    (grad_last,) = torch.autograd.grad(last[:, 0].square().sum(), h)
    assert torch.allclose(last[:, 0], whole, atol=1e-5) and torch.allclose(grad_last, grad_whole, atol=1e-5)
    assert grad_whole[:, :-1].abs().sum() > 0  # the other positions reach x̂0 through the keys and values


# --- a short training on the planted world -------------------------------------------------------
# Settings found by hand to finish in ~20 s on one core. DreamRec needs d = 128 and lr 0.001 here:
# with the defaults (d = 64, lr 0.005) its MSE-only training collapses the item table before it
# beats popularity (see "Known behaviour" in dimerec/models/dreamrec.py).
PLANTED_RUNS = {
    "dreamrec": (DreamRec, dict(dim=128, T=20), dict(lr=0.001, batch_size=128, max_epochs=5)),
    "diffurec": (DiffuRec, dict(dim=32, n_blocks=1, n_heads=2), dict(lr=0.01, batch_size=128, max_epochs=4)),
}


@pytest.fixture(scope="module")
def planted():
    return make_planted(seed=0, n_users=1000)


@pytest.fixture(scope="module")
def popularity_hr(planted, tmp_path_factory):
    pop = MostPopular(planted.n_items, planted.max_len, PopConfig())
    return train(pop, planted, TrainConfig(), tmp_path_factory.mktemp("pop"), progress=False)["valid"]["HR@50"]


@pytest.mark.slow
@pytest.mark.parametrize("name", PLANTED_RUNS)
def test_short_training_beats_most_popular(name, planted, popularity_hr, tmp_path):
    cls, model_kw, train_kw = PLANTED_RUNS[name]
    torch.manual_seed(0)
    model = cls(planted.n_items, planted.max_len, cls.Config(**model_kw))
    cfg = TrainConfig(**train_kw, patience=train_kw["max_epochs"], valid_max_rows=1000)
    metrics = train(model, planted, cfg, tmp_path, progress=False)
    hr = metrics["valid"]["HR@50"]
    assert math.isfinite(hr)
    assert hr > popularity_hr + 0.02, f"{name} valid HR@50 {hr:.3f} vs MostPopular {popularity_hr:.3f}"
