"""A window's features -> the file's posterior and its segment timeline.

Segment models (``avef``, ``avef_audio``, ``avef_video``) score every kept 655 ms segment, and their
clip posterior is evaluation's (the segments' mean, or avef's clip SVM). Clip models (FBP family,
baselines, attention variants) score the whole file for its posterior and, for the timeline, each kept
segment's span as a clip of its own: the spectrogram frames whose centres lie in the segment and the
face embeddings of its frames. A 655 ms span is shorter than the clips these models learnt from, so
their timeline shows where the evidence lies; the file's posterior stays the model's decision.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

import avemo
from avemo import schemas
from avemo.config import PreprocessParams
from avemo.parquet_io import write_table
from tasks.clip import ClipFeatures
from tasks.learning.features import Features, TaskLabels
from tasks.learning.inference import trained_posteriors
from tasks.learning.metrics import average_posteriors
from tasks.learning.standardization import Standardization
from tasks.learning.trained import Trained
from tasks.predict.compatibility import Predictor


def write_clip_features(clip: ClipFeatures, params: PreprocessParams, folder: Path) -> None:
    """The clip's features as avemo preprocess's Parquet tables, so they are read back as training reads them."""
    document = {"stage": "predict", "source": clip.clip["path"], "avemo_version": avemo.__version__}
    feat, faces = params.audio_features, params.faces
    write_table(
        pa.Table.from_pylist([clip.clip]), folder / "clips.parquet", schemas.clips_schema(feat.linear_bins), document
    )
    segments_schema = schemas.segments_schema(feat.n_mels, params.segment.frames, faces.frames_per_segment)
    write_table(clip.segments, folder / "segments.parquet", segments_schema, document)
    if clip.frames is not None:
        dim = clip.frames["embedding"].type.list_size
        write_table(clip.frames, folder / "frames.parquet", schemas.frames_schema(faces.crop_size, dim), document)
    for name, row in clip.frontends.items():
        frame_dim = row.schema.field("frames").type.value_type.list_size
        schema = schemas.frontend_schema(name, frame_dim, row.schema.field("clip_pooled").type.list_size)
        write_table(row, folder / f"frontend_{name}.parquet", schema, document)


def segment_spans(features: Features, clip: ClipFeatures) -> Features:
    """Each kept segment as a clip of its own, for a clip model's timeline: the spectrogram frames whose
    centres lie in the segment's [t_begin, t_end), and the embeddings of its distinct face frames."""
    clip_id = clip.clip["clip_id"]
    table = clip.segments
    ids = tuple(f"{clip_id}#{s}" for s in table["segment"].to_pylist())
    bounds = list(zip(table["t_begin"].to_pylist(), table["t_end"].to_pylist(), strict=True))
    spectrograms = embeddings = None
    if features.audio is not None:
        times = np.asarray(clip.clip["linear_times"], dtype=np.float64)
        frames = features.audio[clip_id]
        # Frame centres lie on the segments' 10 ms grid or 5 ms off their ends; 1 ms absorbs float32 times.
        tolerance = 1e-3
        spectrograms = {
            span: frames[(times >= begin - tolerance) & (times < end - tolerance)]
            for span, (begin, end) in zip(ids, bounds, strict=True)
        }
    if features.embeddings is not None:
        assert clip.frames is not None  # the embeddings were read from the clip's frames
        frame_order = np.asarray(clip.frames["frame_index"].to_pylist())  # the rows of the clip's embeddings
        rows = features.embeddings[clip_id]
        embeddings = {
            span: rows[np.searchsorted(frame_order, np.unique(indices))]
            for span, indices in zip(ids, table["face_frames"].to_pylist(), strict=True)
        }
    speaker = features.speakers[features.clip_ids.index(clip_id)]
    return Features(
        ids, (speaker,) * len(ids), ("",) * len(ids), features.modalities, "clip", {}, spectrograms, embeddings
    )


def _unlabelled(trained: Trained, clip_ids: Sequence[str]) -> TaskLabels:
    """Prediction's labels: the model's classes; the files have no label, so every true index is a
    placeholder 0 that nothing reports."""
    return TaskLabels(trained.task, trained.classes, dict.fromkeys(clip_ids, 0), {})


def _standardised(trained: Trained, speaker_stats: Standardization | None) -> Trained:
    """The member with the statistics it standardises with: its training clips', or for a
    speaker-normalised model the speaker's (``speaker_stats``) or else its typical training speaker's."""
    if trained.standardization is not None:
        return trained
    stats = speaker_stats or trained.speaker_fallback
    assert stats is not None, "a checkpoint without a typical speaker is given the file's own statistics"
    return dataclasses.replace(trained, standardization=stats)


def score_clip(
    predictor: Predictor,
    clip: ClipFeatures,
    features: Features,
    speaker_stats: Standardization | None,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """(classes,) posterior of the clip and (segments, classes) of its segments in segment order, averaged
    over the predictor's models; ``speaker_stats`` as in :func:`_standardised`."""
    clip_id = clip.clip["clip_id"]
    spans = segment_spans(features, clip) if predictor.input_kind == "clip" else None
    clip_members, segment_members = [], []
    for member in predictor.members:
        trained = _standardised(member, speaker_stats)
        whole = trained_posteriors(trained, features, _unlabelled(trained, [clip_id]), [clip_id], batch_size)
        clip_members.append(whole.clips.probabilities)
        if whole.segments is not None:
            order = np.argsort(whole.segments.segments, kind="stable")
            segment_members.append(whole.segments.probabilities[order])
        else:
            assert spans is not None  # only clip models lack segment posteriors, and they have spans
            span_ids = list(spans.clip_ids)
            scored = trained_posteriors(trained, spans, _unlabelled(trained, span_ids), span_ids, batch_size)
            segment_members.append(scored.clips.probabilities)
    return average_posteriors(clip_members)[0], average_posteriors(segment_members)
