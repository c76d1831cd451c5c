"""Layers the papers' networks share: AlexNet's convolution widths and its local response normalisation."""

from __future__ import annotations

from torch import nn

# AlexNet's convolution widths (Krizhevsky et al. 2012), conv1 .. conv5: AVEF's audio-net and the FBP
# family's fully convolutional audio encoder both start from them.
ALEXNET_CHANNELS: tuple[int, ...] = (96, 256, 384, 384, 256)

# AlexNet's LRN constants (am-fbp Eq. 1 cites them: k_L = 2, n = 5, alpha = 1e-4, beta = 0.75).
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


def alexnet_lrn() -> nn.LocalResponseNorm:
    """AlexNet's LRN. torch divides alpha by n inside the sum, the paper does not: hence alpha * n."""
    return nn.LocalResponseNorm(LRN_SIZE, LRN_ALPHA * LRN_SIZE, LRN_BETA, LRN_K)
