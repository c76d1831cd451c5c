"""Fast face tracking (tasks.faces) against per-frame full-resolution MTCNN with default settings.

For every talking-face and CREMA-D video: segments of SegmentParams' length and stride cover the whole
clip (the worst case: the VAD keeps everything, so every frame is needed). The fast path runs on the
whole clip and is timed (decoding, detection, interpolation and crops): wall time and CPU time (all
threads and ffmpeg; other work on a shared machine inflates wall time, hardly CPU time), per second of
video and per frame. Torch runs one thread, as in the pipeline, where two clips share two cores.
The reference, MTCNN(keep_all=True) with its defaults on every frame at full resolution, runs on ALL
frames of the first ``--seconds`` of each clip to bound its time (it costs 40-200 ms per frame);
the same speaker rule and probability floor pick its box. A frame agrees when both find the face with
IoU >= 0.9, or neither finds one.

    .venv/bin/python benchmarks/face_accuracy.py [--seconds 4] [--clips PATTERN]

Data: $AVEMO_SHARED_DATA, else ../shared/data next to the repository.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch
from facenet_pytorch import MTCNN

from avemo.config import FaceParams, SegmentParams
from tasks.demux import iter_video_frames
from tasks.faces import FaceDetector, choose_speaker, detect_clip_faces, iou
from tasks.probe import probe

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="reference on all frames of the first N s")
    parser.add_argument("--clips", default="*", help="glob on clip file names")
    parser.add_argument("--detect-every", type=int, default=FaceParams().detect_every)
    parser.add_argument("--min-face-share", type=float, default=FaceParams().min_face_share)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = Path(os.environ.get("AVEMO_SHARED_DATA", REPO.parent / "shared" / "data"))
    clips = sorted((data / "talking").glob(f"{args.clips}.mp4")) + sorted(
        (data / "cremad" / "VideoFlash").glob(f"{args.clips}.flv")
    )
    params = FaceParams(detect_every=args.detect_every, min_face_share=args.min_face_share)
    segment = SegmentParams()
    print(f"torch threads {torch.get_num_threads()}, {params}")
    detector = FaceDetector(torch.device("cpu"))
    reference = MTCNN(keep_all=True, device=torch.device("cpu"))
    totals = dict.fromkeys(["agree", "frames", "video_s", "video_frames", "fast_s", "fast_cpu", "ref_s", "ref_video_s"], 0.0)
    print(
        f"{'clip':46s} {'frames':>6s} {'IoU>=.9':>8s} {'fast s/s':>9s} {'cpu s/s':>8s} {'cpu ms/fr':>9s} "
        f"{'ref s/s':>8s} {'detected':>8s}"
    )
    for path in clips:
        info = probe(path)
        start, start_cpu = time.perf_counter(), cpu_seconds()
        faces = detect_clip_faces(path, info, covering_segments(info.duration_s, segment), detector, params)
        fast_s, fast_cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
        compared = [i for i in sorted(faces.tracks) if i < args.seconds * info.video_fps]
        ref, ref_s = reference_boxes(
            reference, path, info.video_fps, info.video_width, info.video_height, compared, params.min_probability
        )
        agree = 0
        for index, ref_box in ref.items():
            track = faces.tracks[index]
            if ref_box is None:
                agree += track.no_face
            elif not track.no_face:
                agree += iou(track.box, ref_box) >= AGREE_IOU
        detected = np.mean([t.detected for t in faces.tracks.values()])
        ref_video_s = len(ref) / info.video_fps
        print(
            f"{path.name:46s} {len(ref):6d} {agree / len(ref):8.1%} {fast_s / info.duration_s:9.4f} "
            f"{fast_cpu / info.duration_s:8.4f} {1000 * fast_cpu / len(faces.tracks):9.2f} "
            f"{ref_s / ref_video_s:8.3f} {detected:8.1%}",
            flush=True,
        )
        totals["agree"] += agree
        totals["frames"] += len(ref)
        totals["video_s"] += info.duration_s
        totals["video_frames"] += len(faces.tracks)
        totals["fast_s"] += fast_s
        totals["fast_cpu"] += fast_cpu
        totals["ref_s"] += ref_s
        totals["ref_video_s"] += ref_video_s
    print(
        f"{'OVERALL':46s} {int(totals['frames']):6d} {totals['agree'] / totals['frames']:8.1%} "
        f"{totals['fast_s'] / totals['video_s']:9.4f} {totals['fast_cpu'] / totals['video_s']:8.4f} "
        f"{1000 * totals['fast_cpu'] / totals['video_frames']:9.2f} {totals['ref_s'] / totals['ref_video_s']:8.3f}"
    )


if __name__ == "__main__":
    main()
