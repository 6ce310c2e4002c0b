"""Mult-VAE (Liang et al., WWW 2018): a variational autoencoder over the user's multi-hot item vector.

Paper: "Variational Autoencoders for Collaborative Filtering", §2.
Official code: dawenl/vae_cf (the `MultVAE` class of the notebook), which we follow:
x = the user's items as a binary vector over the catalogue; the encoder reads
dropout_0.5(x / ‖x‖₂) through [n_items → 600 → 2·200] (tanh hidden layer) to the
mean μ and log-variance of q(z|x); z = μ + σ·ε in training and z = μ in eval; the
decoder is [200 → 600 → n_items] (tanh hidden layer, linear output). The loss is the
annealed negative ELBO
    L_mult = −mean_u Σ_i x_i log softmax(logits)_i,   L_kl = mean_u KL(q(z|x) ‖ N(0, I)),
    loss = L_mult + β L_kl,   β = min(anneal_cap, step / total_anneal_steps),
where `step` counts training steps (0 at the first) and is kept in the checkpoint.
Weights are Xavier-uniform and biases N(0, 0.001²) truncated, as in the code.

Next-item harness: a training sample is (history, next item), by `--sampling prefixes` (the model keeps
it: it reads a history as a set, through a dense [n_items → 600] layer, so a window's targets share no
work). The encoder reads the
history's multi-hot; the items to reconstruct (x in L_mult) are the history PLUS the
target, so the target is one of the "held" items the model must put mass on, and
the history alone is what it sees (the paper's fold-in: observed items in,
the user's full item set out). In eval the input is the history, without dropout.

Retrieval contract: the decoder's last layer is linear, logits_i = h·W_i + b_i with
h = tanh(W₁ μ + b₁), so user_vectors = [h, 1] ([B, 1, 601]) and item_vectors =
[W_i, b_i] ([n_items, 601]) make the inner product equal the logits exactly.

Deviations: no L2 weight penalty (the notebook trains Mult-VAE with lam = 0.0);
histories are truncated to the dataset's max_len; the paper's lr 1e-3 and batch 500
are not defaults of our shared trainer (pass --lr 0.001), and total_anneal_steps
should be set to about the number of steps one trains for (the paper's 200,000 is
the default; with fewer steps β never reaches the cap).

    python -m dimerec train --model multvae --dataset ml-1m --lr 0.001 --total-anneal-steps 20000 \
        --out runs/multvae-ml1m
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from dimerec.models.base import Batch, Recommender, Settings, option


@dataclass
class MultVAEConfig(Settings):
    latent_dim: int = option(200, "size of z (the paper's 200)", at_least=1)
    hidden_dim: int = option(600, "hidden layer of encoder and decoder (the paper's 600)", at_least=1)
    dropout: float = option(0.5, "dropout on the normalised input (the paper's 0.5)", at_least=0, below=1)
    anneal_cap: float = option(0.2, "largest KL weight β (the paper's 0.2)", at_least=0)
    total_anneal_steps: int = option(200_000, "training steps over which β rises linearly to the cap (the code's)",
                                     at_least=1)


def _init(layer: nn.Linear) -> nn.Linear:
    nn.init.xavier_uniform_(layer.weight)
    nn.init.trunc_normal_(layer.bias, std=0.001, a=-0.002, b=0.002)
    return layer


class MultVAE(Recommender):
    name = "multvae"
    Config = MultVAEConfig

    def __init__(self, n_items: int, max_len: int, config: MultVAEConfig):
        super().__init__(n_items, max_len, config)
        c = config
        self.encoder = nn.ModuleList([_init(nn.Linear(n_items, c.hidden_dim)),
                                      _init(nn.Linear(c.hidden_dim, 2 * c.latent_dim))])
        self.decoder = nn.ModuleList([_init(nn.Linear(c.latent_dim, c.hidden_dim)),
                                      _init(nn.Linear(c.hidden_dim, n_items))])
        self.register_buffer("anneal_step", torch.zeros((), dtype=torch.long))

    def multi_hot(self, items: torch.Tensor) -> torch.Tensor:
        """[B, L] item ids (pad allowed) -> [B, n_items] binary float."""
        x = items.new_zeros(items.shape[0], self.n_items + 1, dtype=torch.float32)
        return x.scatter_(1, items, 1.0)[:, :self.n_items]  # the pad column is dropped

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Multi-hot [B, n_items] -> mean and log-variance of q(z|x), each [B, latent]."""
        h = F.dropout(F.normalize(x, dim=1), self.config.dropout, self.training)
        h = self.encoder[1](torch.tanh(self.encoder[0](h)))
        return h.chunk(2, dim=1)

    def decoder_hidden(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.decoder[0](z))  # [B, hidden]

    def user_vectors(self, hist: torch.Tensor) -> torch.Tensor:
        mu, _ = self.encode(self.multi_hot(hist))
        h = self.decoder_hidden(mu)
        return torch.cat([h, h.new_ones(h.shape[0], 1)], dim=1)[:, None]  # [B, 1, hidden+1]

    def item_vectors(self) -> torch.Tensor:
        out = self.decoder[1]
        return torch.cat([out.weight, out.bias[:, None]], dim=1)  # [n_items, hidden+1]

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        x_in = self.multi_hot(batch.hist)
        x_out = self.multi_hot(torch.cat([batch.hist, batch.target[:, None]], dim=1))  # history + target
        mu, logvar = self.encode(x_in)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        logits = self.decoder[1](self.decoder_hidden(z))  # [B, n_items]
        l_mult = -(F.log_softmax(logits, dim=1) * x_out).sum(1).mean()
        l_kl = (0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1)).sum(1).mean()
        beta = min(self.config.anneal_cap, float(self.anneal_step) / self.config.total_anneal_steps)
        if self.training:
            self.anneal_step += 1
        return {"loss": l_mult + beta * l_kl, "L_mult": l_mult, "L_kl": l_kl, "beta": torch.tensor(beta)}
