"""Operations on the unit sphere S^{d-1}: the one place this geometry lives.

All functions act on the last dimension and broadcast over the others.
"""
from __future__ import annotations

import torch

EPS = 1e-7


def normalize(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise onto the sphere (Alg. 1 line 5: x0 = e_a / ||e_a||; Alg. 2 line 7: L2_Norm)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)


def tangent(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Project v onto the tangent space at x (Alg. 1 line 6: v = eps - <eps, x> x)."""
    return v - (v * x).sum(-1, keepdim=True) * x


def exp_map(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """exp_x(v) = cos(||v||) x + sin(||v||) v/||v|| for tangent v at x (Alg. 1 line 8)."""
    norm = v.norm(dim=-1, keepdim=True)
    direction = v / norm.clamp_min(EPS)
    return normalize(torch.cos(norm) * x + torch.sin(norm) * direction)


def log_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The tangent vector at x pointing to y, of length geodesic_distance(x, y): the inverse of exp_map."""
    direction = tangent(y, x)
    norm = direction.norm(dim=-1, keepdim=True).clamp_min(EPS)
    return direction / norm * geodesic_distance(x, y)[..., None]


def geodesic_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The angle between unit vectors x and y, in [0, pi]; atan2 keeps it accurate near 0 and pi."""
    cos = (x * y).sum(-1)
    sin = torch.linalg.vector_norm(tangent(y, x), dim=-1)
    return torch.atan2(sin, cos)


def random_points(shape: tuple[int, ...], dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform points on S^{dim-1}: normalised standard Gaussians."""
    return normalize(torch.randn(*shape, dim, generator=generator))
