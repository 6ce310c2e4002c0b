"""Sphere operations, the noise schedule, the forward process and the reverse sampler."""
import math

import numpy as np
import pytest
import torch

from dimerec import sphere
from dimerec.diffusion import NoiseSchedule, SphereDiffusion, sample_trajectory
from dimerec.errors import DimeRecError

D = 64


def unit(n, d=D, seed=0):
    return sphere.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))


def test_exp_map_keeps_unit_norm_and_tangent_noise_is_orthogonal():
    x = unit(100)
    v = sphere.tangent(torch.randn(100, D, dtype=torch.float64) * 3, x)
    assert torch.allclose((v * x).sum(-1), torch.zeros(100, dtype=torch.float64), atol=1e-10)
    y = sphere.exp_map(x, v)
    assert torch.allclose(y.norm(dim=-1), torch.ones(100, dtype=torch.float64), atol=1e-10)


def test_geodesic_distance_of_exp_map_equals_tangent_norm_below_pi():
    x = unit(200)
    direction = sphere.normalize(sphere.tangent(torch.randn(200, D, dtype=torch.float64), x))
    lengths = torch.linspace(0.0, math.pi - 1e-3, 200, dtype=torch.float64)
    y = sphere.exp_map(x, direction * lengths[:, None])
    assert torch.allclose(sphere.geodesic_distance(x, y), lengths, atol=1e-6)
    # past pi the walk wraps round: the distance is 2*pi - length
    y = sphere.exp_map(x, direction * 4.0)
    assert torch.allclose(sphere.geodesic_distance(x, y), torch.full((200,), 2 * math.pi - 4.0, dtype=torch.float64),
                          atol=1e-6)


def test_log_map_inverts_exp_map():
    x = unit(50)
    v = sphere.tangent(torch.randn(50, D, dtype=torch.float64), x)
    v = v / v.norm(dim=-1, keepdim=True) * torch.rand(50, 1, dtype=torch.float64) * 3
    assert torch.allclose(sphere.log_map(x, sphere.exp_map(x, v)), v, atol=1e-6)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_posterior_coefficients_equal_eq_8_9(kind):
    s = NoiseSchedule(20, kind)
    betas = s.betas.numpy()[1:]
    abar = np.cumprod(1 - betas)
    assert np.all(np.diff(abar) < 0), "ᾱ must decrease"
    assert np.allclose(s.alphas_cumprod.numpy()[1:], abar)
    for t in range(2, 21):  # 1-based step t, Eq. 8-9 written out
        b, a_t, a_prev = betas[t - 1], abar[t - 1], abar[t - 2]
        assert math.isclose(s.posterior_coef_xt[t], math.sqrt(1 - b) * (1 - a_prev) / (1 - a_t), rel_tol=1e-9)
        assert math.isclose(s.posterior_coef_x0[t], math.sqrt(a_prev) * b / (1 - a_t), rel_tol=1e-9)
        assert math.isclose(s.posterior_variance[t], b * (1 - a_prev) / (1 - a_t), rel_tol=1e-9)


def test_cosine_schedule_ends_at_a_right_angle_where_random_points_lie():
    angles = NoiseSchedule(20, "cosine").angles(D)
    assert math.isclose(float(angles[-1]), math.pi / 2, abs_tol=1e-6)
    assert float(angles[0]) == 0.0 and torch.all(torch.diff(angles) > 0)
    # θ_t is the angle of the Euclidean DDPM sample sqrt(ᾱ) x0 + sqrt(1-ᾱ) ε_tan with x0 (‖ε_tan‖ = sqrt(d-1))
    s = NoiseSchedule(20, "linear")
    x0 = unit(1)
    eps = sphere.tangent(torch.randn(1, D, dtype=torch.float64), x0)
    eps = eps / eps.norm() * math.sqrt(D - 1)
    for t in (1, 7, 20):
        abar = float(s.alphas_cumprod[t])
        xt = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps
        angle = float(sphere.geodesic_distance(x0, sphere.normalize(xt)))
        assert math.isclose(angle, float(s.angles(D)[t]), rel_tol=1e-6)
    angles = sphere.geodesic_distance(unit(2000, seed=1), unit(2000, seed=2))
    assert abs(float(angles.mean()) - math.pi / 2) < 0.01 and float(angles.std()) < 0.2


def test_forward_angle_process_moves_x0_by_theta_t_and_paper_noise_wraps():
    x0 = unit(500).float()
    ours = SphereDiffusion(NoiseSchedule(20, "cosine"), D, magnitude="angle")
    for t in (1, 5, 10, 20):
        xt = ours.q_sample(x0, torch.full((500,), t))
        assert torch.allclose(sphere.geodesic_distance(x0, xt), ours.angles[t].float().expand(500), atol=1e-3)
    # the paper's unit tangent noise moves x0 by sqrt(1-ᾱ_t)·sqrt(d-1) ≈ 7.9 sqrt(1-ᾱ_t) rad: past π, it wraps
    paper = SphereDiffusion(NoiseSchedule(20, "cosine"), D, magnitude="paper", reverse="ddpm")
    xt = paper.q_sample(x0, torch.full((500,), 20))
    assert torch.allclose(xt.norm(dim=-1), torch.ones(500), atol=1e-5)
    moved = math.sqrt(D - 1)  # ᾱ_T = 0
    expected = abs(math.remainder(moved, 2 * math.pi))  # distance after wrapping
    assert abs(float(sphere.geodesic_distance(x0, xt).mean()) - expected) < 0.15


@pytest.mark.parametrize("preset", ["ours", "paper"])
def test_oracle_denoiser_reverse_process_ends_at_x0(preset):
    x0 = unit(64).float()
    if preset == "ours":
        diffusion = SphereDiffusion(NoiseSchedule(20, "cosine"), D, magnitude="angle", reverse="ddim")
    else:
        diffusion = SphereDiffusion(NoiseSchedule(20, "linear"), D, magnitude="paper", reverse="ddpm",
                                    reverse_sigma="beta-tilde")
    oracle = lambda x_t, t: x0[:, None].expand_as(x_t)  # noqa: E731
    traj = sample_trajectory(diffusion, oracle, 64, 3, generator=torch.Generator().manual_seed(0))
    final_angle = sphere.geodesic_distance(traj.final, x0[:, None])
    assert float(final_angle.max()) < 0.05
    if preset == "ours":  # the reverse chain retraces the forward schedule's angles
        start = sphere.geodesic_distance(traj.x_t[0], x0[:, None])  # a random point: π/2 ± 0.13
        assert abs(float(start.mean()) - math.pi / 2) < 0.05
        for i, t in enumerate(range(19, -1, -1), start=1):
            angle = sphere.geodesic_distance(traj.x_t[i], x0[:, None])
            gap = (angle - float(diffusion.angles[t])).abs()  # the start's spread, shrinking with θ_t
            assert float(gap.mean()) < 0.15 and float(gap.max()) < 0.45, t


@pytest.mark.parametrize("reverse", ["ddim", "ddpm"])
def test_trajectory_shapes_and_every_x_t_on_the_sphere(reverse):
    diffusion = SphereDiffusion(NoiseSchedule(7, "cosine"), D, reverse=reverse, reverse_sigma="sqrt-beta-tilde")
    rand_denoiser = lambda x_t, t: torch.randn(x_t.shape) * 0.5  # noqa: E731
    traj = sample_trajectory(diffusion, rand_denoiser, 5, 4, generator=torch.Generator().manual_seed(0))
    assert traj.x_t.shape == (8, 5, 4, D) and traj.pred_x0.shape == (7, 5, 4, D)
    assert traj.steps == [7, 6, 5, 4, 3, 2, 1]
    assert torch.allclose(traj.x_t.norm(dim=-1), torch.ones(8, 5, 4), atol=1e-5)


def test_bad_settings_are_rejected_with_the_choices():
    with pytest.raises(DimeRecError, match="--schedule must be one of linear, cosine; got 'quadratic'"):
        NoiseSchedule(20, "quadratic")
    with pytest.raises(DimeRecError, match="--forward must be one of geodesic, euclidean; got 'hyperbolic'"):
        SphereDiffusion(NoiseSchedule(20), D, forward="hyperbolic")
    with pytest.raises(ValueError, match="ddpm"):
        SphereDiffusion(NoiseSchedule(20), D, forward="euclidean", reverse="ddim")
