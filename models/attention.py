"""Attention pooling over a variable number of frames, with padding masks.

Every pooling module maps frames ``x`` (B, T, d) and a validity mask (B, T) to one vector per clip
and the weights it gave each frame (B, T): non-negative, zero on padded frames, summing to one. Padded
frames never enter a sum, so padding a batch does not change any clip's result.

- :class:`ScaledSoftmaxAttention`: the FBP papers' 1-D attention with a softmax temperature lambda
  (am-fbp-attention-fusion.txt Eqs. 3-6 for audio, 8-11 for video).
- :class:`SelfAttention`, :class:`RelationAttention`, :class:`TransformerAttention`: the intra-modal
  fusion of emotiw2019-features-fusion.txt, Eqs. 1-2, 3-4 and 5-7.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from avemo.errors import AvemoError


class AttentionInputError(AvemoError):
    """Frames, lengths or masks that cannot be pooled."""


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Boolean (B, max_len) mask, True on each clip's first ``lengths[b]`` frames.

    Every clip must keep at least one frame: an empty clip has no average and no attention weights.
    """
    if lengths.dim() != 1:
        raise AttentionInputError(f"lengths must be one number per clip (B,), got shape {tuple(lengths.shape)}")
    if bool((lengths < 1).any()) or bool((lengths > max_len).any()):
        raise AttentionInputError(
            f"every length must lie in 1..{max_len} (the padded length), got {lengths.tolist()}; "
            "drop clips without frames before batching"
        )
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def _masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)


def _normalised(weights: Tensor, mask: Tensor) -> Tensor:
    """Zero the padded frames' weights and rescale the rest to sum to one (Eqs. 2, 4 and 7)."""
    weights = weights * mask
    return weights / weights.sum(dim=1, keepdim=True)


def _weighted_sum(weights: Tensor, x: Tensor) -> Tensor:
    return torch.einsum("bt,btd->bd", weights, x)


class ScaledSoftmaxAttention(nn.Module):
    """gamma_i = u^T tanh(W x_i + b); weights = softmax(temperature * gamma); pooled = sum_i w_i x_i.

    ``temperature`` is the papers' lambda (am-fbp Eqs. 4 and 9): 1 is the plain softmax, 0 gives every
    valid frame the same weight, i.e. mean pooling. With ``hidden_dim=None`` there is no W: the video
    stream's frames already come out of its reducing convolution, and Eq. 8 applies tanh to them
    directly.
    """

    def __init__(self, dim: int, temperature: float = 1.0, hidden_dim: int | None = None) -> None:
        super().__init__()
        self.temperature = temperature
        self.W = nn.Linear(dim, hidden_dim) if hidden_dim is not None else nn.Identity()
        self.u = nn.Linear(hidden_dim or dim, 1, bias=False)
        self.out_dim = dim

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        gamma = self.u(torch.tanh(self.W(x))).squeeze(-1)  # Eq. 3 / 8
        gamma_bar = _masked_softmax(self.temperature * gamma, mask)  # Eq. 4 / 9
        return _weighted_sum(gamma_bar, x), gamma_bar  # Eqs. 5-6 / 10-11


class SelfAttention(nn.Module):
    """alpha_i = sigmoid(W0^T f_i); f_s = sum alpha_i f_i / sum alpha_i (emotiw2019 Eqs. 1-2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.W0 = nn.Linear(dim, 1)
        self.out_dim = dim

    def forward(self, f: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        alpha = _normalised(torch.sigmoid(self.W0(f).squeeze(-1)), mask)
        return _weighted_sum(alpha, f), alpha


class RelationAttention(nn.Module):
    """Weights from each frame's relation to the self-attended summary (emotiw2019 Eqs. 3-4).

    beta_i = sigmoid(W1^T [f_i : f_s]); f_r = sum alpha_i beta_i [f_i : f_s] / sum alpha_i beta_i,
    so the output has twice the input's width.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.self_attention = SelfAttention(dim)
        self.W1 = nn.Linear(2 * dim, 1)
        self.out_dim = 2 * dim

    def forward(self, f: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        f_s, alpha = self.self_attention(f, mask)
        f_and_f_s = torch.cat([f, f_s[:, None, :].expand_as(f)], dim=-1)
        beta = torch.sigmoid(self.W1(f_and_f_s).squeeze(-1))
        alpha_beta = _normalised(alpha * beta, mask)
        return _weighted_sum(alpha_beta, f_and_f_s), alpha_beta


class TransformerAttention(nn.Module):
    """gamma_i = exp(u^T tanh(W2 f_i + b)); f_t = sum gamma_i f_i / sum gamma_i (emotiw2019 Eqs. 5-7).

    W2 lowers the width only for scoring; the frames are pooled at full width.
    """

    def __init__(self, dim: int, hidden_dim: int = 256) -> None:
        super().__init__()
        self.W2 = nn.Linear(dim, hidden_dim)
        self.u = nn.Linear(hidden_dim, 1, bias=False)
        self.out_dim = dim

    def forward(self, f: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        # exp(.) / sum exp(.) is a softmax; computing it as one avoids overflow.
        gamma = _masked_softmax(self.u(torch.tanh(self.W2(f))).squeeze(-1), mask)
        return _weighted_sum(gamma, f), gamma
