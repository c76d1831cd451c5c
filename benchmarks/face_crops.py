"""Face tracking judged by what the models see: avemo's crops against per-frame full-resolution MTCNN's.

    .venv/bin/python benchmarks/face_crops.py [--clips PATTERN] [--seconds N] [--detect-every 5,10]
        [--decode-short-side native,360] [--threads N] [--out FILE]

For every talking-face and CREMA-D video of the shared data, segments cover the whole clip (every frame is
needed) and avemo's tracker (``tasks.video.faces.detect_clip_faces``, the params.yaml settings) gives a box
and a crop per frame. The reference runs facenet-pytorch's MTCNN (keep_all, its defaults) on every one of
those frames at full resolution, picks the speaker by avemo's own rule and probability floor, and crops the
same way (a whole-frame crop where it finds no face). Per frame: the IoU of the two boxes, and the cosine
similarity of the FER2013 network's expression embeddings of the two crops (what the models read). The
issue's yardstick: cosine >= 0.95 on >= 97 % of frames and IoU >= 0.8 on >= 97 % of frames. Beside them,
MTCNN's own frame-to-frame figures: the same two measures between the reference on consecutive frames.
``--seconds`` limits each clip to its first N seconds (the reference costs 40-200 ms a frame).
``--detect-every`` compares key-frame spacings against the one reference, each at every decoding size of
``--decode-short-side`` (``native``: full resolution, as the reference): for each, the two shares and
the tracker's own time (decoding, searches and crops, with ``--threads`` torch threads, the CPU count
unless given) over the video's duration, the speed those crops cost, with the part of it spent in
MTCNN's three networks (forward passes, timed by hooks) and the share of frames the cascade ran on; the
first setting is the one reported per clip. Writes
``benchmarks/results/face_crops.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from face_accuracy import covering_segments  # the same whole-clip segments as the box benchmark
from facenet_pytorch import MTCNN

from avemo.config import FaceFeatureParams, FaceParams, SegmentParams
from tasks.demux import iter_video_frames
from tasks.probe import probe
from tasks.video.embeddings import load_face_embedder
from tasks.video.faces import FaceDetector, choose_speaker, crop_face, detect_clip_faces, iou

REPO = Path(__file__).resolve().parents[1]
COSINE, IOU, SHARE = 0.95, 0.8, 0.97


def reference(mtcnn: MTCNN, path: Path, info, frames: list[int], params: FaceParams):
    """Per frame: MTCNN's speaker box (None: no face) and its crop."""
    boxes: dict[int, tuple[float, ...] | None] = {}
    crops: dict[int, np.ndarray] = {}
    previous = None
    for frame in iter_video_frames(path, info.video_fps, info.video_width, info.video_height, wanted=frames):
        found, probs = mtcnn.detect(frame.rgb)
        box = None
        if found is not None:
            probs = np.asarray(probs, dtype=float)
            keep = probs >= params.min_probability
            if keep.any():
                candidates = np.asarray(found, dtype=float)[keep]
                box = tuple(candidates[choose_speaker(candidates, probs[keep], previous)])
                previous = box
        boxes[frame.index] = box
        whole = (0.0, 0.0, float(info.video_width), float(info.video_height))
        crops[frame.index] = crop_face(frame.rgb, box or whole, params.margin if box else 0.0, params.crop_size)
    return boxes, crops


def cosines(embedder, a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    ea, eb = embedder(np.stack(a)), embedder(np.stack(b))
    ea /= np.linalg.norm(ea, axis=1, keepdims=True) + 1e-12
    eb /= np.linalg.norm(eb, axis=1, keepdims=True) + 1e-12
    return (ea * eb).sum(axis=1)


def box_ious(a: list[tuple[float, ...] | None], b: list[tuple[float, ...] | None]) -> np.ndarray:
    """IoU per frame; 1 where neither finds a face, 0 where one of the two does not."""
    return np.asarray(
        [1.0 if x is None and y is None else iou(x, y) if x and y else 0.0 for x, y in zip(a, b, strict=True)]
    )


def summary(values: np.ndarray, floor: float) -> dict[str, float]:
    return {
        "frames": int(values.size),
        f"share >= {floor}": float(np.mean(values >= floor)) if values.size else float("nan"),
        **{f"p{q}": float(np.percentile(values, q)) for q in (1, 5, 10, 50)},
    }


class NetworkClock:
    """Seconds spent inside MTCNN's three networks' forward passes (the cascade's irreducible part)."""

    def __init__(self, detector: FaceDetector) -> None:
        self.seconds, self._started = 0.0, 0.0
        for net in (detector._mtcnn.pnet, detector._mtcnn.rnet, detector._mtcnn.onet):
            net.register_forward_pre_hook(self._start)
            net.register_forward_hook(self._stop)

    def _start(self, *_: object) -> None:
        self._started = time.perf_counter()

    def _stop(self, *_: object) -> None:
        self.seconds += time.perf_counter() - self._started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", default="*", help="glob on clip file names")
    parser.add_argument("--seconds", type=float, help="only each clip's first N seconds")
    parser.add_argument("--detect-every", default=str(FaceParams().detect_every), help="key-frame spacings: 5,10,20")
    parser.add_argument(
        "--decode-short-side",
        default=str(FaceParams().decode_short_side or "native"),
        help="decoding sizes, each with every spacing: native,360,256",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (1: CPU-s per video s)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "face_crops.json")
    args = parser.parse_args()
    torch.set_num_threads(max(1, args.threads))
    data = Path(os.environ.get("AVEMO_SHARED_DATA", REPO.parent / "shared" / "data"))
    clips = sorted((data / "talking").glob(f"{args.clips}.mp4")) + sorted(
        (data / "cremad" / "VideoFlash").glob(f"{args.clips}.flv")
    )
    settings = [
        FaceParams(detect_every=int(k), decode_short_side=None if side == "native" else int(side))
        for k in args.detect_every.split(",")
        for side in args.decode_short_side.split(",")
    ]
    params, segment = settings[0], SegmentParams()
    detector, mtcnn = FaceDetector(torch.device("cpu")), MTCNN(keep_all=True, device=torch.device("cpu"))
    embedder = load_face_embedder(FaceFeatureParams(), torch.device("cpu"))
    clock = NetworkClock(detector)
    started = time.perf_counter()
    per_clip, own_cos, own_iou = [], [], []
    measured: list[dict[str, list]] = [
        {"cos": [], "iou": [], "seconds": [], "networks_s": [], "video_s": [], "detected": []} for _ in settings
    ]
    print(f"{'clip':44s} {'frames':>6s} {'cos>=.95':>8s} {'cos p5':>7s} {'IoU>=.8':>8s} {'IoU p5':>7s}")
    for path in clips:
        info = probe(path)
        boxes = crops = None
        for setting, into in zip(settings, measured, strict=True):
            tracked_at, networks_before = time.perf_counter(), clock.seconds
            faces = detect_clip_faces(path, info, covering_segments(info.duration_s, segment), detector, setting)
            into["seconds"].append(time.perf_counter() - tracked_at)
            into["networks_s"].append(clock.seconds - networks_before)
            into["detected"].append(np.array([faces.tracks[i].detected for i in sorted(faces.tracks)]))
            frames = [i for i in sorted(faces.tracks) if args.seconds is None or i < args.seconds * info.video_fps]
            into["video_s"].append(len(frames) / info.video_fps)
            if boxes is None or crops is None:
                boxes, crops = reference(mtcnn, path, info, frames, params)
            frames = [i for i in frames if i in boxes]
            tracked = [None if faces.tracks[i].no_face else tuple(faces.tracks[i].box) for i in frames]
            into["cos"].append(cosines(embedder, [faces.crops[i] for i in frames], [crops[i] for i in frames]))
            into["iou"].append(box_ious(tracked, [boxes[i] for i in frames]))
        assert boxes is not None and crops is not None
        reference_frames = sorted(boxes)
        pairs = [(i, i + 1) for i in reference_frames if i + 1 in boxes]
        own_cos.append(cosines(embedder, [crops[i] for i, _ in pairs], [crops[j] for _, j in pairs]))
        own_iou.append(box_ious([boxes[i] for i, _ in pairs], [boxes[j] for _, j in pairs]))
        cos, ious = measured[0]["cos"][-1], measured[0]["iou"][-1]
        per_clip.append({"clip": path.name, "cosine": summary(cos, COSINE), "iou": summary(ious, IOU)})
        print(
            f"{path.name:44s} {len(cos):6d} {np.mean(cos >= COSINE):8.1%} {np.percentile(cos, 5):7.3f} "
            f"{np.mean(ious >= IOU):8.1%} {np.percentile(ious, 5):7.3f}",
            flush=True,
        )
    spacings = [
        {
            "detect_every": setting.detect_every,
            "decode_short_side": setting.decode_short_side,
            "cosine": summary(np.concatenate(m["cos"]), COSINE),
            "iou": summary(np.concatenate(m["iou"]), IOU),
            "tracker_s": sum(m["seconds"]),
            "tracker_rtf": sum(m["seconds"]) / sum(m["video_s"]),
            "networks_rtf": sum(m["networks_s"]) / sum(m["video_s"]),
            "detected_share": float(np.concatenate(m["detected"]).mean()),
        }
        for setting, m in zip(settings, measured, strict=True)
    ]
    for row in spacings:
        print(
            f"detect_every {row['detect_every']:3d}, decode_short_side {row['decode_short_side']}: "
            f"cosine >= {COSINE} on {row['cosine'][f'share >= {COSINE}']:.1%}, "
            f"IoU >= {IOU} on {row['iou'][f'share >= {IOU}']:.1%}, tracker RTF {row['tracker_rtf']:.3f} "
            f"(MTCNN's networks {row['networks_rtf']:.3f}, on {row['detected_share']:.1%} of frames)"
        )
    result = {
        "command": " ".join(["benchmarks/face_crops.py", *sys.argv[1:]]),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "face_params": params.model_dump(mode="json"),
        "torch_threads": torch.get_num_threads(),
        "avemo_vs_reference": {"cosine": spacings[0]["cosine"], "iou": spacings[0]["iou"]},
        "reference_consecutive_frames": {
            "cosine": summary(np.concatenate(own_cos), COSINE),
            "iou": summary(np.concatenate(own_iou), IOU),
        },
        "targets": {},
        "detect_every": spacings,
        "per_clip": per_clip,
        "wall_s": time.perf_counter() - started,
    }
    overall = result["avemo_vs_reference"]
    result["targets"] = {
        f"cosine >= {COSINE} on >= {SHARE:.0%} of frames": overall["cosine"][f"share >= {COSINE}"] >= SHARE,
        f"IoU >= {IOU} on >= {SHARE:.0%} of frames": overall["iou"][f"share >= {IOU}"] >= SHARE,
    }
    print(
        json.dumps({k: result[k] for k in ("avemo_vs_reference", "reference_consecutive_frames", "targets")}, indent=1)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
