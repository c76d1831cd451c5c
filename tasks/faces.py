"""The speaker's face on the video frames of kept segments: MTCNN boxes, crops, and AVEF's 16 frames.

Speed is what shapes this module: per-frame full-resolution MTCNN costs far more than the whole
pipeline's budget (50 ms of compute per second of video). Three things make it cheap while the boxes
stay within IoU 0.9 of per-frame full-resolution MTCNN (benchmarks/face_accuracy.py):

* MTCNN searches faces no smaller than about ``min_face_share`` of the frame's shorter side. A talking
  head fills much of the frame, and the image pyramid starts at 12 px / smallest face, so its large,
  costly levels are skipped. The smallest face is snapped down onto the default pyramid (20 px x
  0.709^-k), so the levels that remain are exactly the default's: the boxes then equal full-resolution
  default MTCNN's. Downscaling frames before detection was measured and rejected: it moves boxes by
  IoU 0.05-0.15, more than interpolation does.
* MTCNN runs on every ``detect_every``-th needed frame and on both ends of every run of consecutive
  needed frames, a batch of such key frames per call; boxes and landmarks of the frames between are
  linearly interpolated, never extrapolated.
* Where two neighbouring key frames disagree (a face in one only, or boxes overlapping less than
  ``REDETECT_BELOW_IOU``: a cut or a fast head turn), the frames between are detected too, so
  interpolation never bridges a change it cannot model.

Frames are streamed: only the needed frames since the last resolved key frame are held.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from facenet_pytorch import MTCNN
from facenet_pytorch.models.utils.detect_face import detect_face
from PIL import Image

from avemo.config import FaceParams
from tasks import demux
from tasks.probe import MediaInfo

REDETECT_BELOW_IOU = 0.9  # key-frame boxes overlapping less than this are not interpolated between
DETECT_BATCH = 8  # key frames per MTCNN call: amortises per-call overhead, bounds held frames


class FaceError(ValueError):
    """Face detection was asked something impossible (no video stream, bad segment times)."""


class Segment(Protocol):
    t_begin: float
    t_end: float


@dataclass(frozen=True)
class FaceTrack:
    """The speaker's face in one frame; a no-face frame carries the whole frame as its box."""

    frame_index: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the original frame's pixels
    probability: float  # MTCNN's face probability; 0 where no face was found
    landmarks: np.ndarray  # 5 x 2 (x, y): eyes, nose, mouth corners; NaN where no face was found
    no_face: bool
    multiple_faces: bool
    detected: bool  # MTCNN ran on this frame (False: interpolated between two detected frames)


@dataclass(frozen=True)
class ClipFaces:
    tracks: dict[int, FaceTrack]  # per needed frame index
    crops: dict[int, np.ndarray]  # per needed frame index: crop_size x crop_size x 3 uint8
    segment_frames: list[list[int]]  # per segment, its frames_per_segment frame indices


def segment_frame_indices(t_begin: float, t_end: float, fps: float, n_video_frames: int, n: int = 16) -> list[int]:
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


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def extend_box(
    box: Sequence[float], margin: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """The box grown by ``margin`` around its centre (0.3: width and height x 1.3), clipped to the frame.

    Whole pixels: x1, y1 rounded down and x2, y2 up, so the crop never loses a face pixel; at least one
    pixel wide and high.
    """
    x1, y1, x2, y2 = box
    half_w = (x2 - x1) * (1.0 + margin) / 2.0
    half_h = (y2 - y1) * (1.0 + margin) / 2.0
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    left = min(max(int(np.floor(cx - half_w)), 0), width - 1)
    top = min(max(int(np.floor(cy - half_h)), 0), height - 1)
    right = max(min(int(np.ceil(cx + half_w)), width), left + 1)
    bottom = max(min(int(np.ceil(cy + half_h)), height), top + 1)
    return left, top, right, bottom


def crop_face(rgb: np.ndarray, box: Sequence[float], margin: float, size: int) -> np.ndarray:
    """The face region (box extended by ``margin``, clipped) resized bilinearly to size x size x 3 uint8.

    The region is not padded to a square: MTCNN boxes are nearly square, and padding would add
    background the expression network never saw in training.
    """
    height, width = rgb.shape[:2]
    left, top, right, bottom = extend_box(box, margin, width, height)
    region = Image.fromarray(np.ascontiguousarray(rgb[top:bottom, left:right]))
    return np.asarray(region.resize((size, size), Image.Resampling.BILINEAR))


def choose_speaker(boxes: np.ndarray, probabilities: np.ndarray, previous_box: Sequence[float] | None) -> int:
    """Which of several faces is the speaker's: the documented rule.

    The face overlapping most (IoU > 0) with the previously chosen box, so the track follows one
    person; else (first frame, or no overlap) the largest box area x probability, as the speaker in
    emotion corpora and talking-head video is the main, frontal face.
    """
    if previous_box is not None:
        overlaps = [iou(box, previous_box) for box in boxes]
        best = int(np.argmax(overlaps))
        if overlaps[best] > 0.0:
            return best
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return int(np.argmax(areas * probabilities))


def _no_face(frame_index: int, width: int, height: int, detected: bool) -> FaceTrack:
    return FaceTrack(
        frame_index=frame_index,
        box=(0.0, 0.0, float(width), float(height)),
        probability=0.0,
        landmarks=np.full((5, 2), np.nan, dtype=np.float32),
        no_face=True,
        multiple_faces=False,
        detected=detected,
    )


def interpolate_track(before: FaceTrack, after: FaceTrack, frame_index: int) -> FaceTrack:
    """Box, landmarks and probability at ``frame_index`` on the straight line between two face tracks."""
    if before.no_face or after.no_face:
        raise FaceError("cannot interpolate a face track from a frame without a face")
    w = (frame_index - before.frame_index) / (after.frame_index - before.frame_index)
    box = (1.0 - w) * np.asarray(before.box) + w * np.asarray(after.box)
    return FaceTrack(
        frame_index=frame_index,
        box=tuple(float(v) for v in box),
        probability=float((1.0 - w) * before.probability + w * after.probability),
        landmarks=((1.0 - w) * before.landmarks + w * after.landmarks).astype(np.float32),
        no_face=False,
        multiple_faces=before.multiple_faces or after.multiple_faces,
        detected=False,
    )


def key_frames(needed: Iterable[int], detect_every: int) -> list[int]:
    """The frames MTCNN runs on: every ``detect_every``-th of each run of consecutive needed frames,
    and the run's last frame, so every other frame lies between two detections."""
    ordered = sorted(set(needed))
    keys: list[int] = []
    run_start = 0
    for position, index in enumerate(ordered):
        if position > 0 and index != ordered[position - 1] + 1:
            run_start = position
        is_run_end = position == len(ordered) - 1 or ordered[position + 1] != index + 1
        if (position - run_start) % detect_every == 0 or is_run_end:
            keys.append(index)
    return keys


def pyramid_min_face_size(min_face_share: float, short_side: int, default_size: float = 20.0, factor: float = 0.709) -> float:
    """MTCNN's smallest face for ``min_face_share`` of ``short_side``, snapped down onto the default pyramid.

    MTCNN scales the frame by 12 / min_face_size x factor^k; with min_face_size = default_size /
    factor^k the remaining scales are exactly the default detector's coarse ones.
    """
    wanted = min_face_share * short_side
    steps = max(0, int(np.floor(np.log(wanted / default_size) / np.log(1.0 / factor) + 1e-9)))
    return default_size / factor**steps


def _pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class FaceDetector:
    """One MTCNN (weights shipped in facenet-pytorch, loaded once) keeping every face of a frame."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device or _pick_device()
        self._mtcnn = MTCNN(keep_all=True, device=self.device)

    def _detect_batch(
        self, frames: list[np.ndarray], min_face_size: float, min_probability: float
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Boxes (k x 4), probabilities (k) and landmarks (k x 5 x 2) above ``min_probability``, per frame.

        Calls MTCNN's ``detect_face`` with this call's smallest face size rather than setting it on
        the shared MTCNN, so threads sharing one detector cannot race.
        """
        net = self._mtcnn
        with torch.inference_mode():
            boxes, points = detect_face(
                np.stack(frames), min_face_size, net.pnet, net.rnet, net.onet, net.thresholds, net.factor, self.device
            )
        found = []
        for frame_boxes, frame_points in zip(boxes, points):
            frame_boxes = np.asarray(frame_boxes, dtype=np.float64).reshape(-1, 5)
            keep = frame_boxes[:, 4] >= min_probability
            found.append((frame_boxes[keep, :4], frame_boxes[keep, 4], np.asarray(frame_points).reshape(-1, 5, 2)[keep]))
        return found

    def detect(
        self, frames: dict[int, np.ndarray], params: FaceParams, previous_box: Sequence[float] | None = None
    ) -> dict[int, FaceTrack]:
        """Run MTCNN on each of ``frames`` (same-size RGB uint8, by frame index), in batches, in time
        order, choosing the speaker by ``choose_speaker`` from ``previous_box`` on."""
        if not frames:
            return {}
        order = sorted(frames)
        height, width = frames[order[0]].shape[:2]
        min_face_size = pyramid_min_face_size(
            params.min_face_share, min(height, width), self._mtcnn.min_face_size, self._mtcnn.factor
        )
        tracks: dict[int, FaceTrack] = {}
        for start in range(0, len(order), DETECT_BATCH):
            batch = order[start : start + DETECT_BATCH]
            found = self._detect_batch([frames[i] for i in batch], min_face_size, params.min_probability)
            for index, (boxes, probs, points) in zip(batch, found):
                if len(boxes) == 0:
                    tracks[index] = _no_face(index, width, height, detected=True)
                    continue
                chosen = choose_speaker(boxes, probs, previous_box)
                previous_box = boxes[chosen]
                tracks[index] = FaceTrack(
                    frame_index=index,
                    box=tuple(float(v) for v in boxes[chosen]),
                    probability=float(probs[chosen]),
                    landmarks=points[chosen].astype(np.float32),
                    no_face=False,
                    multiple_faces=len(boxes) > 1,
                    detected=True,
                )
        return tracks


def _resolve(
    held: dict[int, np.ndarray],
    keys: list[int],
    key_tracks: dict[int, FaceTrack],
    detector: FaceDetector,
    params: FaceParams,
) -> dict[int, FaceTrack]:
    """Tracks of the held frames up to the last of ``keys``: interpolated between agreeing key frames,
    detected where the two neighbouring key frames disagree."""
    tracks = dict(key_tracks)
    previous_box = None
    for before, after in zip(keys, keys[1:]):
        between = [i for i in held if before < i < after]
        if not between:
            continue
        a, b = tracks[before], tracks[after]
        agree = not a.no_face and not b.no_face and iou(a.box, b.box) >= REDETECT_BELOW_IOU
        if agree:
            tracks.update({i: interpolate_track(a, b, i) for i in between})
        else:
            previous_box = None if a.no_face else a.box
            tracks.update(detector.detect({i: held[i] for i in between}, params, previous_box))
    return tracks


def detect_clip_faces(
    path: Path, info: MediaInfo, segments: Sequence[Segment], detector: FaceDetector, params: FaceParams
) -> ClipFaces:
    """Face tracks and crops of every frame the segments need, and each segment's frame indices.

    The video is decoded once, as a stream; full frames are held only between two resolved key frames.
    """
    if not info.has_video or not info.video_fps or not info.duration_s:
        raise FaceError(f"{path.name}: no video stream with a known rate and duration; faces need one")
    width, height, fps = info.video_width, info.video_height, info.video_fps
    n_frames = max(1, int(round(info.duration_s * fps)))
    segment_frames = [
        segment_frame_indices(s.t_begin, s.t_end, fps, n_frames, params.frames_per_segment) for s in segments
    ]
    needed = sorted({i for frames in segment_frames for i in frames})
    keys = key_frames(needed, params.detect_every)
    key_set = set(keys)

    tracks: dict[int, FaceTrack] = {}
    crops: dict[int, np.ndarray] = {}
    held: dict[int, np.ndarray] = {}
    pending_keys: list[int] = []
    last_key: FaceTrack | None = None

    def flush() -> None:
        nonlocal last_key
        previous_box = None if last_key is None or last_key.no_face else last_key.box
        key_tracks = detector.detect({i: held[i] for i in pending_keys}, params, previous_box)
        chain = ([last_key.frame_index] if last_key else []) + pending_keys
        if last_key is not None:
            key_tracks[last_key.frame_index] = last_key
        resolved = _resolve(held, chain, key_tracks, detector, params)
        for index in [i for i in held if i <= pending_keys[-1]]:
            tracks[index] = resolved[index]
            crops[index] = crop_face(held.pop(index), resolved[index].box, params.margin, params.crop_size)
        last_key = resolved[pending_keys[-1]]
        pending_keys.clear()

    for frame in demux.iter_video_frames(path, fps, width, height, wanted=needed):
        held[frame.index] = frame.rgb
        if frame.index in key_set:
            pending_keys.append(frame.index)
            if len(pending_keys) == DETECT_BATCH:
                flush()
    if held and (not pending_keys or max(held) > pending_keys[-1]):
        pending_keys.append(max(held))  # the stream ended before the last key frame (duration rounding)
    if pending_keys:
        flush()
    if not tracks:
        raise FaceError(f"{path.name}: no video frame could be decoded")
    last_frame = max(tracks)
    segment_frames = [[min(i, last_frame) for i in frames] for frames in segment_frames]
    return ClipFaces(tracks=tracks, crops=crops, segment_frames=segment_frames)
