"""Synthetic activations from a known sparse dictionary: the ground truth SAE training tests check against.

Each token is `x = Σ_i c_i d_i + offset + noise` with unit-norm atoms `d_i`, where each atom fires
independently with probability `active / n_atoms` and a magnitude `1 + |N(0, 1)|`. An SAE that
works recovers the atoms as decoder rows.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sparse_dictionary_data(
    n_tokens: int,
    d_in: int,
    n_atoms: int,
    active: float = 4.0,
    *,
    offset_norm: float = 2.0,
    noise: float = 0.0,
    seed: int = 0,
    chunk: int = 65536,
) -> tuple[Tensor, Tensor]:
    """Return `(acts [n_tokens, d_in], atoms [n_atoms, d_in])` (float32, atoms unit norm)."""
    gen = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n_atoms, d_in, generator=gen)
    atoms /= atoms.norm(dim=1, keepdim=True)
    offset = torch.randn(d_in, generator=gen)
    offset *= offset_norm / offset.norm()
    p = active / n_atoms
    parts = []
    for start in range(0, n_tokens, chunk):
        n = min(chunk, n_tokens - start)
        fires = torch.rand(n, n_atoms, generator=gen) < p
        mags = 1.0 + torch.randn(n, n_atoms, generator=gen).abs()
        x = (fires * mags) @ atoms + offset
        if noise > 0:
            x += noise * torch.randn(n, d_in, generator=gen)
        parts.append(x)
    return torch.cat(parts), atoms


def dictionary_recovery(atoms: Tensor, W_dec: Tensor) -> float:
    """Mean over true atoms of the best cosine similarity with any learned decoder row."""
    a = atoms / atoms.norm(dim=1, keepdim=True)
    w = W_dec.detach().float() / W_dec.detach().float().norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (a @ w.T).max(dim=1).values.mean().item()
