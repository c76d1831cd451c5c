"""The speaker's face on the video frames of kept segments: MTCNN tracked over frames, and the crops.

Speed is what shapes this module: per-frame full-resolution MTCNN costs 60-190 ms a frame on CPU, the
whole pipeline's budget is 50 ms per second of video. The boxes must still agree with per-frame
full-resolution default MTCNN at IoU >= 0.9 (benchmarks/face_accuracy.py). Four things do it:

* A face seen in a neighbouring frame is searched for only where it can be (``tasks.video.mtcnn``: the
  same cascade, restricted); a searched frame costs ~10-40 ms of CPU instead of 40-200 ms, still
  several times the budget, hence the next point.
* The search region runs the cascade on every ``detect_every``-th needed frame (key frames) and on
  both ends of every run of needed frames; frames between are linearly interpolated, never
  extrapolated. Where two neighbouring key frames disagree (a face in one only, or IoU below
  ``REDETECT_BELOW_IOU``: a cut, a fast head turn, or MTCNN's own jitter, which moves its box by
  IoU < 0.9 between ~9 % of consecutive frames), the middle frame between them is detected and
  each half is treated the same way (bisection).
* A full detection (the whole frame, pyramid down from ``min_face_share`` of the shorter side,
  snapped onto the default pyramid) runs on the first key frame, where the search region finds no
  face, after a gap in the needed frames, and every ``FULL_DETECT_EVERY_S`` seconds, which catches
  a new or other face.
* ``multiple_faces`` is kept honest that way: a frame has it when its own detection found several
  faces (the search region only sees faces near the speaker), or when the last full detection did:
  its count holds until the next full detection.

Frames are streamed: only the needed frames since the last key frame are held. They are decoded at their
native size unless ``decode_short_side`` scales them down (off by default: on the talking-face videos it
saved ~7 % of the tracker's time and lost the crop target, benchmarks/face_crops.py); tracks are always
in native pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from avemo.config import FaceParams
from avemo.ffmpeg import BUNDLED
from tasks import demux
from tasks.probe import MediaInfo
from tasks.video import FaceError
from tasks.video.frame_rule import segment_frame_indices
from tasks.video.mtcnn import Found, MTCNNCascade

REDETECT_BELOW_IOU = 0.9  # key-frame boxes overlapping less than this are not interpolated between
FULL_DETECT_EVERY_S = 2.0  # seconds between full detections, which find new and other faces


class Segment(Protocol):
    # read-only, so frozen dataclasses match too
    @property
    def t_begin(self) -> float: ...
    @property
    def t_end(self) -> float: ...


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
    decode_errors: int = 0  # errors ffmpeg logged while decoding the frames


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def extend_box(box: Sequence[float], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
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


def _box(values: Iterable[float]) -> tuple[float, float, float, float]:
    """x1, y1, x2, y2 as plain floats."""
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2


def interpolate_track(before: FaceTrack, after: FaceTrack, frame_index: int) -> FaceTrack:
    """Box, landmarks and probability at ``frame_index`` on the straight line between two face tracks."""
    if before.no_face or after.no_face:
        raise FaceError("cannot interpolate a face track from a frame without a face")
    w = (frame_index - before.frame_index) / (after.frame_index - before.frame_index)
    box = (1.0 - w) * np.asarray(before.box) + w * np.asarray(after.box)
    return FaceTrack(
        frame_index=frame_index,
        box=_box(box),
        probability=float((1.0 - w) * before.probability + w * after.probability),
        landmarks=((1.0 - w) * before.landmarks + w * after.landmarks).astype(np.float32),
        no_face=False,
        multiple_faces=before.multiple_faces or after.multiple_faces,
        detected=False,
    )


def decode_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """The size frames are decoded at: the native one, or scaled down (aspect kept) so the shorter side
    is ``short_side``. The pixels MTCNN and the crops read beyond that are ones both average away."""
    if short_side is None or min(width, height) <= short_side:
        return width, height
    factor = short_side / min(width, height)
    return max(1, round(width * factor)), max(1, round(height * factor))


def scale_track(track: FaceTrack, sx: float, sy: float) -> FaceTrack:
    """The track with its box and landmarks scaled by ``sx``, ``sy`` (decoded to native pixels)."""
    if (sx, sy) == (1.0, 1.0):
        return track
    box = np.asarray(track.box) * (sx, sy, sx, sy)
    return replace(track, box=_box(box), landmarks=(track.landmarks * (sx, sy)).astype(np.float32))


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


class FaceDetector(MTCNNCascade):
    """The speaker's face in frames: MTCNN's faces, and the documented rule choosing the speaker's.

    Thread-safe: calls share only the networks, which they do not modify.
    """

    def detect(
        self, frames: dict[int, np.ndarray], params: FaceParams, previous_box: Sequence[float] | None = None
    ) -> dict[int, FaceTrack]:
        """Full detection on each of ``frames`` (same-size RGB uint8, by frame index) in time order,
        choosing the speaker by ``choose_speaker`` from ``previous_box`` on.

        The whole frame is searched for faces of at least ``min_face_share``; the speaker's box is then
        searched again near itself on all the default pyramid's levels there, so it is the box default
        MTCNN gives (the coarse levels alone move it by up to IoU 0.1) and the one the search near it
        gives on the next frames.
        """
        order = sorted(frames)
        found = self.find_faces([frames[i] for i in order], params.min_probability, params.min_face_share)
        tracks = {}
        for index, faces in zip(order, found, strict=True):
            tracks[index] = _speaker_track(index, faces, previous_box, frames[index].shape, multiple_faces=False)
            previous_box = None if tracks[index].no_face else tracks[index].box
        with_face = [i for i in order if not tracks[i].no_face]
        near = [tracks[i].box for i in with_face]
        refound = self.find_faces([frames[i] for i in with_face], params.min_probability, params.min_face_share, near)
        for index, box, faces in zip(with_face, near, refound, strict=True):
            if len(faces[0]):
                several = tracks[index].multiple_faces
                tracks[index] = _speaker_track(index, faces, box, frames[index].shape, multiple_faces=several)
        return tracks

    def detect_near(
        self, frames: dict[int, np.ndarray], near_box: Sequence[float], params: FaceParams, multiple_faces: bool = False
    ) -> dict[int, FaceTrack]:
        """The face seen at ``near_box`` in a neighbouring frame, searched on each of ``frames`` only
        where it can be; a no-face track where it is not there (it moved far, or left: the caller then
        runs a full detection).

        ``multiple_faces``: the last full detection saw several faces, which the search cannot see.
        """
        order = sorted(frames)
        images = [frames[i] for i in order]
        found = self.find_faces(images, params.min_probability, params.min_face_share, near=[near_box] * len(order))
        return {
            index: _speaker_track(index, faces, near_box, image.shape, multiple_faces)
            for index, image, faces in zip(order, images, found, strict=True)
        }


def _speaker_track(
    frame_index: int, faces: Found, previous_box: Sequence[float] | None, shape: tuple[int, ...], multiple_faces: bool
) -> FaceTrack:
    """The frame's track: the speaker among ``faces`` (``choose_speaker``), or the no-face track."""
    boxes, probs, points = faces
    if len(boxes) == 0:
        return _no_face(frame_index, shape[1], shape[0], detected=True)
    chosen = choose_speaker(boxes, probs, previous_box)
    return FaceTrack(
        frame_index=frame_index,
        box=_box(boxes[chosen]),
        probability=float(probs[chosen]),
        landmarks=points[chosen].astype(np.float32),
        no_face=False,
        multiple_faces=multiple_faces or len(boxes) > 1,
        detected=True,
    )


class _Tracker:
    """Chooses, for a few frames near each other, between searching near a neighbouring frame's face
    and a full detection, and remembers whether the last full detection saw several faces."""

    def __init__(self, detector: FaceDetector, params: FaceParams, fps: float) -> None:
        self.detector, self.params = detector, params
        self.full_every = max(1, round(FULL_DETECT_EVERY_S * fps))
        self.last_full: int | None = None
        self.several_faces = False

    def detect(self, frames: dict[int, np.ndarray], near: FaceTrack | None) -> dict[int, FaceTrack]:
        order = sorted(frames)
        if (
            near is None
            or near.no_face
            or self.last_full is None
            or order[-1] - self.last_full >= self.full_every
            or max(abs(i - near.frame_index) for i in order) > self.params.detect_every
        ):
            return self._full(frames, None if near is None or near.no_face else near.box)
        tracks = self.detector.detect_near(frames, near.box, self.params, self.several_faces)
        lost = {i: frames[i] for i, track in tracks.items() if track.no_face}
        if lost:
            tracks.update(self._full(lost, near.box))
        return tracks

    def _full(self, frames: dict[int, np.ndarray], previous_box: Sequence[float] | None) -> dict[int, FaceTrack]:
        tracks = self.detector.detect(frames, self.params, previous_box)
        latest = max(tracks)
        if self.last_full is None or latest > self.last_full:  # bisection detects frames out of order
            self.last_full, self.several_faces = latest, tracks[latest].multiple_faces
        return tracks


def detect_clip_faces(
    path: Path,
    info: MediaInfo,
    segments: Sequence[Segment],
    detector: FaceDetector,
    params: FaceParams,
    ffmpeg_setting: str = BUNDLED,
) -> ClipFaces:
    """Face tracks and crops of every frame the segments need, and each segment's frame indices.

    The video is decoded once, as a stream; full frames are held only back to the last key frame.
    """
    if not info.has_video or not info.video_fps or not info.duration_s:
        raise FaceError(f"{path.name}: no video stream with a known rate and duration; faces need one")
    native_width, native_height, fps = info.video_width, info.video_height, info.video_fps
    assert native_width is not None and native_height is not None  # has_video; probe reads both from one size
    width, height = decode_size(native_width, native_height, params.decode_short_side)
    n_frames = max(1, round(info.duration_s * fps))
    segment_frames = [
        segment_frame_indices(s.t_begin, s.t_end, fps, n_frames, params.frames_per_segment) for s in segments
    ]
    needed = sorted({i for frames in segment_frames for i in frames})
    key_set = set(key_frames(needed, params.detect_every))
    tracker = _Tracker(detector, params, fps)
    tracks: dict[int, FaceTrack] = {}
    crops: dict[int, np.ndarray] = {}
    held: dict[int, np.ndarray] = {}
    last_key: FaceTrack | None = None

    def fill(before: FaceTrack | None, after: FaceTrack, between: list[int]) -> None:
        """Tracks for the held frames ``between`` two tracked ones: interpolated where the two agree,
        else the middle frame is detected and each half filled the same way, so a cut or a jump is
        found frame-exactly while a single jittery key frame costs one detection, not the whole gap."""
        if not between:
            return
        if before is not None and not after.no_face and iou(before.box, after.box) >= REDETECT_BELOW_IOU:
            tracks.update({i: interpolate_track(before, after, i) for i in between})
            return
        middle = between[len(between) // 2]
        tracks[middle] = tracker.detect({middle: held[middle]}, before or after)[middle]
        found = None if tracks[middle].no_face else tracks[middle]
        fill(before, tracks[middle], [i for i in between if i < middle])
        fill(found, after, [i for i in between if i > middle])

    def resolve(key: int) -> None:
        """Detect ``key``, then give the held frames before it their tracks, and crop them all."""
        nonlocal last_key
        track = tracker.detect({key: held[key]}, last_key)[key]
        before = last_key if last_key is not None and not last_key.no_face else None
        fill(before, track, sorted(i for i in held if i != key))
        tracks[key] = track
        for index in list(held):
            crops[index] = crop_face(held.pop(index), tracks[index].box, params.margin, params.crop_size)
        last_key = track

    log = demux.DecodeLog()
    for frame in demux.iter_video_frames(
        path, fps, width, height, needed, ffmpeg_setting, log, (native_width, native_height)
    ):
        held[frame.index] = frame.rgb
        if frame.index in key_set:
            resolve(frame.index)
    if held:
        resolve(max(held))  # the stream ended before the last key frame (duration rounding)
    if not tracks:
        raise FaceError(f"{path.name}: no video frame could be decoded")
    last_frame = max(tracks)
    segment_frames = [[min(i, last_frame) for i in frames] for frames in segment_frames]
    to_native = (native_width / width, native_height / height)
    tracks = {i: scale_track(track, *to_native) for i, track in tracks.items()}
    return ClipFaces(tracks=tracks, crops=crops, segment_frames=segment_frames, decode_errors=log.errors)
