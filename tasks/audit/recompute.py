"""The re-computation of rows for ``avemo audit --verify``: a seeded sample of an output's rows, made again.

Rows are re-computed from the same sources with the recorded parameters, through the code that wrote
them: feature rows by the per-clip chain (``tasks.clip``), manifest rows by probing, predictions by the
recorded checkpoints; a checkpoint's training features are compared by source hash and parameters.
Every difference is a ``Finding``, every check that could not run a note. The stages pull in torch and
the models, so they are imported inside the functions that run them: describing an output needs neither.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from avemo.parquet_io import read_provenance
from tasks.audit.lineage import AuditRecord, display_path, project_root, read_json, resolve
from tasks.audit.verify import Finding, compare_values, sample_clips
from tasks.probe import MediaInfo, ProbeError, probe

if TYPE_CHECKING:
    from avemo.config import PreprocessParams
    from tasks.clip import ClipSource
    from tasks.learning.features import Features, TaskLabels

FEATURE_TABLES = ("clips", "segments", "frames")
# Columns the audio stage and the manifest row determine; the others need the face stages.
AUDIO_COLUMNS = {
    "segments": ("segment", "first_frame", "t_begin", "t_end", "voiced_share", "log_mel"),
    "clips": (
        "path",
        "sha256",
        "corpus",
        "speaker",
        "label",
        "corpus_label",
        "duration_s",
        "voiced_share",
        "n_segments",
        "linear_times",
        "linear_spectrogram",
    ),
    "frames": (),
}


def recompute_sample(
    path: Path,
    record: AuditRecord,
    sample: int,
    clip: str | None,
    faces: bool,
    seed: int,
    changed: set[str | None],
    findings: list[Finding],
    notes: list[str],
) -> tuple[list[str], list[str]]:
    """Re-compute ``sample`` seeded clips' rows of ``path`` as its kind allows, skipping the ``changed`` clips.

    Appends to ``findings`` and ``notes``; returns the clip ids re-computed and the columns compared.
    """
    if sample <= 0:
        notes.append("--sample 0: no rows re-computed")
    elif record.kind in FEATURE_TABLES:
        return _recompute_features(path, record, sample, clip, faces, seed, changed, findings, notes)
    elif record.kind == "manifest":
        return _reprobe_manifest(path, record, sample, clip, seed, changed, findings)
    elif record.kind == "checkpoint":
        _check_training_features(path, record, findings, notes)
    elif record.kind == "predictions":
        return _recompute_predictions(path, record, sample, clip, seed, findings, notes)
    else:
        notes.append(f"{record.kind} rows are not re-computed by audit; its sources and DVC md5 were checked")
    return [], []


def _recompute_finding(record: AuditRecord, clip_id: str, column: str, why: str, rerun: str) -> Finding:
    return Finding(
        "recomputed_differs",
        record.path,
        clip_id,
        f"column {column}: {why}",
        f"the same source and parameters now give other values: the file was modified, or code or tools changed "
        f"(see the notes); rebuild it with {rerun}",
    )


# ---------------------------------------------------------------------------------------------- manifest


def _reprobe_manifest(
    path: Path,
    record: AuditRecord,
    n: int,
    clip: str | None,
    seed: int,
    changed: set[str | None],
    findings: list[Finding],
) -> tuple[list[str], list[str]]:
    """Re-probe a sample of rows: stream facts and size as ingest recorded them."""
    columns = ["size_bytes", *(f.name for f in dataclasses.fields(MediaInfo))]
    rows = {r["clip_id"]: r for r in pq.read_table(path).to_pylist()}
    files = {s.clip_id: Path(s.file) for s in record.sources if s.file}
    chosen = [c for c in sample_clips([clip] if clip else rows, n, seed) if c not in changed and c in files]
    for clip_id in chosen:
        file = files[clip_id]
        try:
            info = dataclasses.asdict(probe(file))
        except ProbeError as err:
            info = {"probe_error": str(err)}
        fresh = {"size_bytes": file.stat().st_size, **info}
        for name in columns:
            if name in fresh and (why := compare_values([rows[clip_id][name]], [fresh[name]])):
                findings.append(_recompute_finding(record, clip_id, name, why, "`avemo ingest` (dvc repro ingest)"))
    return chosen, columns


# ---------------------------------------------------------------------------------------------- features


def _recompute_features(
    path: Path,
    record: AuditRecord,
    n: int,
    clip: str | None,
    faces: bool,
    seed: int,
    changed: set[str | None],
    findings: list[Finding],
    notes: list[str],
) -> tuple[list[str], list[str]]:
    """Re-run the preprocess stages on a sample of clips with the recorded params; compare their rows."""
    params = _recorded_params(record, notes)
    if params is None:
        return [], []
    manifest = resolve(record.details.get("manifest", ""), project_root(path))
    if not manifest.is_file():
        notes.append(f"manifest {manifest} not found: rows not re-computed")
        return [], []
    sources = _recorded_sources(manifest, record)
    table = pq.read_table(path)
    in_file = table["clip_id"].to_pylist()
    skipped = sorted(c for c in changed if c is not None and c in set(in_file))  # None: a source without a clip
    if skipped:
        notes.append(f"not re-computed, their source changed: {', '.join(skipped)}")
    pool = [c for c in ([clip] if clip else in_file) if c not in changed and c in sources]
    chosen = sample_clips(pool, n, seed)
    with_faces = faces or record.kind == "frames"
    if with_faces:
        _check_face_embedder(record, params, findings)
    compared: set[str] = set()
    for clip_id in chosen:
        compared.update(_compare_clip_rows(record, table, sources[clip_id], params, with_faces, findings))
    face_skipped = [c for c in chosen if sources[c].info.has_video and not with_faces]
    if face_skipped:
        notes.append(
            f"face columns of {', '.join(face_skipped)} not re-computed "
            "(pass --faces to run MTCNN, a few seconds a clip)"
        )
    if clip is None and len(chosen) < len(set(pool)):
        notes.append(
            f"re-computed {len(chosen)} of {len(set(pool))} clips (seed {seed}); --sample N for more, --clip ID for one"
        )
    return chosen, sorted(compared)


def _recorded_params(record: AuditRecord, notes: list[str]) -> PreprocessParams | None:
    """The preprocess parameters the features were made with, or None (and why in ``notes``)."""
    from pydantic import ValidationError

    from avemo.config import PreprocessParams

    try:
        return PreprocessParams(**record.params)
    except ValidationError as err:
        notes.append(
            f"the recorded parameters are not valid for this avemo ({err.error_count()} errors): rows not re-computed"
        )
        return None


def _recorded_sources(manifest: Path, record: AuditRecord) -> dict[str, ClipSource]:
    """The manifest's clips that the record locates, each at the file the record names."""
    from tasks.clip import read_sources

    files = {s.clip_id: Path(s.file) for s in record.sources if s.file}
    return {
        s.clip_id: dataclasses.replace(s, file=files[s.clip_id])
        for s in read_sources(manifest)[0]
        if s.clip_id in files
    }


def _check_face_embedder(record: AuditRecord, params: PreprocessParams, findings: list[Finding]) -> None:
    """Are the face embedder's weights those the features were made with?"""
    from tasks.clip import face_models

    _, embedder = face_models(params)
    recorded = (record.details.get("face_embedder") or {}).get("weights_sha256")
    if recorded and recorded != embedder.weights_sha256:
        findings.append(
            Finding(
                "upstream_changed",
                record.path,
                None,
                f"face embedder {embedder.name} weights sha256 {embedder.weights_sha256[:16]}…, "
                f"recorded {recorded[:16]}…",
                "install the recorded weights, or rebuild the features: `dvc repro preprocess`",
            )
        )


def _compare_clip_rows(
    record: AuditRecord,
    table: pa.Table,
    source: ClipSource,
    params: PreprocessParams,
    with_faces: bool,
    findings: list[Finding],
) -> list[str]:
    """Re-compute one clip's rows and compare them with the stored ones: the columns compared."""
    from tasks.clip import StageFailure, clip_features

    run_faces = with_faces and source.info.has_video
    fresh = clip_features(source, params, with_faces=run_faces)
    if isinstance(fresh, StageFailure):
        why = f"re-computation fails at {fresh.stage}: {fresh.reason}"
        findings.append(_recompute_finding(record, source.clip_id, "(all)", why, "`dvc repro preprocess`"))
        return []
    stored = table.filter(pc.equal(table["clip_id"], source.clip_id))
    new = {"clips": pa.Table.from_pylist([fresh.clip]), "segments": fresh.segments, "frames": fresh.frames}[record.kind]
    names = [c for c in table.column_names if c != "clip_id"]
    if not run_faces:
        names = [c for c in names if c in AUDIO_COLUMNS[record.kind]]
    for name in names:
        if difference := compare_values(stored[name].to_pylist(), new[name].to_pylist()):
            rerun = "`avemo preprocess` (dvc repro preprocess)"
            findings.append(_recompute_finding(record, source.clip_id, name, difference, rerun))
    return names


# ---------------------------------------------------------------------------------------------- checkpoints


def _check_training_features(path: Path, record: AuditRecord, findings: list[Finding], notes: list[str]) -> None:
    """Do the features the checkpoint was trained on still come from the same sources and parameters?"""
    features = record.details.get("features")
    clips = resolve(features, project_root(path)) / "clips.parquet" if features else None
    if clips is None or not clips.is_file():
        notes.append(f"the features it was trained on ({features}) are not found: not compared")
        return
    current = read_provenance(clips) or {}
    rerun = f"re-train on the current features: `dvc repro train@{record.details.get('system')}`"
    recorded = {s.clip_id: s.sha256 for s in record.sources}
    now = current.get("sources") or {}
    if record.clip:
        now = {c: h for c, h in now.items() if c == record.clip}
    differing = sorted(c for c in set(recorded) | set(now) if recorded.get(c) != now.get(c))
    if differing:
        findings.append(
            Finding(
                "upstream_changed",
                str(clips),
                None,
                f"{len(differing)} clip(s) of the features differ from those the model was trained on: "
                f"{', '.join(differing[:5])}",
                rerun,
            )
        )
    if record.details.get("feature_params") and current.get("params") != record.details["feature_params"]:
        keys = _differing_keys(record.details["feature_params"], current.get("params") or {})
        findings.append(
            Finding(
                "upstream_changed",
                str(clips),
                None,
                f"feature parameters changed since training: {', '.join(keys[:6])}",
                rerun,
            )
        )
    notes.append(
        "model weights are not re-trained by audit; the features it names were compared by source hash and parameters"
    )


def _differing_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            keys += _differing_keys(x, y, f"{prefix}{key}.")
        elif x != y:
            keys.append(f"{prefix}{key} {x!r} -> {y!r}")
    return keys


# ---------------------------------------------------------------------------------------------- predictions


def _recompute_predictions(
    path: Path, record: AuditRecord, n: int, clip: str | None, seed: int, findings: list[Finding], notes: list[str]
) -> tuple[list[str], list[str]]:
    """Predict a sample of clips again with the recorded checkpoints; each fold's whole test set is run,
    since speaker normalisation reads all of a fold's test clips."""
    from models.registry import get_spec
    from tasks.learning.features import load_features, task_labels

    root = project_root(path)
    details = record.details
    system = record.params.get("system") or details.get("system")
    model_dir = resolve(details["model_dir"], root)
    train_doc = read_json(model_dir / "train.json")
    rerun = f"`avemo evaluate --system {system}` (dvc repro evaluate@{system})"
    if train_doc is None:
        notes.append(f"{model_dir / 'train.json'} not found: predictions not re-computed")
        return [], []
    checkpoints = _recorded_checkpoints(details, model_dir, train_doc, rerun, findings)
    if checkpoints is None:
        return [], []
    table = pq.read_table(path)
    stored = {r["clip_id"]: r for r in table.to_pylist()}
    chosen = sample_clips([clip] if clip else stored, n, seed)
    folds = pq.read_table(model_dir / "folds.parquet").to_pylist()
    spec = get_spec(cast(str, system))  # every evaluate run records its system; without one get_spec refuses None
    features_dir = resolve(details["features"], root)
    features = load_features(features_dir, spec.needs, spec.input_kind, train_doc.get("frontend"))
    labels = task_labels(features, train_doc["params"]["task"])
    folds_run = sorted({stored[c]["fold"] for c in chosen})
    notes.append(f"re-predicted the whole test set of fold(s) {', '.join(folds_run)} with the recorded checkpoints")
    for fold in folds_run:
        members = [p for p in checkpoints if p.name.startswith(f"fold-{fold}-seed")]
        test = [r["clip_id"] for r in folds if r["fold"] == fold and r["role"] == "test"]
        fresh = _fold_probabilities(members, features, labels, test)
        for clip_id in (c for c in chosen if stored[c]["fold"] == fold):
            if clip_id not in fresh:
                findings.append(
                    _recompute_finding(record, clip_id, "(all)", f"no longer predicted in fold {fold}", rerun)
                )
            elif why := compare_values([stored[clip_id]["probabilities"]], [fresh[clip_id]]):
                findings.append(_recompute_finding(record, clip_id, "probabilities", why, rerun))
    return chosen, ["probabilities"]


def _recorded_checkpoints(
    details: dict[str, Any], model_dir: Path, train_doc: dict[str, Any], rerun: str, findings: list[Finding]
) -> list[Path] | None:
    """The checkpoints that made the predictions, or None (and a finding) when they were re-trained or are gone."""
    if details.get("train_written_at") and train_doc.get("written_at") != details["train_written_at"]:
        findings.append(
            Finding(
                "upstream_changed",
                display_path(model_dir / "train.json"),
                None,
                f"the models were re-trained at {train_doc.get('written_at')}, "
                f"after these predictions' training run ({details['train_written_at']})",
                f"re-evaluate: {rerun}",
            )
        )
        return None
    checkpoints = [model_dir / name for name in details.get("checkpoints", [])]
    missing = [p.name for p in checkpoints if not p.is_file()]
    if missing:
        detail = f"checkpoints missing: {', '.join(missing)}"
        findings.append(Finding("source_missing", str(model_dir), None, detail, f"re-train, then {rerun}"))
        return None
    return checkpoints


def _fold_probabilities(
    checkpoints: list[Path], features: Features, labels: TaskLabels, test_clips: list[str]
) -> dict[str, list[float]]:
    """Each test clip's posteriors from one fold's checkpoints (its seeds), averaged as evaluation averages them."""
    from tasks.learning.evaluation import fold_predictions

    predictions, _, _ = fold_predictions("", checkpoints, features, labels, test_clips)
    return dict(zip(predictions.clip_ids, predictions.probabilities.tolist(), strict=True))
