import numpy as np
import pytest
from pydantic import ValidationError

from avemo.config import SegmentParams
from tasks.audio.segment import (
    Segment,
    SegmentError,
    count_frames,
    frame_voicing,
    samples_per,
    segment_clip,
)

SR = 16000
VAD_MS = 30
VAD_FRAME = SR * VAD_MS // 1000


def all_voiced(n_samples: int) -> np.ndarray:
    return np.ones(-(-n_samples // VAD_FRAME), dtype=bool)


def test_exactly_655_ms_is_one_segment():
    n_samples = 10480  # 0.655 s at 16 kHz: 400 + 63 * 160
    assert segment_clip(n_samples, SR, all_voiced(n_samples), VAD_MS, SegmentParams()) == [
        Segment(index=0, first_frame=0, t_begin=0.0, t_end=0.655, voiced_share=1.0)
    ]


def test_shorter_than_one_segment_has_none():
    assert segment_clip(10479, SR, all_voiced(10479), VAD_MS, SegmentParams()) == []
    assert segment_clip(0, SR, all_voiced(0), VAD_MS, SegmentParams()) == []


def test_two_seconds_gives_four_segments_at_the_34_frame_stride():
    # n_frames = 1 + (32000 - 400) // 160 = 198; n_segments = 1 + (198 - 64) // 34 = 4
    segments = segment_clip(2 * SR, SR, all_voiced(2 * SR), VAD_MS, SegmentParams())
    assert [s.index for s in segments] == [0, 1, 2, 3]
    assert [s.first_frame for s in segments] == [0, 34, 68, 102]
    np.testing.assert_allclose([s.t_begin for s in segments], [0.0, 0.34, 0.68, 1.02])
    np.testing.assert_allclose([s.t_end for s in segments], [0.655, 0.995, 1.335, 1.675])
    assert all(s.voiced_share == 1.0 for s in segments)


def test_same_durations_at_8_khz():
    segments = segment_clip(2 * 8000, 8000, np.ones(67, dtype=bool), VAD_MS, SegmentParams())
    assert [s.first_frame for s in segments] == [0, 34, 68, 102]


@pytest.mark.parametrize(
    ("min_share", "kept_first_frames", "kept_shares"),
    [
        (0.0, [0, 34, 68, 102], [0.0, 9 / 64, 43 / 64, 1.0]),
        (0.5, [68, 102], [43 / 64, 1.0]),
        (0.7, [102], [1.0]),
    ],
)
def test_voiced_share_threshold_selects_segments(min_share, kept_first_frames, kept_shares):
    # Speech from VAD frame 30 (0.9 s) on. Analysis frame i is centred on sample 160 i + 200, voiced
    # when (160 i + 200) // 480 >= 30, i.e. i >= 89: segments starting at frames 0, 34, 68, 102 hold
    # 0, 9, 43 and 64 voiced frames.
    voiced = np.arange(67) >= 30
    segments = segment_clip(2 * SR, SR, voiced, VAD_MS, SegmentParams(min_voiced_share=min_share))
    assert [s.first_frame for s in segments] == kept_first_frames
    assert [s.index for s in segments] == list(range(len(kept_first_frames)))
    np.testing.assert_allclose([s.voiced_share for s in segments], kept_shares)


def test_frame_voicing_reads_the_vad_frame_under_each_centre():
    voiced = np.zeros(67, dtype=bool)
    voiced[1] = True  # samples 480..959: centres 160 i + 200 of frames 2, 3, 4
    assert np.flatnonzero(frame_voicing(2 * SR, SR, voiced, VAD_MS, SegmentParams())).tolist() == [2, 3, 4]


def test_framing_helpers():
    assert samples_per(25, SR) == 400 and samples_per(10, 8000) == 80
    assert count_frames(400, 400, 160) == 1 and count_frames(399, 400, 160) == 0
    assert count_frames(32000, 400, 160) == 198


def test_rejects_vad_decisions_for_another_signal():
    with pytest.raises(SegmentError, match="expected \\(67,\\)"):
        segment_clip(2 * SR, SR, np.ones(66, dtype=bool), VAD_MS, SegmentParams())


def test_rejects_a_window_of_fractional_samples():
    with pytest.raises(SegmentError, match="whole number of samples"):
        segment_clip(2 * SR, SR, all_voiced(2 * SR), VAD_MS, SegmentParams(hop_ms=10.03))


def test_rejects_overlap_as_long_as_the_segment():
    with pytest.raises(ValidationError, match="overlap_frames must be smaller than frames"):
        SegmentParams(overlap_frames=64)
