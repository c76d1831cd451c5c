"""Training throughput of every registered model on this machine, through the real training loop.

    .venv/bin/python benchmarks/train.py [--clips N] [--models audio,avef_audio] [--paper-size]

Each model trains two epochs (no validation) with :func:`tasks.learning.fit.fit` on random features of the
real shapes of a fully voiced 2.0 s clip: 196 spectrogram frames x 200 bins and 60 face embeddings
of 304 dims for clip models; 5 segments of a 3 x 64 x 64 log-mel image and 16 face crops of
64 x 64 for segment models; the second epoch is timed, so one-off kernel set-up is left out. The
loop's cost (batching, padding, optimiser) is included.
Clip models report clips/s and the equivalent segments/s (5 segments per clip), so the two kinds
compare on one scale. AVEF models use the CPU widths of params.yaml (models.avef) unless ``--paper-size``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from avemo.config import TrainParams, load_params
from models.registry import MODELS
from tasks.learning.features import Features, SegmentArrays, task_labels
from tasks.learning.fit import fit
from tasks.learning.trained import TrainSettings

SPECTROGRAM_FRAMES, BINS, VIDEO_FRAMES, VIDEO_DIM = 196, 200, 60, 304
SEGMENTS_PER_CLIP, CROP, FACES = 5, 64, 16
EMOTIONS = ("anger", "happiness", "neutral", "sadness")


def clip_inputs(n_clips: int, rng: np.random.Generator) -> Features:
    ids = tuple(f"clip{i}" for i in range(n_clips))
    spectrograms = {c: rng.normal(size=(SPECTROGRAM_FRAMES, BINS)).astype(np.float32) for c in ids}
    embeddings = {c: rng.normal(size=(VIDEO_FRAMES, VIDEO_DIM)).astype(np.float32) for c in ids}
    emotions = tuple(EMOTIONS[i % len(EMOTIONS)] for i in range(n_clips))
    return Features(
        ids, ("s",) * n_clips, emotions, frozenset({"audio", "video"}), "clip", {}, spectrograms, embeddings
    )


def segment_inputs(n_clips: int, rng: np.random.Generator) -> Features:
    ids = tuple(f"clip{i}" for i in range(n_clips))
    n = n_clips * SEGMENTS_PER_CLIP
    arrays = SegmentArrays(
        clip_ids=np.repeat(np.asarray(ids, dtype=object), SEGMENTS_PER_CLIP),
        segments=np.tile(np.arange(SEGMENTS_PER_CLIP), n_clips),
        audio=rng.normal(size=(n, 3, 64, 64)).astype(np.float32),
        face_rows=np.arange(n * FACES).reshape(n, FACES),
        crops=rng.integers(0, 256, (n * FACES, CROP, CROP, 3), dtype=np.uint8),
    )
    emotions = tuple(EMOTIONS[i % len(EMOTIONS)] for i in range(n_clips))
    return Features(ids, ("s",) * n_clips, emotions, frozenset({"audio", "video"}), "segment", {}, segments=arrays)


def hyperparameters(name: str, paper_size: bool) -> dict:
    """The project's CPU widths (params.yaml's models.avef) for AVEF and its networks, unless paper-size."""
    if paper_size or MODELS[name].input_kind == "clip":
        return {}
    avef = load_params(REPO / "params.yaml").models.get("avef", {})
    keys = MODELS[name].hyperparameters
    return {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in avef.items()
        if key in keys and key != "dropout"
    }


def bench(name: str, n_clips: int, batch_size: int, paper_size: bool) -> dict:
    rng = np.random.default_rng(0)
    kind = MODELS[name].input_kind
    features = clip_inputs(n_clips, rng) if kind == "clip" else segment_inputs(n_clips, rng)
    labels = task_labels(features, "emotion")
    settings = TrainSettings.of(TrainParams(epochs=2, batch_size=batch_size, device="cpu"))
    hp = hyperparameters(name, paper_size)
    trained = fit(name, features, labels, list(features.clip_ids), [], settings, hyperparameters=hp)
    epoch = trained.history[-1].seconds
    params = sum(p.numel() for p in trained.model.parameters())
    clips_per_s = n_clips / epoch
    return {
        "model": name,
        "kind": kind,
        "params_m": params / 1e6,
        "clips_s": clips_per_s,
        "segments_s": clips_per_s * SEGMENTS_PER_CLIP,
        "epoch_s": epoch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=32, help="clips per model (segment models: 5 segments each)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated registry names")
    parser.add_argument("--paper-size", action="store_true", help="AVEF at the paper's widths (~100 M parameters)")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, {args.clips} clips, batch {args.batch_size}"
    )
    print(f"{'model':<22}{'kind':<9}{'params M':>9}{'clips/s':>9}{'segments/s':>12}{'epoch s':>9}")
    for name in args.models.split(","):
        row = bench(name, args.clips, args.batch_size, args.paper_size)
        print(
            f"{row['model']:<22}{row['kind']:<9}{row['params_m']:>9.2f}{row['clips_s']:>9.2f}"
            f"{row['segments_s']:>12.1f}{row['epoch_s']:>9.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
