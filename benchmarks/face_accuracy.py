"""Fast face tracking (tasks.video.faces) against per-frame full-resolution MTCNN with default settings.

For every talking-face and CREMA-D video: segments of SegmentParams' length and stride cover the whole
clip (the worst case: the VAD keeps everything, so every frame is needed). The fast path runs on the
whole clip and is timed (decoding, detection, interpolation and crops): wall time and CPU time (all
threads and ffmpeg; other work on a shared machine inflates wall time, hardly CPU time), per second of
video and per frame, and the part of it spent inside MTCNN's three networks ("nets"). Torch runs one
thread, as in the pipeline, where two clips share two cores. Several ``--detect-every`` values are
compared on one reference.

The reference, MTCNN(keep_all=True) with its defaults on every frame at full resolution, runs on ALL
frames of the first ``--seconds`` of each clip to bound its time (it costs 40-200 ms per frame);
the same speaker rule and probability floor pick its box. A frame agrees when both find the face with
IoU >= 0.9, or neither finds one. Two figures describe the reference itself: how often its boxes on
consecutive frames differ by IoU < 0.9 (MTCNN's own jitter), and how many frames agree when its own
boxes on every k-th frame are interpolated between, the ceiling of any tracker that runs MTCNN on
every k-th frame only; and what avemo's own gap rule (bisection where two boxes disagree) reaches on
MTCNN's own boxes, with the share of frames it must run the cascade on.

    .venv/bin/python benchmarks/face_accuracy.py [--seconds 4] [--clips PATTERN] [--detect-every 2,5]

Data: $AVEMO_SHARED_DATA, else ../shared/data next to the repository.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch
from facenet_pytorch import MTCNN

from avemo.config import FaceParams, SegmentParams
from tasks.demux import iter_video_frames
from tasks.probe import probe
from tasks.video.faces import FaceDetector, choose_speaker, detect_clip_faces, iou

REPO = Path(__file__).resolve().parents[1]
AGREE_IOU = 0.9


def cpu_seconds() -> float:
    """CPU time of this process (all torch threads) and of its finished children (ffmpeg)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class Span:
    def __init__(self, t_begin: float, t_end: float) -> None:
        self.t_begin, self.t_end = t_begin, t_end


def covering_segments(duration_s: float, segment: SegmentParams) -> list[Span]:
    stride_s = segment.stride_frames * segment.hop_ms / 1000.0
    starts = np.arange(0.0, max(duration_s - segment.duration_s, 0.0) + 1e-9, stride_s)
    return [Span(float(t), float(t) + segment.duration_s) for t in starts]


def reference_boxes(
    mtcnn: MTCNN, path: Path, fps: float, width: int, height: int, frames: list[int], min_probability: float
) -> tuple[dict[int, tuple[float, ...] | None], float]:
    """Per frame, the speaker's box by default full-resolution MTCNN (None: no face), and the seconds spent."""
    chosen: dict[int, tuple[float, ...] | None] = {}
    previous = None
    start = time.perf_counter()
    for frame in iter_video_frames(path, fps, width, height, wanted=frames):
        boxes, probs = mtcnn.detect(frame.rgb)
        if boxes is None or not (np.asarray(probs, dtype=float) >= min_probability).any():
            chosen[frame.index] = None
            continue
        probs = np.asarray(probs, dtype=float)
        boxes = np.asarray(boxes, dtype=float)[probs >= min_probability]
        previous = tuple(boxes[choose_speaker(boxes, probs[probs >= min_probability], previous)])
        chosen[frame.index] = previous
    return chosen, time.perf_counter() - start


class NetworkClock:
    """CPU-side seconds spent inside MTCNN's three networks (forward passes only), to separate the
    networks' own arithmetic from everything around them (resampling, NMS, Python)."""

    def __init__(self, detector: FaceDetector) -> None:
        self.seconds = 0.0
        for name in ("pnet", "rnet", "onet"):
            module = getattr(detector._mtcnn, name)
            module.forward = self._timed(module.forward)

    def _timed(self, forward):
        def timed(x):
            start = time.perf_counter()
            out = forward(x)
            self.seconds += time.perf_counter() - start
            return out

        return timed


def agrees(box: tuple[float, ...] | None, reference: tuple[float, ...] | None) -> bool:
    """Both find no face, or both find one with IoU >= AGREE_IOU."""
    if reference is None or box is None:
        return reference is None and box is None
    return iou(box, reference) >= AGREE_IOU


def key_positions(count: int, every: int) -> list[int]:
    """Positions 0, every, 2 every, ... of ``count`` sorted frames, and the last one."""
    positions = list(range(0, count, every))
    if positions[-1] != count - 1:
        positions.append(count - 1)
    return positions


def interpolated_agreement(
    reference: dict[int, tuple[float, ...] | None], frames: list[int], first: int, last: int
) -> int:
    """How many frames strictly between positions ``first`` and ``last`` of ``frames`` agree with the
    reference when its boxes at those two positions are interpolated onto them (no face at either end:
    only frames without a face between two without one agree)."""
    a, b = reference[frames[first]], reference[frames[last]]
    agree = 0
    for index in frames[first + 1 : last]:
        if a is None or b is None:
            agree += reference[index] is None and a is None and b is None
            continue
        w = (index - frames[first]) / (frames[last] - frames[first])
        agree += agrees(tuple((1.0 - w) * np.asarray(a) + w * np.asarray(b)), reference[index])
    return agree


def interpolation_bound(reference: dict[int, tuple[float, ...] | None], every: int) -> tuple[int, int]:
    """Frames agreeing, and frames compared, when the reference's OWN boxes on every ``every``-th frame
    are linearly interpolated onto the frames between: the most any tracker that runs MTCNN exactly on
    those frames and interpolates between them can reach, as MTCNN's box jitters from frame to frame."""
    frames = sorted(reference)
    positions = key_positions(len(frames), every)
    agree = sum(interpolated_agreement(reference, frames, a, b) for a, b in itertools.pairwise(positions))
    return agree + len(positions), len(frames)


def bisection_bound(reference: dict[int, tuple[float, ...] | None], every: int) -> tuple[int, int, int]:
    """Frames agreeing, frames compared and frames "detected" when tasks.video.faces' gap rule runs on the
    reference's OWN boxes: exact on every ``every``-th frame, interpolation between two frames whose
    boxes agree, else the middle frame taken exactly and each half treated the same way. What that rule
    can reach at best, and on how many frames it must run the cascade to get there."""
    frames = sorted(reference)
    positions = key_positions(len(frames), every)
    exact = set(positions)

    def fill(first: int, last: int) -> int:
        a, b = reference[frames[first]], reference[frames[last]]
        if last - first < 2:
            return 0
        if a is not None and b is not None and iou(a, b) >= AGREE_IOU:
            return interpolated_agreement(reference, frames, first, last)
        middle = (first + last) // 2
        exact.add(middle)
        return 1 + fill(first, middle) + fill(middle, last)

    agree = len(positions) + sum(fill(a, b) for a, b in itertools.pairwise(positions))
    return agree, len(frames), len(exact)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="reference on all frames of the first N s")
    parser.add_argument("--clips", default="*", help="glob on clip file names")
    parser.add_argument(
        "--detect-every", default=str(FaceParams().detect_every), help="one or several (2,3,5) key-frame spacings"
    )
    parser.add_argument("--min-face-share", type=float, default=FaceParams().min_face_share)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = Path(os.environ.get("AVEMO_SHARED_DATA", REPO.parent / "shared" / "data"))
    clips = sorted((data / "talking").glob(f"{args.clips}.mp4")) + sorted(
        (data / "cremad" / "VideoFlash").glob(f"{args.clips}.flv")
    )
    settings = [
        FaceParams(detect_every=int(k), min_face_share=args.min_face_share) for k in args.detect_every.split(",")
    ]
    segment = SegmentParams()
    print(f"torch threads {torch.get_num_threads()}, {settings[0]}")
    detector = FaceDetector(torch.device("cpu"))
    clock = NetworkClock(detector)
    reference = MTCNN(keep_all=True, device=torch.device("cpu"))
    keys = ["agree", "frames", "video_s", "video_frames", "fast_s", "fast_cpu", "net_s", "detected"]
    totals = {p.detect_every: dict.fromkeys(keys, 0.0) for p in settings}
    bound = {k: [0, 0] for k in (2, 3, 5)}
    bisection = {k: [0, 0, 0] for k in (5, 8, 16)}
    jitter = [0, 0]
    ref_totals = [0.0, 0.0]
    print(
        f"{'clip':46s} {'every':>5s} {'frames':>6s} {'IoU>=.9':>8s} {'fast s/s':>9s} {'cpu s/s':>8s} {'cpu ms/fr':>9s} "
        f"{'nets s/s':>8s} {'detected':>8s}"
    )
    for path in clips:
        info = probe(path)
        spans = covering_segments(info.duration_s, segment)
        ref: dict[int, tuple[float, ...] | None] | None = None
        for params in settings:
            start, start_cpu, start_net = time.perf_counter(), cpu_seconds(), clock.seconds
            faces = detect_clip_faces(path, info, spans, detector, params)
            fast_s, fast_cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
            net_s = clock.seconds - start_net
            compared = [i for i in sorted(faces.tracks) if i < args.seconds * info.video_fps]
            if ref is None:
                ref, ref_s = reference_boxes(
                    reference,
                    path,
                    info.video_fps,
                    info.video_width,
                    info.video_height,
                    compared,
                    params.min_probability,
                )
                ref_totals[0] += ref_s
                ref_totals[1] += len(ref) / info.video_fps
                for every, counts in bound.items():
                    agree, n = interpolation_bound(ref, every)
                    counts[0] += agree
                    counts[1] += n
                for every, counts in bisection.items():
                    for slot, value in enumerate(bisection_bound(ref, every)):
                        counts[slot] += value
                pairs = [(ref[i], ref[i + 1]) for i in sorted(ref) if i + 1 in ref and ref[i] and ref[i + 1]]
                jitter[0] += sum(iou(a, b) < AGREE_IOU for a, b in pairs)
                jitter[1] += len(pairs)
            agree = sum(agrees(None if faces.tracks[i].no_face else faces.tracks[i].box, box) for i, box in ref.items())
            detected = sum(t.detected for t in faces.tracks.values())
            print(
                f"{path.name:46s} {params.detect_every:5d} {len(ref):6d} {agree / len(ref):8.1%} "
                f"{fast_s / info.duration_s:9.4f} {fast_cpu / info.duration_s:8.4f} "
                f"{1000 * fast_cpu / len(faces.tracks):9.2f} {net_s / info.duration_s:8.4f} "
                f"{detected / len(faces.tracks):8.1%}",
                flush=True,
            )
            total = totals[params.detect_every]
            for key, value in zip(
                keys,
                (agree, len(ref), info.duration_s, len(faces.tracks), fast_s, fast_cpu, net_s, detected),
                strict=True,
            ):
                total[key] += value
    for every, total in totals.items():
        print(
            f"{'OVERALL':46s} {every:5d} {int(total['frames']):6d} {total['agree'] / total['frames']:8.1%} "
            f"{total['fast_s'] / total['video_s']:9.4f} {total['fast_cpu'] / total['video_s']:8.4f} "
            f"{1000 * total['fast_cpu'] / total['video_frames']:9.2f} {total['net_s'] / total['video_s']:8.4f} "
            f"{total['detected'] / total['video_frames']:8.1%}"
        )
    print(f"reference MTCNN: {ref_totals[0] / ref_totals[1]:.3f} s per second of video")
    print(
        f"reference boxes of consecutive frames with IoU < {AGREE_IOU}: "
        f"{jitter[0] / max(jitter[1], 1):.1%} of {jitter[1]} pairs"
    )
    for every, (agree, n) in bound.items():
        print(
            f"reference's own boxes on every {every}. frame, interpolated between: "
            f"{agree / max(n, 1):.1%} of {n} frames agree"
        )
    for every, (agree, n, exact) in bisection.items():
        print(
            f"avemo's gap rule on the reference's own boxes, every {every}. frame: {agree / max(n, 1):.1%} agree, "
            f"the cascade on {exact / max(n, 1):.1%} of frames"
        )


if __name__ == "__main__":
    main()
