"""MostPopular: every user gets the items ranked by training-set popularity. The floor row of every table.

    python -m dimerec train --model pop --dataset ml-1m --out runs/pop-ml1m
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dimerec.models.base import Recommender, Settings


@dataclass
class PopConfig(Settings):
    pass


class MostPopular(Recommender):
    name = "pop"
    Config = PopConfig
    trainable = False

    def __init__(self, n_items: int, max_len: int, config: PopConfig):
        super().__init__(n_items, max_len, config)
        self.register_buffer("counts", torch.zeros(n_items))

    def fit_statistics(self, data, train_users: np.ndarray) -> None:
        self.counts = torch.as_tensor(data.item_popularity(train_users), dtype=torch.float32)

    def user_vectors(self, hist: torch.Tensor) -> torch.Tensor:
        return torch.ones(hist.shape[0], 1, 1, device=hist.device)  # [B, 1, 1]: score = count

    def item_vectors(self) -> torch.Tensor:
        return self.counts[:, None]  # [n_items, 1]
