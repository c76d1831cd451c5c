"""Pre-emphasis: the first-order high-pass filter y[n] = x[n] - mu * x[n-1] (AVEF paper, section 2.1.1).

It lifts the high frequencies that voiced speech attenuates (about -6 dB per octave), so the upper mel
bands are not drowned by the low-frequency energy. Only the features read the filtered signal; VAD reads
the original one (see ``tasks.audio.vad``).
"""

from __future__ import annotations

import numpy as np

from avemo.errors import AvemoError


class PreEmphasisError(AvemoError):
    """The signal or coefficient cannot be pre-emphasised."""


def pre_emphasis(x: np.ndarray, coefficient: float) -> np.ndarray:
    """Return ``x[n] - coefficient * x[n-1]`` with ``x[0]`` kept as is (no sample before it), same dtype."""
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
        raise PreEmphasisError(
            f"expected a mono 1-D float signal, got shape {x.shape} of {x.dtype}; decode it with tasks.demux.load_audio"
        )
    if not 0.0 <= coefficient <= 1.0:
        raise PreEmphasisError(f"coefficient {coefficient} is outside [0, 1]; the paper uses 0.97")
    y = np.empty_like(x)
    y[:1] = x[:1]
    y[1:] = x[1:] - coefficient * x[:-1]
    return y
