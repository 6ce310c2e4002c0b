"""MIND, ComiRec-DR and Mult-VAE: the retrieval contract, routing invariants, Mult-VAE's exact
inner-product read-out, seeded determinism, and a short training that beats popularity on `planted`."""
import pytest
import torch

from dimerec.data.planted import make_planted
from dimerec.errors import DimeRecError
from dimerec.evaluate import evaluate
from dimerec.models.base import Batch
from dimerec.models.comirec_dr import ComiRecDR, RoutingInterests, dynamic_routing, squash
from dimerec.models.mind import MIND
from dimerec.models.multvae import MultVAE
from dimerec.models.pop import MostPopular
from dimerec.trainer import TrainConfig, train

N_ITEMS, L, B = 50, 12, 6


def histories(seed: int = 0) -> torch.Tensor:
    """[B, L] left-padded histories of lengths 1..L (one full), pad id N_ITEMS."""
    g = torch.Generator().manual_seed(seed)
    hist = torch.full((B, L), N_ITEMS)
    for row, n in enumerate([1, 3, 5, 8, 11, L]):
        hist[row, L - n:] = torch.randint(0, N_ITEMS, (n,), generator=g)
    return hist


def batch(seed: int = 0) -> Batch:
    return Batch(histories(seed), torch.arange(B) % N_ITEMS, N_ITEMS)


def build(cls, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    small = {MultVAE: dict(latent_dim=8, hidden_dim=16)}.get(cls, dict(dim=8))
    return cls(N_ITEMS, L, cls.Config(**{**small, **overrides}))


MODELS = [MIND, ComiRecDR, MultVAE]


@pytest.mark.parametrize("cls", MODELS)
def test_shapes_and_finite_loss(cls):
    model = build(cls)
    users, items = model.user_vectors(histories()), model.item_vectors()
    k = 1 if cls is MultVAE else 4
    assert users.shape[:2] == (B, k) and items.shape == (N_ITEMS, users.shape[2])
    terms = model.loss(batch())
    assert torch.isfinite(terms["loss"]) and terms["loss"].requires_grad
    terms["loss"].backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("cls", MODELS)
def test_seeded_determinism(cls):
    a, b = build(cls, seed=3), build(cls, seed=3)
    torch.manual_seed(7)
    la = a.loss(batch())["loss"]
    torch.manual_seed(7)
    assert torch.equal(la, b.loss(batch())["loss"])
    a.eval()
    assert torch.equal(a.user_vectors(histories()), a.user_vectors(histories()))  # eval is deterministic
    assert not torch.equal(build(cls, seed=4).item_vectors(), b.item_vectors())


def test_squash_norm_below_one_and_direction_kept():
    s = torch.randn(100, 8) * torch.logspace(-3, 2, 100)[:, None]
    v = squash(s)
    norms = v.norm(dim=-1)
    assert (norms < 1).all() and torch.allclose(norms, s.norm(dim=-1) ** 2 / (1 + s.norm(dim=-1) ** 2), rtol=1e-4)
    assert torch.allclose(torch.cosine_similarity(v, s, dim=-1), torch.ones(100), atol=1e-5)


@pytest.mark.parametrize("cls", [MIND, ComiRecDR])
def test_routing_masks_padding_and_capsules_are_squashed(cls):
    model = build(cls)
    hist = histories()
    caps, weights = model.capsules(hist) if cls is MIND else model.routing(hist)
    mask = hist != N_ITEMS
    assert weights.shape == (B, L, 4)
    assert (weights[~mask] == 0).all()
    assert torch.allclose(weights[mask].sum(-1), torch.ones(int(mask.sum())))  # softmax over interests
    assert (caps.norm(dim=-1) < 1).all()
    assert not weights.requires_grad and caps.requires_grad  # routing weights carry no gradient


@pytest.mark.parametrize("cls", [MIND, ComiRecDR])
def test_interests_do_not_depend_on_padding_length(cls):
    model = build(cls).eval()
    hist = histories()[:4, -8:]  # rows of length <= 8, so a shorter window holds them whole
    assert torch.allclose(model.user_vectors(hist), model.user_vectors(histories()[:4]), atol=1e-6)


def test_mind_shares_one_map_and_distinct_interests_come_from_random_logits():
    mind = build(MIND)
    assert mind.extractor.bilinear.weight.shape == (8, 8)  # one S for every interest
    caps, _ = mind.capsules(histories())
    assert (caps[:, 0] - caps[:, 1]).norm(dim=-1).min() > 1e-4  # random logits break the symmetry
    torch.manual_seed(0)
    first = mind.capsules(histories())[0]
    assert not torch.allclose(first, mind.capsules(histories())[0])  # redrawn per training forward
    soft = build(MIND, label_power=2).loss(batch())["loss"]
    assert torch.isfinite(soft)
    with pytest.raises(DimeRecError):
        MIND.Config(label_power=-1)


def test_comirec_dr_has_a_map_per_position_and_interest():
    extractor = RoutingInterests(dim=8, n_interests=4, max_len=L)
    assert extractor.maps.shape == (L, 4 * 8, 8)
    h, mask = torch.randn(B, L, 8), histories() != N_ITEMS
    interests, weights = extractor(h, mask)
    assert interests.shape == (B, 4, 8) and weights.shape == (B, L, 4)
    # zero initial logits and one shared map would make every interest equal; per-interest maps do not
    u_hat = torch.randn(B, 1, L, 8).expand(-1, 4, -1, -1)
    same, _ = dynamic_routing(u_hat, torch.zeros(B, 4, L), mask)
    assert torch.allclose(same[:, 0], same[:, 3])
    assert (interests[:, 0] - interests[:, 3]).norm(dim=-1).min() > 1e-4


def test_routing_a_shared_map_once_equals_routing_its_k_copies():
    """MIND passes û [B, L, d] once; routing it must equal routing the K expanded copies, values and gradients."""
    torch.manual_seed(1)
    u_hat = torch.randn(B, L, 8, requires_grad=True)
    logits, mask = torch.randn(B, 4, L), histories() != N_ITEMS
    shared, shared_w = dynamic_routing(u_hat, logits, mask)
    (grad_shared,) = torch.autograd.grad(shared.square().sum(), u_hat)
    copies, copies_w = dynamic_routing(u_hat[:, None].expand(-1, 4, -1, -1), logits, mask)
    (grad_copies,) = torch.autograd.grad(copies.square().sum(), u_hat)
    assert torch.allclose(shared, copies, atol=1e-6) and torch.equal(shared_w == 0, ~mask[..., None].expand(-1, -1, 4))
    assert torch.allclose(shared_w, copies_w, atol=1e-6) and torch.allclose(grad_shared, grad_copies, atol=1e-6)
    assert (shared[:, 0] - shared[:, 1]).norm(dim=-1).min() > 1e-4  # the random logits keep the interests apart


def test_multvae_inner_product_equals_decoder_logits():
    vae = build(MultVAE).eval()
    hist = histories()
    mu, _ = vae.encode(vae.multi_hot(hist))
    logits = vae.decoder[1](vae.decoder_hidden(mu))
    users = vae.user_vectors(hist)
    assert users.shape == (B, 1, 17)
    assert torch.allclose(users[:, 0] @ vae.item_vectors().T, logits, atol=1e-6, rtol=0)


def test_multvae_inputs_and_annealing():
    vae = build(MultVAE, anneal_cap=0.2, total_anneal_steps=10)
    x = vae.multi_hot(torch.tensor([[N_ITEMS, 3, 3, 7]]))
    assert x.shape == (1, N_ITEMS) and x.sum() == 2 and x[0, 3] == x[0, 7] == 1  # a set, pad dropped
    betas = [float(vae.loss(batch())["beta"]) for _ in range(6)]
    assert betas == pytest.approx([0.0, 0.1, 0.2, 0.2, 0.2, 0.2])  # β = min(cap, step / total), step from 0
    assert int(vae.anneal_step) == 6
    vae.eval()
    vae.loss(batch())
    assert int(vae.anneal_step) == 6  # only training steps count
    assert "anneal_step" in vae.state_dict()  # resumes where it stopped


@pytest.fixture(scope="module")
def world():
    return make_planted(seed=1, n_users=1000)


@pytest.fixture(scope="module")
def popularity_hr(world):
    pop = MostPopular(world.n_items, world.max_len, MostPopular.Config())
    split = world.split(0)
    pop.fit_statistics(world, split.train)
    return evaluate(pop, world, split.valid)["final"]["HR@50"]


@pytest.mark.slow
@pytest.mark.parametrize("cls, overrides, lr", [
    (MIND, {}, 0.005),
    (ComiRecDR, {}, 0.005),
    (MultVAE, {"total_anneal_steps": 200}, 0.001),  # the paper's lr; β reaches its cap within the run
])
def test_short_training_beats_popularity(world, popularity_hr, tmp_path, cls, overrides, lr):
    torch.set_num_threads(1)
    model = cls(world.n_items, world.max_len, cls.Config(**overrides))
    metrics = train(model, world, TrainConfig(lr=lr, max_epochs=3, patience=3, valid_max_rows=1500), tmp_path,
                    progress=False)
    assert metrics["steps"] > 0
    assert metrics["valid"]["HR@50"] > popularity_hr + 0.1, (metrics["valid"]["HR@50"], popularity_hr)
