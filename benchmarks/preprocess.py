"""Real-time factor and peak memory of the whole preprocess, and of each stage, on real videos.

    .venv/bin/python benchmarks/preprocess.py [--corpus cremad|talking|all] [--workers N] [--clips GLOB]
                                              [--without-frontends] [--reference]

RTF = processing time / media duration (lower is better; 0.05 means 20x faster than real time). The
whole-preprocess figure is the flow's wall time from a cold cache; the per-stage figures are compute
time summed over clips (with several workers they add up to more than the wall time). Prefect's
temporary server start is reported apart: it is paid once per process, not per clip. Data come from
AVEMO_SHARED_DATA (default ../shared/data).

``--without-frontends`` also runs the preprocess with ``frontends: []`` (the papers' own log-mel and
spectrogram features, MTCNN's tracks and the face embeddings only: what the reference computes).
``--reference`` runs, on the same clips and in the same invocation, a per-frame pipeline written straight
from the AVEF paper: avemo's audio stage (demux, pre-emphasis, webrtcvad, 655 ms segments, log-mel), then
every frame of the video at full resolution through facenet-pytorch's MTCNN, the speaker's crop and the
FER2013 embedding of each crop, clip after clip with torch's default threads; and prints how many times
faster avemo's whole preprocess (start-up included) is.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from avemo import schemas
from avemo.config import PreprocessParams
from avemo.parquet_io import read_provenance, write_table
from avemo.provenance import provenance
from flows.preprocess import run_preprocess
from tasks.corpora.manifest import build_manifest, manifest_table

CORPORA = {"cremad": ("cremad", "cremad"), "talking": ("talking", "csv")}


def _placeholder_labels(folder: Path, work: Path) -> Path:
    """The talking videos carry no labels; a CSV beside them with a placeholder label lets ingest read them."""
    lines = ["path,speaker,label"] + [f"{p.name},{p.stem.split('_')[0]},neutral" for p in sorted(folder.glob("*.mp4"))]
    labels = work / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    return labels


def manifest_rows(name: str, data: Path, work: Path, workers: int, clips: str) -> list:
    folder, fmt = CORPORA[name]
    corpus = data / folder
    labels = _placeholder_labels(corpus, work) if fmt == "csv" else None
    rows, _ = build_manifest(corpus, fmt, workers=workers, csv_path=labels)
    return [r for r in rows if any(fnmatch.fnmatch(Path(r.path).name, glob) for glob in clips.split(","))]


def bench(name: str, data: Path, work: Path, workers: int, rows: list, frontends: list[str] | None) -> dict:
    corpus = data / CORPORA[name][0]
    manifest = work / f"{name}.parquet"
    write_table(manifest_table(rows), manifest, schemas.MANIFEST, provenance("ingest", {}, corpus_dir=str(corpus)))
    media_s = sum(r.duration_s or 0.0 for r in rows)
    video_s = sum(r.duration_s or 0.0 for r in rows if r.video_width)
    params = PreprocessParams(cache_dir=work / f"cache-{name}", workers=workers)
    if frontends is not None:
        params = params.model_copy(update={"frontends": frontends})
    started = time.perf_counter()
    summary = run_preprocess(manifest, work / f"features-{name}", params)
    wall = time.perf_counter() - started
    prov = read_provenance(work / f"features-{name}" / "clips.parquet")
    return {
        "name": name if frontends is None else f"{name}, frontends {frontends}",
        "clips": summary.clips,
        "failed": summary.failed,
        "media_s": media_s,
        "video_s": video_s,
        "flow_s": prov["flow_seconds"],
        "wall_s": wall,
        "stages": prov["stage_seconds"],
    }


def reference(corpus: Path, rows: list) -> dict:
    """The per-frame pipeline on ``rows``' clips: its wall time and how many frames went through MTCNN."""
    import torch
    from face_crops import reference as per_frame_faces  # facenet-pytorch's MTCNN on every given frame
    from facenet_pytorch import MTCNN

    from avemo.config import FaceFeatureParams, FaceParams
    from tasks.audio.stage import compute_audio
    from tasks.probe import probe
    from tasks.video.embeddings import load_face_embedder

    started = time.perf_counter()
    params, cpu = PreprocessParams(frontends=[]), torch.device("cpu")
    mtcnn, embedder = MTCNN(keep_all=True, device=cpu), load_face_embedder(FaceFeatureParams(), cpu)
    frames = 0
    for row in rows:
        path = corpus / row.path
        info = probe(path)
        compute_audio(path, info, params)
        if info.has_video and info.video_fps and info.duration_s:
            every = list(range(max(1, round(info.duration_s * info.video_fps))))
            _, crops = per_frame_faces(mtcnn, path, info, every, FaceParams())
            embedder(np.stack([crops[i] for i in sorted(crops)]))
            frames += len(crops)
    return {"wall_s": time.perf_counter() - started, "frames": frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=["cremad", "talking", "all"], default="all")
    parser.add_argument("--workers", type=int, default=PreprocessParams().workers)
    parser.add_argument("--clips", default="*", help="globs on the clips' file names, comma-separated (default: all)")
    parser.add_argument("--without-frontends", action="store_true", help="also run with preprocess.frontends: []")
    parser.add_argument("--reference", action="store_true", help="also run the per-frame reference pipeline")
    args = parser.parse_args()
    data = Path(os.environ.get("AVEMO_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
    if not (data / "cremad").is_dir():
        sys.exit(f"real data not found at {data}; set AVEMO_SHARED_DATA")
    names = ["cremad", "talking"] if args.corpus == "all" else [args.corpus]
    print(f"machine: {os.cpu_count()} CPU cores; workers: {args.workers}")
    with tempfile.TemporaryDirectory() as tmp:
        results, references = [], {}
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            rows = manifest_rows(name, data, work, args.workers, args.clips)
            runs: list[list[str] | None] = [None, []] if args.without_frontends else [None]
            for frontends in runs:
                run = work / ("shipped" if frontends is None else "no-frontends")
                run.mkdir()
                results.append(bench(name, data, run, args.workers, rows, frontends))
            if args.reference:
                references[name] = reference(data / CORPORA[name][0], rows)
    for r in results:
        print(
            f"\n{r['name']}: {r['clips']} clips ({r['failed']} failed), {r['media_s']:.1f} s of media "
            f"({r['video_s']:.1f} s with video)"
        )
        print(f"  whole preprocess (flow): {r['flow_s']:.2f} s  RTF {r['flow_s'] / r['media_s']:.4f}")
        print(f"  with Prefect start-up:   {r['wall_s']:.2f} s  RTF {r['wall_s'] / r['media_s']:.4f}")
        for stage, seconds in r["stages"].items():
            base = r["video_s"] if stage != "audio" else r["media_s"]
            print(f"  stage {stage:<14} {seconds:7.2f} s compute  RTF {seconds / base:.4f}")
        ref = references.get(r["name"].split(",")[0])
        if ref:
            print(
                f"  reference (per frame): {ref['wall_s']:.2f} s  RTF {ref['wall_s'] / r['media_s']:.4f}, "
                f"{ref['frames']} frames through MTCNN; avemo, start-up included, "
                f"{ref['wall_s'] / r['wall_s']:.1f}x faster"
            )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\npeak memory: {own:.0f} MB (this process), {children:.0f} MB (largest child: ffmpeg or Prefect's server)")


if __name__ == "__main__":
    main()
