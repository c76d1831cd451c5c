"""MTCNN's cascade (facenet-pytorch's weights and arithmetic), optionally restricted to where a known face can be.

MTCNN is a local cascade (PNet proposals -> RNet -> ONet), so a face whose box B a neighbouring frame
gave is found again by the SAME cascade run only where it can be: PNet on the default pyramid's levels
whose 12 px window spans ``ROI_WINDOW_SIDES`` x B's side (the levels at which full MTCNN's final box
arises), on a crop of each level around B grown by ``ROI_MARGIN_SIDES``. The crop's pixels are computed
exactly as the whole level's (area resampling, PNet's stride-2 grid kept), so PNet's proposals there are
full MTCNN's; NMS, RNet, ONet and their thresholds are facenet-pytorch's own. The level pixels come from
one integral image of the region, which also gives RNet's and ONet's candidates inside it their pixels
(the same values torch's resampling gives, without another pass over the frame). A searched frame costs
~10-40 ms of CPU instead of 40-200 ms (one torch thread). The networks run in channels-last memory
layout: their max-pooling is several times faster that way on CPU.

facenet-pytorch's helpers (``imresample``, ``pad``, ``rerec``, ``bbreg``, the "Min" NMS) are written
here with the same arithmetic, and NMS is torchvision's compiled kernel loaded without torchvision's
Python package: importing either package costs about 2 s (torchvision imports ``torch._dynamo``), which
a one-clip ``avemo predict`` would pay before its work (tests/unit/tasks/video/test_mtcnn_helpers.py
checks each against the original).
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from avemo.device import resolve_device
from models.mtcnn import MIN_FACE_SIZE, PYRAMID_FACTOR, THRESHOLDS, MTCNNNets
from tasks.video import FaceError

ROI_MARGIN_SIDES = 1.0  # the search region: the last box grown by this many box sides on each side
ROI_WINDOW_SIDES = (0.3, 1.9)  # PNet levels searched: window 12 / scale within these x the box side


PNET_CELL = 12  # PNet's window, px at its level


@functools.cache
def _load_torchvision_ops() -> None:
    """Register torchvision's compiled operators (``torch.ops.torchvision.nms``) by loading its
    extension library as torchvision itself does, or, where that file is not found, by importing it."""
    spec = importlib.util.find_spec("torchvision")
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    for name in ("_C_stable", "_C"):
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            if folder is not None and (folder / f"{name}{suffix}").is_file():
                torch.ops.load_library(str(folder / f"{name}{suffix}"))
                return
    import torchvision  # noqa: F401  (registers the operators)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision's ``batched_nms``: NMS within each ``idxs`` group, kept indices by decreasing score."""
    _load_torchvision_ops()
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if boxes.numel() > (4000 if boxes.device.type == "cpu" else 100_000):
        keep_mask = torch.zeros_like(scores, dtype=torch.bool)
        for group in torch.unique(idxs):
            members = torch.where(idxs == group)[0]
            keep_mask[members[torch.ops.torchvision.nms(boxes[members], scores[members], iou_threshold)]] = True
        kept = torch.where(keep_mask)[0]
        return kept[scores[kept].sort(descending=True)[1]]
    offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))  # groups apart: no overlap between them
    return torch.ops.torchvision.nms(boxes + offsets[:, None], scores, iou_threshold)


def batched_nms_min(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, threshold: float) -> torch.Tensor:
    """facenet-pytorch's ``batched_nms_numpy(..., "Min")``: overlap over the smaller box's area, +1 px
    box sides, picks by decreasing score."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    shifted = (boxes + (idxs.to(boxes) * (boxes.max() + 1))[:, None]).cpu().numpy()
    x1, y1, x2, y2 = (shifted[:, k].copy() for k in range(4))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores.cpu().numpy())
    picks = []
    while order.size > 0:
        best, rest = order[-1], order[:-1]
        width = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        height = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        picks.append(best)
        order = rest[width * height / np.minimum(area[best], area[rest]) <= threshold]
    return torch.as_tensor(np.array(picks, dtype=np.int64), device=boxes.device)


def imresample(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """detect_face's resampling: torch's "area" interpolation."""
    return F.interpolate(image, size=size, mode="area")


def pad(boxes: torch.Tensor, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boxes truncated to integers and clipped to the frame (1-based, inclusive): y, ey, x, ex."""
    x, y, ex, ey = boxes.trunc().int().cpu().numpy()[:, :4].T.copy()
    x[x < 1], y[y < 1] = 1, 1
    ex[ex > width], ey[ey > height] = width, height
    return y, ey, x, ex


def rerec(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes made square on their longer side, about the same centre (in place, as detect_face)."""
    height, width = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    side = torch.max(width, height)
    boxes[:, 0] = boxes[:, 0] + width * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + height * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side.repeat(2, 1).permute(1, 0)
    return boxes


def bbreg(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """A network's box regression applied to ``boxes`` (in place, as detect_face), +1 px sides."""
    width, height = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    moved = [boxes[:, 0] + reg[:, 0] * width, boxes[:, 1] + reg[:, 1] * height]
    moved += [boxes[:, 2] + reg[:, 2] * width, boxes[:, 3] + reg[:, 3] * height]
    boxes[:, :4] = torch.stack(moved).permute(1, 0)
    return boxes


def pyramid_min_face_size(
    min_face_share: float, short_side: int, default_size: float = MIN_FACE_SIZE, factor: float = PYRAMID_FACTOR
) -> float:
    """MTCNN's smallest face for ``min_face_share`` of ``short_side``, snapped down onto the default pyramid.

    MTCNN scales the frame by 12 / min_face_size x factor^k; with min_face_size = default_size /
    factor^k the remaining scales are exactly the default detector's coarse ones.
    """
    wanted = min_face_share * short_side
    steps = max(0, int(np.floor(np.log(wanted / default_size) / np.log(1.0 / factor) + 1e-9)))
    return default_size / factor**steps


def pyramid_scales(min_face_size: float, short_side: int, factor: float = PYRAMID_FACTOR) -> list[float]:
    """MTCNN's image pyramid, computed as facenet-pytorch's ``detect_face`` does (same float steps)."""
    scales: list[float] = []
    scale, side = 12.0 / min_face_size, short_side * 12.0 / min_face_size
    while side >= PNET_CELL:
        scales.append(scale)
        scale, side = scale * factor, side * factor
    return scales


def roi_scales(
    face_side: float, short_side: int, default_size: float = MIN_FACE_SIZE, factor: float = PYRAMID_FACTOR
) -> list[float]:
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


def area_bins(size: int | np.ndarray, scaled: int, first: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
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


@dataclass(frozen=True)
class RegionIntegral:
    """The integral image of a frame's rows [top, bottom) and columns [left, right): every area
    resampling bin sum inside it in four look-ups, in exact integers."""

    top: int
    left: int
    table: np.ndarray  # (rows + 1) x (cols + 1) x 3 int32, zero first row and column

    @classmethod
    def of(cls, rgb: np.ndarray, top: int, bottom: int, left: int, right: int) -> RegionIntegral:
        table = np.zeros((bottom - top + 1, right - left + 1, 3), dtype=np.int32)
        table[1:, 1:] = rgb[top:bottom, left:right]
        for row in range(2, len(table)):  # row by row: 3x faster than np.cumsum down the rows
            np.add(table[row], table[row - 1], out=table[row])
        np.cumsum(table[1:, 1:], axis=1, out=table[1:, 1:])
        return cls(top, left, table)

    def covers(self, top: int, bottom: int, left: int, right: int) -> bool:
        rows, cols = self.table.shape[0] - 1, self.table.shape[1] - 1
        return self.top <= top and bottom <= self.top + rows and self.left <= left and right <= self.left + cols

    def means(
        self, row_start: np.ndarray, row_end: np.ndarray, col_start: np.ndarray, col_end: np.ndarray
    ) -> np.ndarray:
        """Mean of each bin, frame rows [row_start, row_end) x columns [col_start, col_end) (broadcast as
        ``np.ix_`` would, a leading batch axis allowed), float32 (..., rows, cols, 3): torch's "area"
        resampling, which sums in float (exact for these integers) and divides by the bin's height and
        then its width."""
        rs, re = row_start - self.top, row_end - self.top
        cs, ce = col_start - self.left, col_end - self.left
        t = self.table
        if rs.ndim == 1:  # one grid: whole rows first (contiguous copies), 4x faster than four 2-D gathers
            rows = np.take(t, re, axis=0) - np.take(t, rs, axis=0)
            sums = np.take(rows, ce, axis=1) - np.take(rows, cs, axis=1)
        else:
            rows_s, rows_e, cols_s, cols_e = rs[..., :, None], re[..., :, None], cs[..., None, :], ce[..., None, :]
            sums = t[rows_e, cols_e] - t[rows_s, cols_e] - t[rows_e, cols_s] + t[rows_s, cols_s]
        mean = sums.astype(np.float32) / (re - rs).astype(np.float32)[..., :, None, None]
        mean /= (ce - cs).astype(np.float32)[..., None, :, None]
        return mean


def level_crops(
    rgb: np.ndarray, scales: Sequence[float], region: Sequence[float] | None
) -> tuple[list[tuple[float, torch.Tensor, int, int]], RegionIntegral]:
    """Each level's pixels over ``region`` (x1, y1, x2, y2; None: the whole frame), equal to the same
    pixels of ``imresample`` of the whole frame, with the level's first PNet cell row and column; and the
    integral image they came from, which RNet's and ONet's candidates inside it reuse.

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
    integral = RegionIntegral.of(rgb, top, bottom, left, right)
    crops = []
    for scale, rows, cols, row_bins, col_bins in levels:
        mean = integral.means(*row_bins, *col_bins)
        pixels = torch.from_numpy((mean - 127.5) * 0.0078125).permute(2, 0, 1)
        crops.append((scale, pixels, rows[0] // 2, cols[0] // 2))
    return crops, integral


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
    frames: Sequence[np.ndarray],
    boxes: torch.Tensor,
    image_inds: torch.Tensor,
    side: int,
    integrals: Sequence[RegionIntegral | None],
) -> torch.Tensor:
    """The boxes' frame pixels (clipped as ``pad`` clips them) resampled to side x side, normalised:
    RNet's and ONet's input as detect_face builds it. A box inside its frame's PNet integral image is
    resampled from it (the same values, no pass over its pixels); others as detect_face does."""
    height, width = frames[0].shape[:2]
    y, ey, x, ex = pad(boxes, width, height)
    patches = np.empty((len(y), side, side, 3), dtype=np.float32)
    owners = image_inds.cpu().numpy()
    for n, integral in enumerate(integrals):
        mine = np.flatnonzero(owners == n)
        inside = [k for k in mine if integral is not None and integral.covers(y[k] - 1, ey[k], x[k] - 1, ex[k])]
        for k in set(mine) - set(inside):
            patch = np.ascontiguousarray(frames[n][y[k] - 1 : ey[k], x[k] - 1 : ex[k]])
            pixels = imresample(torch.from_numpy(patch).permute(2, 0, 1)[None].float(), (side, side))
            patches[k] = pixels[0].permute(1, 2, 0).numpy()
        if inside:
            assert integral is not None
            chosen = np.asarray(inside)
            rows, cols = (ey[chosen] - y[chosen] + 1)[:, None], (ex[chosen] - x[chosen] + 1)[:, None]
            top, left = (y[chosen] - 1)[:, None], (x[chosen] - 1)[:, None]
            row_start, row_end = area_bins(rows, side, 0, side)  # per candidate (rows broadcast)
            col_start, col_end = area_bins(cols, side, 0, side)
            patches[chosen] = integral.means(top + row_start, top + row_end, left + col_start, left + col_end)
    pixels = torch.from_numpy((patches - 127.5) * 0.0078125).permute(0, 3, 1, 2)
    return pixels.to(boxes.device).contiguous(memory_format=torch.channels_last)


Found = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes k x 4, probabilities k, landmarks k x 5 x 2


class MTCNNCascade:
    """One MTCNN (weights shipped in facenet-pytorch, loaded once) keeping every face of a frame, its
    PNet optionally restricted to the region and pyramid levels where a known face can be."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device or resolve_device()
        self._mtcnn = MTCNNNets().to(self.device).to(memory_format=torch.channels_last)

    def _cascade(
        self, frames: Sequence[np.ndarray], scales: Sequence[Sequence[float]], regions: Sequence[Sequence[float] | None]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """facenet-pytorch's ``detect_face`` on same-size frames, PNet restricted per frame to
        ``scales`` over ``regions`` (None: the whole frame). Per frame: boxes k x 5 (with probability),
        landmarks k x 5 x 2. Same thresholds, NMS settings and order of operations as ``detect_face``.
        """
        none = [(np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)) for _ in frames]
        with torch.inference_mode():
            integrals: list[RegionIntegral | None] = [None] * len(frames)
            proposed = self._pnet(frames, scales, regions, integrals)
            if proposed is None:
                return none
            refined = self._rnet(frames, *proposed, integrals)
            if refined is None:
                return none
            boxes, image_inds, points = self._onet(frames, *refined, integrals)
        return [(boxes[image_inds == n], points[image_inds == n]) for n in range(len(frames))]

    def _pnet(
        self,
        frames: Sequence[np.ndarray],
        scales: Sequence[Sequence[float]],
        regions: Sequence[Sequence[float] | None],
        integrals: list[RegionIntegral | None],
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Stage 1: PNet's proposals on each frame's levels (crops of equal shape batched), NMS per level
        and then per frame, PNet's regression applied: boxes k x 5 and the frame of each, or None.
        Fills ``integrals`` with each frame's integral image, for the next stages."""
        net = self._mtcnn
        by_shape: dict[tuple, list[_LevelCrop]] = {}
        for search, (rgb, frame_scales, region) in enumerate(zip(frames, scales, regions, strict=True)):
            if frame_scales:
                levels, integrals[search] = level_crops(rgb, frame_scales, region)
                for scale, pixels, cell_row, cell_col in levels:
                    by_shape.setdefault((scale, *pixels.shape), []).append(
                        _LevelCrop(search, scale, pixels, cell_row, cell_col)
                    )
        proposals, owners = [], []
        for crops in by_shape.values():
            batch = torch.stack([c.pixels for c in crops]).to(self.device, memory_format=torch.channels_last)
            reg, probs = net.pnet(batch)
            first_cells = torch.tensor([[c.cell_col, c.cell_row] for c in crops], dtype=reg.dtype, device=reg.device)
            boxes, crop_inds = pnet_proposals(reg, probs[:, 1], crops[0].scale, THRESHOLDS[0], first_cells)
            owner = torch.tensor([c.search for c in crops], dtype=torch.long, device=boxes.device)[crop_inds]
            pick = batched_nms(boxes[:, :4], boxes[:, 4], owner, 0.5)  # per search: each has one crop here
            proposals.append(boxes[pick])
            owners.append(owner[pick])
        if not proposals or sum(len(p) for p in proposals) == 0:
            return None
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
        return rerec(boxes), image_inds

    def _rnet(
        self,
        frames: Sequence[np.ndarray],
        boxes: torch.Tensor,
        image_inds: torch.Tensor,
        integrals: Sequence[RegionIntegral | None],
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Stage 2: RNet scores and regresses the proposals; NMS per frame. None when none passes."""
        reg, probs = self._mtcnn.rnet(_resampled_boxes(frames, boxes, image_inds, 24, integrals))
        score = probs[:, 1]
        passed = score > THRESHOLDS[1]
        boxes = torch.cat((boxes[passed, :4], score[passed, None]), dim=1)
        image_inds, reg = image_inds[passed], reg[passed]
        pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        if len(pick) == 0:
            return None
        return rerec(bbreg(boxes[pick], reg[pick])), image_inds[pick]

    def _onet(
        self,
        frames: Sequence[np.ndarray],
        boxes: torch.Tensor,
        image_inds: torch.Tensor,
        integrals: Sequence[RegionIntegral | None],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stage 3: ONet's final boxes and landmarks, NMS by the smaller box's overlap ("Min")."""
        reg, points, probs = self._mtcnn.onet(_resampled_boxes(frames, boxes, image_inds, 48, integrals))
        score = probs[:, 1]
        passed = score > THRESHOLDS[2]
        boxes = torch.cat((boxes[passed, :4], score[passed, None]), dim=1)
        image_inds, reg, points = image_inds[passed], reg[passed], points[passed]
        box_w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        box_h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        points = torch.stack(
            (box_w * points[:, :5] + boxes[:, :1] - 1, box_h * points[:, 5:] + boxes[:, 1:2] - 1), dim=2
        )
        boxes = bbreg(boxes, reg)
        pick = batched_nms_min(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        return boxes[pick].cpu().numpy(), image_inds[pick].cpu().numpy(), points[pick].cpu().numpy()

    def find_faces(
        self,
        frames: Sequence[np.ndarray],
        min_probability: float,
        min_face_share: float,
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
        min_face_size = pyramid_min_face_size(min_face_share, short_side)
        whole = pyramid_scales(min_face_size, short_side)
        scales: list[list[float]] = []
        regions: list[tuple[float, float, float, float] | None] = []
        for box in near or [None] * len(frames):
            if box is None:
                scales.append(whole)
                regions.append(None)
            else:
                side = max(box[2] - box[0], box[3] - box[1])
                scales.append(roi_scales(side, short_side))
                regions.append(search_region(box, width, height))
        found = []
        for boxes, points in self._cascade(frames, scales, regions):
            keep = boxes[:, 4] >= min_probability
            found.append((boxes[keep, :4].astype(np.float64), boxes[keep, 4].astype(np.float64), points[keep]))
        return found
