"""The preprocess flow: a clip manifest in, the Parquet features of every clip out.

Each stage of ``avemo.preprocess`` is a Prefect task mapped over the clips, so Prefect runs clips in
parallel (``preprocess.workers``) and records every stage of every clip. Rows are written in manifest
order as clips complete, so the output is the same whatever the completion order.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import torch
from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from avemo import schemas
from avemo.cache import StageCache
from avemo.config import PreprocessParams
from avemo.parquet_io import ParquetSink, read_provenance, read_table, write_table
from avemo.preprocess import (
    ClipFeatures,
    ClipSource,
    StageFailure,
    assemble,
    face_models,
    run_audio,
    run_face_features,
    run_faces,
)
from avemo.progress import Progress
from avemo.provenance import provenance
from tasks.probe import MediaInfo

# Our own cache (avemo.cache) decides what to recompute; Prefect's input hashing would only hash
# waveforms and tensors for nothing.
audio_task = task(run_audio, name="audio", cache_policy=NO_CACHE)
faces_task = task(run_faces, name="faces", cache_policy=NO_CACHE)
face_features_task = task(run_face_features, name="face_features", cache_policy=NO_CACHE)
assemble_task = task(assemble, name="assemble", cache_policy=NO_CACHE)

_INFO_FIELDS = [f for f in MediaInfo.__dataclass_fields__]


@dataclass(frozen=True)
class PreprocessSummary:
    clips: int
    succeeded: int
    failed: int
    segments: int
    frames: int
    cached_stages: int
    seconds: float
    out_dir: Path

    def __str__(self) -> str:
        return (
            f"{self.succeeded} of {self.clips} clips succeeded, {self.failed} failed "
            f"(see {self.out_dir / 'failures.parquet'}); {self.segments} segments, {self.frames} face frames; "
            f"{self.cached_stages} clip stages reused from the cache; {self.seconds:.1f} s"
        )


def read_sources(manifest: Path) -> tuple[list[ClipSource], list[StageFailure], Path]:
    """The clips to process, and the failures already known from probing (kept, never dropped)."""
    table = read_table(manifest, schemas.MANIFEST)
    prov = read_provenance(manifest) or {}
    corpus_dir = Path(prov.get("corpus_dir", manifest.parent))
    sources, failures = [], []
    for row in table.to_pylist():
        if row["probe_error"]:
            failures.append(StageFailure(row["clip_id"], row["path"], row["sha256"], "probe", row["probe_error"]))
            continue
        info = MediaInfo(**{name: row[name] for name in _INFO_FIELDS})
        sources.append(
            ClipSource(
                clip_id=row["clip_id"],
                path=row["path"],
                file=corpus_dir / row["path"],
                sha256=row["sha256"],
                corpus=row["corpus"],
                speaker=row["speaker"],
                label=row["label"],
                corpus_label=row["corpus_label"],
                info=info,
            )
        )
    return sources, failures, corpus_dir


def _failure_table(failures: list[StageFailure]) -> pa.Table:
    return pa.table({name: [getattr(f, name) for f in failures] for name in schemas.FAILURES.names})


@flow(name="preprocess", log_prints=True)
def preprocess_flow(manifest: Path, out_dir: Path, params: PreprocessParams) -> PreprocessSummary:
    """Features of every clip of ``manifest`` into ``out_dir``: clips, segments, frames, failures."""
    logger = get_run_logger()
    started = time.perf_counter()
    sources, failures, corpus_dir = read_sources(manifest)
    cache = StageCache(params.cache_dir)
    has_video = any(s.info.has_video for s in sources)
    _, embedder = face_models(params) if has_video else (None, None)
    logger.info("preprocessing %d clips (%d failed probing) from %s", len(sources), len(failures), corpus_dir)

    audio = audio_task.map(sources, unmapped(params), unmapped(cache))
    faces = faces_task.map(sources, audio, unmapped(params), unmapped(cache))
    features = face_features_task.map(sources, faces, unmapped(params), unmapped(cache))
    assembled = assemble_task.map(sources, audio, faces, features, unmapped(params))

    ff = params.faces
    sinks = {
        "clips": ParquetSink(out_dir / "clips.parquet", schemas.clips_schema(params.audio_features.linear_bins)),
        "segments": ParquetSink(
            out_dir / "segments.parquet",
            schemas.segments_schema(params.audio_features.n_mels, params.segment.frames, ff.frames_per_segment),
        ),
        "frames": ParquetSink(
            out_dir / "frames.parquet", schemas.frames_schema(ff.crop_size, embedder.dim if embedder else 0)
        ),
    }
    stage_seconds = {"audio": 0.0, "faces": 0.0, "face_features": 0.0}
    cached_stages = 0
    progress = Progress(len(sources), "clips", logger)
    try:
        for future in assembled:  # manifest order: deterministic output whatever finishes first
            outcome: ClipFeatures | StageFailure = future.result()
            if isinstance(outcome, StageFailure):
                failures.append(outcome)
                logger.warning("%s failed at %s: %s", outcome.clip_id, outcome.stage, outcome.reason)
            else:
                sinks["clips"].write(pa.Table.from_pylist([outcome.clip]))
                sinks["segments"].write(outcome.segments)
                if outcome.frames is not None:
                    sinks["frames"].write(outcome.frames)
                for stage, seconds in outcome.seconds.items():
                    stage_seconds[stage] += seconds
                cached_stages += sum(outcome.cached.values())
            progress.advance()
        params_doc = params.model_dump(mode="json")
        source_hashes = {s.clip_id: s.sha256 for s in sources}
        extra = {
            "manifest": str(manifest),
            "corpus_dir": str(corpus_dir),
            "sources": source_hashes,
            "face_embedder": (
                {"name": embedder.name, "dim": embedder.dim, "weights_sha256": embedder.weights_sha256}
                if embedder
                else None
            ),
            "stage_seconds": stage_seconds,
            "flow_seconds": time.perf_counter() - started,
        }
        for sink in sinks.values():
            sink.commit(provenance("preprocess", params_doc, **extra))
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        raise
    write_table(
        _failure_table(failures),
        out_dir / "failures.parquet",
        schemas.FAILURES,
        provenance("preprocess", params.model_dump(mode="json"), manifest=str(manifest)),
    )
    summary = PreprocessSummary(
        clips=len(sources) + sum(f.stage == "probe" for f in failures),
        succeeded=sinks["clips"].rows,
        failed=len(failures),
        segments=sinks["segments"].rows,
        frames=sinks["frames"].rows,
        cached_stages=cached_stages,
        seconds=time.perf_counter() - started,
        out_dir=out_dir,
    )
    logger.info("%s", summary)
    return summary


def run_preprocess(manifest: Path, out_dir: Path, params: PreprocessParams) -> PreprocessSummary:
    """Run the flow with the task runner ``params`` ask for.

    Clips already run in parallel, so torch gets the cores left per worker: two workers each spawning
    a thread per core would oversubscribe the CPU and slow MTCNN several times over.
    """
    workers = 1 if params.task_runner == "sequential" else params.workers
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    configured = preprocess_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=workers))
    return configured(manifest=manifest, out_dir=out_dir, params=params)
