"""The preprocess flow: a clip manifest in, the Parquet features of every clip out.

The per-clip chain (``tasks.clip.clip_features``) is a Prefect task mapped over the clips, so Prefect
runs clips in parallel (``preprocess.workers``, or on a Dask cluster: ``flows.dask``) and records every
clip's run. Rows are written in manifest order as clips complete, so the output is the same whatever
the completion order.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from avemo import schemas
from avemo.cache import StageCache
from avemo.config import PreprocessParams
from avemo.ffmpeg import decoder
from avemo.freshness import FINGERPRINT_KEY, fingerprint
from avemo.parquet_io import ParquetSink, write_table
from avemo.progress import Progress
from avemo.provenance import provenance
from tasks.audio.frontends import tool_identity
from tasks.clip import ClipFeatures, StageFailure, clip_features, face_models, read_sources
from tasks.video.embeddings import FaceEmbedder

STAGES = ("audio", "faces", "face_features")


def _clip(source, params: PreprocessParams, cache: StageCache) -> ClipFeatures | StageFailure:
    return clip_features(source, params, cache=cache)


# Our own cache (avemo.cache) decides what to recompute; Prefect's input hashing would only hash
# waveforms and tensors for nothing.
clip_task = task(name="clip", cache_policy=NO_CACHE)(_clip)


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
    computed_clips: tuple[str, ...] = ()  # clips with at least one stage computed, not read from the cache

    def __str__(self) -> str:
        return (
            f"{self.succeeded} of {self.clips} clips succeeded, {self.failed} failed "
            f"(see {self.out_dir / 'failures.parquet'}); {self.segments} segments, {self.frames} face frames; "
            f"{self.cached_stages} clip stages reused from the cache; {self.seconds:.1f} s"
        )


@dataclass
class _Outputs:
    """The feature files being written, and the tally of what went into them."""

    sinks: dict[str, ParquetSink]
    failures: list[StageFailure]
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    cached_stages: int = 0
    computed_clips: list[str] = field(default_factory=list)

    def add(self, outcome: ClipFeatures | StageFailure) -> None:
        if isinstance(outcome, StageFailure):
            self.failures.append(outcome)
            self.computed_clips.append(outcome.clip_id)  # failures are never cached: the failing stage ran
            return
        self.sinks["clips"].write(pa.Table.from_pylist([outcome.clip]))
        self.sinks["segments"].write(outcome.segments)
        if outcome.frames is not None:
            self.sinks["frames"].write(outcome.frames)
        for name, row in outcome.frontends.items():
            self._frontend_sink(name, row).write(row)
        for stage, seconds in outcome.seconds.items():
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds
        self.cached_stages += sum(outcome.cached.values())
        if not all(outcome.cached.values()):
            self.computed_clips.append(outcome.clip["clip_id"])

    def _frontend_sink(self, name: str, row: pa.Table) -> ParquetSink:
        """A front-end's file, opened at its first row: the row's column types give its widths."""
        key = f"frontend_{name}"
        if key not in self.sinks:
            frame_dim = row.schema.field("frames").type.value_type.list_size
            pooled_dim = row.schema.field("clip_pooled").type.list_size
            out_dir = self.sinks["clips"].path.parent
            self.sinks[key] = ParquetSink(
                out_dir / f"{key}.parquet", schemas.frontend_schema(name, frame_dim, pooled_dim)
            )
        return self.sinks[key]


def _sinks(out_dir: Path, params: PreprocessParams, embedder: FaceEmbedder | None) -> dict[str, ParquetSink]:
    ff, feat = params.faces, params.audio_features
    segments = schemas.segments_schema(feat.n_mels, params.segment.frames, ff.frames_per_segment)
    return {
        "clips": ParquetSink(out_dir / "clips.parquet", schemas.clips_schema(feat.linear_bins)),
        "segments": ParquetSink(out_dir / "segments.parquet", segments),
        "frames": ParquetSink(
            out_dir / "frames.parquet", schemas.frames_schema(ff.crop_size, embedder.dim if embedder else 0)
        ),
    }


def _commit(
    outputs: _Outputs, manifest: Path, corpus_dir: Path, sources, embedder, params, started: float, inputs: str
) -> None:
    """Provenance into every feature file's footer, then each moved into place; failures.parquet last."""
    extra = {
        FINGERPRINT_KEY: inputs,
        "decoder": dataclasses.asdict(decoder(params.audio.ffmpeg)),
        "frontends": {name: tool_identity(name, params) for name in params.frontends},
        "manifest": str(manifest),
        "corpus_dir": str(corpus_dir),
        "sources": {s.clip_id: s.sha256 for s in sources},
        "face_embedder": (
            {"name": embedder.name, "dim": embedder.dim, "weights_sha256": embedder.weights_sha256}
            if embedder
            else None
        ),
        "stage_seconds": outputs.stage_seconds,
        "flow_seconds": time.perf_counter() - started,
    }
    params_doc = params.model_dump(mode="json")
    for sink in outputs.sinks.values():
        sink.commit(provenance("preprocess", params_doc, params.audio.ffmpeg, **extra))
    out_dir = outputs.sinks["clips"].path.parent
    for stale in out_dir.glob("frontend_*.parquet"):  # a front-end this run did not compute is not its output
        if stale.stem not in outputs.sinks:
            stale.unlink()
    failures = pa.table({name: [getattr(f, name) for f in outputs.failures] for name in schemas.FAILURES.names})
    write_table(
        failures,
        out_dir / "failures.parquet",
        schemas.FAILURES,
        provenance("preprocess", params_doc, params.audio.ffmpeg, manifest=str(manifest)),
    )


@flow(name="preprocess", log_prints=True)
def preprocess_flow(manifest: Path, out_dir: Path, params: PreprocessParams) -> PreprocessSummary:
    """Features of every clip of ``manifest`` into ``out_dir``: clips, segments, frames, failures."""
    logger = get_run_logger()
    started = time.perf_counter()
    inputs = fingerprint(manifest, params)  # before reading: what this run's outputs are made from
    sources, failures, corpus_dir = read_sources(manifest)
    cache = StageCache(params.cache_dir)
    ffmpeg = decoder(params.audio.ffmpeg)  # a decoder that cannot run stops here, before any clip
    logger.info("decoding with %s", ffmpeg.describe())
    for name in params.frontends:  # a missing package or model stops here, before any clip
        tool_identity(name, params)
    embedder = face_models(params)[1] if any(s.info.has_video for s in sources) else None
    logger.info("preprocessing %d clips (%d failed probing) from %s", len(sources), len(failures), corpus_dir)
    clips = clip_task.map(sources, unmapped(params), unmapped(cache))
    outputs = _Outputs(_sinks(out_dir, params, embedder), failures)
    progress = Progress(len(sources), "clips", logger)
    try:
        for future in clips:  # manifest order: deterministic output whatever finishes first
            outcome = future.result()
            if isinstance(outcome, StageFailure):
                logger.warning("%s failed at %s: %s", outcome.clip_id, outcome.stage, outcome.reason)
            elif outcome.clip["decode_errors"]:
                logger.warning(
                    "%s: ffmpeg logged %d decode error(s); its features are kept and flagged (clips.parquet "
                    "decode_errors)",
                    outcome.clip["clip_id"],
                    outcome.clip["decode_errors"],
                )
            outputs.add(outcome)
            progress.advance()
        _commit(outputs, manifest, corpus_dir, sources, embedder, params, started, inputs)
    except BaseException:
        for sink in outputs.sinks.values():
            sink.abort()
        raise
    summary = PreprocessSummary(
        clips=len(sources) + sum(f.stage == "probe" for f in failures),
        succeeded=outputs.sinks["clips"].rows,
        failed=len(outputs.failures),
        segments=outputs.sinks["segments"].rows,
        frames=outputs.sinks["frames"].rows,
        cached_stages=outputs.cached_stages,
        seconds=time.perf_counter() - started,
        out_dir=out_dir,
        computed_clips=tuple(outputs.computed_clips),
    )
    logger.info("%s", summary)
    return summary


def run_preprocess(manifest: Path, out_dir: Path, params: PreprocessParams) -> PreprocessSummary:
    """Run the flow on the Dask cluster at ``params.dask_address``, else here with ``params.task_runner``.

    Here, clips already run in parallel, so torch gets the cores left per worker: two workers each
    spawning a thread per core would oversubscribe the CPU and slow MTCNN several times over.
    """
    if params.dask_address:
        from flows.dask import run_on_dask

        return run_on_dask(manifest, out_dir, params)
    workers = 1 if params.task_runner == "sequential" else params.workers
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    # Prefect stub limit: with_options takes a TaskRunner[PrefectFuture[Any]], invariant, so no concrete runner fits
    runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=workers)
    configured = preprocess_flow.with_options(task_runner=runner)  # type: ignore[arg-type]
    return configured(manifest=manifest, out_dir=out_dir, params=params)
