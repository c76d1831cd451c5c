"""AVEF's frame rule (paper section 2.1.2): exactly ``frames_per_segment`` video frames per 655 ms segment."""

from __future__ import annotations

import numpy as np

from tasks.video import FaceError


def segment_frame_indices(t_begin: float, t_end: float, fps: float, n_video_frames: int, n: int) -> list[int]:
    """The AVEF rule (paper section 2.1.2): exactly ``n`` frames for the time range [t_begin, t_end].

    The range's frames are those whose time i / fps lies inside it. With more than ``n``, frames are
    dropped from both ends alternately, the first one first (20 -> drop 2 first and 2 last); with
    fewer, the first and the last frames are repeated alternately (12 -> 3 x first, ..., 3 x last),
    so the sequence stays continuous in time.
    """
    if n_video_frames < 1:
        raise FaceError("the video has no frames; a segment cannot be given face frames")
    if t_end < t_begin:
        raise FaceError(f"segment ends before it begins ({t_begin:.3f} s > {t_end:.3f} s)")
    first = min(int(np.ceil(t_begin * fps - 1e-6)), n_video_frames - 1)
    last = min(int(np.floor(t_end * fps + 1e-6)), n_video_frames - 1)
    indices = list(range(first, max(first, last) + 1))
    excess = len(indices) - n
    if excess > 0:
        from_start = (excess + 1) // 2
        return indices[from_start : from_start + n]
    missing = -excess
    return [indices[0]] * ((missing + 1) // 2) + indices + [indices[-1]] * (missing // 2)
