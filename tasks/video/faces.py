"""The speaker's face on the video frames of kept segments: MTCNN boxes, crops, and AVEF's 16 frames.

Speed is what shapes this module: per-frame full-resolution MTCNN costs 60-190 ms a frame on CPU, the
whole pipeline's budget is 50 ms per second of video. The boxes must still agree with per-frame
full-resolution default MTCNN at IoU >= 0.9 (benchmarks/face_accuracy.py). Four things do it:

* MTCNN is a local cascade (PNet proposals -> RNet -> ONet), so a face whose box B a neighbouring
  frame gave is found again by the SAME cascade run only where it can be: PNet on the default
  pyramid's levels whose 12 px window spans ``ROI_WINDOW_SIDES`` x B's side (the levels at which
  full MTCNN's final box arises), on a crop of each level around B grown by ``ROI_MARGIN_SIDES``.
  The crop's pixels are computed exactly as the whole level's (area resampling, PNet's stride-2 grid
  kept), so PNet's proposals there are full MTCNN's; NMS, RNet, ONet and their thresholds are
  facenet-pytorch's own. A searched frame costs ~10-40 ms of CPU instead of 40-200 ms
  (one torch thread); that is still several times the budget, hence the next point.
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

Frames are streamed: only the needed frames since the last key frame are held. The networks run in
channels-last memory layout: their max-pooling is several times faster that way on CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from facenet_pytorch import MTCNN
from facenet_pytorch.models.utils.detect_face import (
    batched_nms_numpy,
    bbreg,
    imresample,
    pad,
    rerec,
)
from PIL import Image
from torchvision.ops.boxes import batched_nms

from avemo.config import FaceParams
from avemo.device import resolve_device
from tasks import demux
from tasks.probe import MediaInfo

REDETECT_BELOW_IOU = 0.9  # key-frame boxes overlapping less than this are not interpolated between
ROI_MARGIN_SIDES = 1.0  # the search region: the last box grown by this many box sides on each side
ROI_WINDOW_SIDES = (0.3, 1.9)  # PNet levels searched: window 12 / scale within these x the box side
FULL_DETECT_EVERY_S = 2.0  # seconds between full detections, which find new and other faces
PNET_CELL = 12  # PNet's window, px at its level


class FaceError(ValueError):
    """Face detection was asked something impossible (no video stream, bad segment times, mixed frame sizes)."""


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


def pyramid_scales(min_face_size: float, short_side: int, factor: float = 0.709) -> list[float]:
    """MTCNN's image pyramid, computed as facenet-pytorch's ``detect_face`` does (same float steps)."""
    scales: list[float] = []
    scale, side = 12.0 / min_face_size, short_side * 12.0 / min_face_size
    while side >= PNET_CELL:
        scales.append(scale)
        scale, side = scale * factor, side * factor
    return scales


def roi_scales(face_side: float, short_side: int, default_size: float = 20.0, factor: float = 0.709) -> list[float]:
    """The default pyramid's levels at which a face ``face_side`` px wide yields full MTCNN's final box.

    A level's PNet window covers 12 / scale frame pixels. Measured on the talking-face and CREMA-D
    frames, the level whose proposal wins ONet's final NMS has a window of 0.33-1.8 x the box side.
    """
    low, high = ROI_WINDOW_SIDES
    return [s for s in pyramid_scales(default_size, short_side, factor) if low <= PNET_CELL / s / face_side <= high]


def search_region(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    """Where a face seen at ``box`` in a neighbouring frame can be: the box grown by ``ROI_MARGIN_SIDES``
    of its longer side on every side, clipped to the frame."""
    x1, y1, x2, y2 = box[:4]
    grow = ROI_MARGIN_SIDES * max(x2 - x1, y2 - y1)
    return max(0.0, x1 - grow), max(0.0, y1 - grow), min(float(width), x2 + grow), min(float(height), y2 + grow)


def level_span(size: int, scaled: int, low: float, high: float) -> tuple[int, int]:
    """Pixels [first, stop) of a pyramid level (``size`` frame px resampled to ``scaled``) covering
    frame pixels [low, high), such that PNet computes there exactly what it computes on the whole level.

    ``first`` is even, so PNet's stride-2 cells fall where they fall on the whole level; the span is
    even unless it reaches the level's end, so ceil-mode pooling adds no cell the whole level lacks;
    it holds at least one 12 px window where the level does.
    """
    first = min(max(0, int(low * scaled / size)), max(0, scaled - PNET_CELL)) // 2 * 2
    stop = min(max(int(np.ceil(high * scaled / size)), first + PNET_CELL), scaled)
    if stop < scaled and (stop - first) % 2:
        stop += 1
    return first, stop


def area_bins(size: int, scaled: int, first: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame pixels [start, end) averaged into each level pixel in [first, stop): torch's "area"
    resampling (adaptive average pooling) bins, in its integer arithmetic."""
    level = np.arange(first, stop)
    return (level * size) // scaled, ((level + 1) * size + scaled - 1) // scaled


@dataclass(frozen=True)
class _LevelCrop:
    """PNet's input for one search at one pyramid level, and where it lies in PNet's output on the level."""

    search: int
    scale: float
    pixels: torch.Tensor  # 3 x rows x cols, normalised as detect_face normalises
    cell_row: int  # first PNet output cell, counted on the whole level
    cell_col: int


def level_crops(
    rgb: np.ndarray, scales: Sequence[float], region: Sequence[float] | None
) -> list[tuple[float, torch.Tensor, int, int]]:
    """Each level's pixels over ``region`` (x1, y1, x2, y2; None: the whole frame), equal to the same
    pixels of ``imresample`` of the whole frame, with the level's first PNet cell row and column.

    One integral image over the union of the levels' frame pixels gives every bin sum; far cheaper
    than resampling whole frames for a small region.
    """
    height, width = rgb.shape[:2]
    x1, y1, x2, y2 = region if region is not None else (0, 0, width, height)
    levels = []
    for scale in scales:
        scaled_h, scaled_w = int(height * scale + 1), int(width * scale + 1)
        rows, cols = level_span(height, scaled_h, y1, y2), level_span(width, scaled_w, x1, x2)
        levels.append((scale, rows, cols, area_bins(height, scaled_h, *rows), area_bins(width, scaled_w, *cols)))
    top, bottom = min(lv[3][0][0] for lv in levels), max(lv[3][1][-1] for lv in levels)
    left, right = min(lv[4][0][0] for lv in levels), max(lv[4][1][-1] for lv in levels)
    integral = np.zeros((bottom - top + 1, right - left + 1, 3), dtype=np.int32)
    np.cumsum(rgb[top:bottom, left:right], axis=0, dtype=np.int32, out=integral[1:, 1:])
    np.cumsum(integral[1:, 1:], axis=1, out=integral[1:, 1:])
    crops = []
    for scale, rows, cols, (row_start, row_end), (col_start, col_end) in levels:
        rs, re, cs, ce = row_start - top, row_end - top, col_start - left, col_end - left
        sums = integral[np.ix_(re, ce)] - integral[np.ix_(rs, ce)] - integral[np.ix_(re, cs)] + integral[np.ix_(rs, cs)]
        mean = sums.astype(np.float32) / (re - rs).astype(np.float32)[:, None, None]
        mean /= (ce - cs).astype(np.float32)[None, :, None]
        pixels = torch.from_numpy((mean - 127.5) * 0.0078125).permute(2, 0, 1)
        crops.append((scale, pixels, rows[0] // 2, cols[0] // 2))
    return crops


def pnet_proposals(
    reg: torch.Tensor, probs: torch.Tensor, scale: float, threshold: float, first_cells: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """facenet-pytorch's ``generateBoundingBox`` for a batch of crops of one pyramid level, crop k's
    output placed at ``first_cells[k]`` (x, y cell) of the whole level: per proposal the frame box,
    score and PNet regression (k x 9), and the crop it came from. The same arithmetic as placing each
    crop's output in a zero tensor of the whole level, without allocating and scanning that level.
    """
    mask = probs >= threshold
    found = mask.nonzero()
    crop_inds = found[:, 0]
    cells = found[:, 1:].to(reg.dtype).flip(1) + first_cells[crop_inds]
    top_left = ((2 * cells + 1) / scale).floor()  # PNet: stride 2, 12 px window
    bottom_right = ((2 * cells + PNET_CELL - 1 + 1) / scale).floor()
    return torch.cat([top_left, bottom_right, probs[mask][:, None], reg.permute(0, 2, 3, 1)[mask]], dim=1), crop_inds


def _resampled_boxes(
    frames: Sequence[np.ndarray], boxes: torch.Tensor, image_inds: torch.Tensor, side: int
) -> torch.Tensor:
    """The boxes' frame pixels (clipped as ``pad`` clips them) resampled to side x side, normalised:
    RNet's and ONet's input as detect_face builds it."""
    height, width = frames[0].shape[:2]
    y, ey, x, ex = pad(boxes, width, height)
    patches = []
    for k in range(len(y)):
        patch = np.ascontiguousarray(frames[int(image_inds[k])][y[k] - 1 : ey[k], x[k] - 1 : ex[k]])
        patches.append(imresample(torch.from_numpy(patch).permute(2, 0, 1)[None].float(), (side, side)))
    return ((torch.cat(patches) - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last)


Found = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes k x 4, probabilities k, landmarks k x 5 x 2


class FaceDetector:
    """One MTCNN (weights shipped in facenet-pytorch, loaded once) keeping every face of a frame.

    Thread-safe: calls share only the networks, which they do not modify.
    """

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device or resolve_device()
        self._mtcnn = MTCNN(keep_all=True, device=self.device).to(memory_format=torch.channels_last)

    def _cascade(
        self, frames: Sequence[np.ndarray], scales: Sequence[Sequence[float]], regions: Sequence[Sequence[float] | None]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """facenet-pytorch's ``detect_face`` on same-size frames, PNet restricted per frame to
        ``scales`` over ``regions`` (None: the whole frame). Per frame: boxes k x 5 (with probability),
        landmarks k x 5 x 2. Same thresholds, NMS settings and order of operations as ``detect_face``.
        """
        net = self._mtcnn
        thresholds = net.thresholds
        by_shape: dict[tuple, list[_LevelCrop]] = {}
        for search, (rgb, frame_scales, region) in enumerate(zip(frames, scales, regions)):
            if frame_scales:
                for scale, pixels, cell_row, cell_col in level_crops(rgb, frame_scales, region):
                    by_shape.setdefault((scale, *pixels.shape), []).append(
                        _LevelCrop(search, scale, pixels, cell_row, cell_col)
                    )
        none = [(np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)) for _ in frames]
        proposals, owners = [], []
        with torch.inference_mode():
            for crops in by_shape.values():
                batch = torch.stack([c.pixels for c in crops]).to(self.device, memory_format=torch.channels_last)
                reg, probs = net.pnet(batch)
                first_cells = torch.tensor([[c.cell_col, c.cell_row] for c in crops], dtype=reg.dtype, device=reg.device)
                boxes, crop_inds = pnet_proposals(reg, probs[:, 1], crops[0].scale, thresholds[0], first_cells)
                owner = torch.tensor([c.search for c in crops], dtype=torch.long, device=boxes.device)[crop_inds]
                pick = batched_nms(boxes[:, :4], boxes[:, 4], owner, 0.5)  # per search: each has one crop here
                proposals.append(boxes[pick])
                owners.append(owner[pick])
            if not proposals or sum(len(p) for p in proposals) == 0:
                return none
            boxes, image_inds = torch.cat(proposals), torch.cat(owners)
            pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
            boxes, image_inds = boxes[pick], image_inds[pick]
            width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            boxes = torch.stack(
                [
                    boxes[:, 0] + boxes[:, 5] * width,
                    boxes[:, 1] + boxes[:, 6] * height,
                    boxes[:, 2] + boxes[:, 7] * width,
                    boxes[:, 3] + boxes[:, 8] * height,
                    boxes[:, 4],
                ],
                dim=1,
            )
            boxes = rerec(boxes)

            reg, probs = net.rnet(_resampled_boxes(frames, boxes, image_inds, 24))
            score = probs[:, 1]
            passed = score > thresholds[1]
            boxes = torch.cat((boxes[passed, :4], score[passed, None]), dim=1)
            image_inds, reg = image_inds[passed], reg[passed]
            pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
            if len(pick) == 0:
                return none
            boxes = rerec(bbreg(boxes[pick], reg[pick]))
            image_inds = image_inds[pick]

            reg, points, probs = net.onet(_resampled_boxes(frames, boxes, image_inds, 48))
            score = probs[:, 1]
            passed = score > thresholds[2]
            boxes = torch.cat((boxes[passed, :4], score[passed, None]), dim=1)
            image_inds, reg, points = image_inds[passed], reg[passed], points[passed]
            box_w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
            box_h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
            points = torch.stack(
                (box_w * points[:, :5] + boxes[:, :1] - 1, box_h * points[:, 5:] + boxes[:, 1:2] - 1), dim=2
            )
            boxes = bbreg(boxes, reg)
            pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
        boxes, image_inds, points = boxes[pick].cpu().numpy(), image_inds[pick].cpu().numpy(), points[pick].cpu().numpy()
        return [(boxes[image_inds == n], points[image_inds == n]) for n in range(len(frames))]

    def find_faces(
        self, frames: Sequence[np.ndarray], min_probability: float, min_face_share: float,
        near: Sequence[Sequence[float] | None] | None = None,
    ) -> list[Found]:
        """Every face of each frame at or above ``min_probability``.

        ``near[i]`` (a box) restricts frame i's search to where that face can be (``search_region``,
        ``roi_scales``); None, or no ``near``, searches the whole frame for faces of at least
        ``min_face_share`` of its shorter side.
        """
        if not frames:
            return []
        height, width = frames[0].shape[:2]
        if any(rgb.shape[:2] != (height, width) for rgb in frames):
            raise FaceError("frames searched together must have one size; detect each clip's frames apart")
        short_side = min(height, width)
        net = self._mtcnn
        min_face_size = pyramid_min_face_size(min_face_share, short_side, net.min_face_size, net.factor)
        whole = pyramid_scales(min_face_size, short_side, net.factor)
        scales, regions = [], []
        for box in near or [None] * len(frames):
            if box is None:
                scales.append(whole)
                regions.append(None)
            else:
                side = max(box[2] - box[0], box[3] - box[1])
                scales.append(roi_scales(side, short_side, net.min_face_size, net.factor))
                regions.append(search_region(box, width, height))
        found = []
        for boxes, points in self._cascade(frames, scales, regions):
            keep = boxes[:, 4] >= min_probability
            found.append((boxes[keep, :4].astype(np.float64), boxes[keep, 4].astype(np.float64), points[keep]))
        return found

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
        for index, faces in zip(order, found):
            tracks[index] = _speaker_track(index, faces, previous_box, frames[index].shape, multiple_faces=False)
            previous_box = None if tracks[index].no_face else tracks[index].box
        with_face = [i for i in order if not tracks[i].no_face]
        near = [tracks[i].box for i in with_face]
        refound = self.find_faces([frames[i] for i in with_face], params.min_probability, params.min_face_share, near)
        for index, box, faces in zip(with_face, near, refound):
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
            for index, image, faces in zip(order, images, found)
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
        box=tuple(float(v) for v in boxes[chosen]),
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
    path: Path, info: MediaInfo, segments: Sequence[Segment], detector: FaceDetector, params: FaceParams
) -> ClipFaces:
    """Face tracks and crops of every frame the segments need, and each segment's frame indices.

    The video is decoded once, as a stream; full frames are held only back to the last key frame.
    """
    if not info.has_video or not info.video_fps or not info.duration_s:
        raise FaceError(f"{path.name}: no video stream with a known rate and duration; faces need one")
    width, height, fps = info.video_width, info.video_height, info.video_fps
    n_frames = max(1, int(round(info.duration_s * fps)))
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

    for frame in demux.iter_video_frames(path, fps, width, height, wanted=needed):
        held[frame.index] = frame.rgb
        if frame.index in key_set:
            resolve(frame.index)
    if held:
        resolve(max(held))  # the stream ended before the last key frame (duration rounding)
    if not tracks:
        raise FaceError(f"{path.name}: no video frame could be decoded")
    last_frame = max(tracks)
    segment_frames = [[min(i, last_frame) for i in frames] for frames in segment_frames]
    return ClipFaces(tracks=tracks, crops=crops, segment_frames=segment_frames)
