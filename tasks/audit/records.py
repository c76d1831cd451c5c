"""Audit an avemo output: where it came from (``describe``) and whether that still holds (``verify``).

Everything ``describe`` reports is read from the artifact itself (the provenance document in a Parquet
file's metadata, a checkpoint's JSON meta and the ``train.json`` beside it), from the upstream files those
name, and from ``dvc.lock``. ``verify`` then checks the record against the world: it re-hashes every
source, compares the file with the md5 ``dvc.lock`` recorded, and re-computes a seeded sample of rows
from the same sources with the recorded parameters. Each check that could not run is said so in
``Verification.notes``: a clean result never hides what was skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from avemo.parquet_io import read_provenance
from avemo.provenance import git_commit, tool_versions
from avemo.schemas import SCHEMA_NAME_KEY, SCHEMA_VERSION_KEY
from tasks.probe import MediaInfo, ProbeError, probe, sha256_file

# Re-computing on the same inputs is bit-exact for the audio stage; MTCNN's boxes move by ~1e-5 px
# with the thread count, so floats are compared with a relative tolerance far below any real change.
RTOL = 1e-5
ATOL = 1e-6
FEATURE_TABLES = ("clips", "segments", "frames")
# Columns the audio stage and the manifest row determine; the others need the face stages.
AUDIO_COLUMNS = {
    "segments": ("segment", "first_frame", "t_begin", "t_end", "voiced_share", "log_mel"),
    "clips": (
        "path", "sha256", "corpus", "speaker", "label", "corpus_label", "duration_s", "voiced_share",
        "n_segments", "linear_times", "linear_spectrogram",
    ),
    "frames": (),
}  # fmt: skip


class AuditError(ValueError):
    """The path is not an avemo output that can be audited."""


@dataclass(frozen=True)
class SourceFile:
    clip_id: str
    sha256: str  # as recorded when the output was made
    file: str | None  # where the source is expected now; None when no record says where it lies


@dataclass(frozen=True)
class DvcOrigin:
    """The dvc.lock stage whose outs contain the audited file."""

    stage: str
    out: str
    lock: str
    recorded_md5: str | None  # the file's md5 as dvc.lock (or the out folder's .dir listing) records it
    current_md5: str

    @property
    def matches(self) -> bool | None:
        return None if self.recorded_md5 is None else self.recorded_md5 == self.current_md5


@dataclass(frozen=True)
class Step:
    """One upstream stage run: what it wrote, when, how long it took and from which commit."""

    stage: str
    file: str
    written_at: str | None
    seconds: float | None
    commit: str | None


@dataclass(frozen=True)
class AuditRecord:
    path: str
    kind: str  # the avemo table name (manifest, segments, predictions, ...) or "checkpoint"
    schema_version: str | None
    rows: int | None
    stage: str | None
    avemo_version: str | None
    git: dict[str, Any]
    written_at: str | None
    seconds: float | None  # wall time of the stage run that wrote the file, when recorded
    stage_seconds: dict[str, float]  # compute seconds per sub-stage (preprocess), summed over clips
    params: dict[str, Any]
    tools: dict[str, str]
    details: dict[str, Any]  # per kind: inputs, face embedder, system, fold, classes, the clip's rows...
    sources: list[SourceFile]
    sources_from: str | None  # the record that lists the sources (the file itself or an upstream one)
    lineage: list[Step]
    dvc: DvcOrigin | None
    clip: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "dvc": self.dvc and {**dataclasses.asdict(self.dvc), "matches": self.dvc.matches}}


@dataclass(frozen=True)
class Finding:
    """One drift: which file, what changed, and what to do about it."""

    kind: str  # source_missing, source_changed, recomputed_differs, dvc_changed, upstream_changed
    file: str
    clip_id: str | None
    detail: str
    action: str


@dataclass(frozen=True)
class Verification:
    path: str
    sources_checked: int
    recomputed: list[str]  # clip ids whose rows were re-computed and compared
    recomputed_columns: list[str]
    findings: list[Finding]
    notes: list[str]  # what was not checked, and why; environment differences
    seconds: float

    @property
    def clean(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "clean": self.clean}


# ---------------------------------------------------------------------------------------------- paths


def project_root(path: Path) -> Path | None:
    """The nearest folder above ``path`` holding dvc.yaml: recorded relative paths are relative to it."""
    for folder in Path(path).resolve().parents:
        if (folder / "dvc.yaml").is_file() or (folder / "dvc.lock").is_file():
            return folder
    return None


def resolve(recorded: str | Path, root: Path | None) -> Path:
    """A recorded path as it lies now: absolute as is; relative to the project root, else the cwd."""
    recorded = Path(recorded)
    if recorded.is_absolute():
        return recorded
    bases = [b for b in (root, Path.cwd()) if b is not None]
    return next((b / recorded for b in bases if (b / recorded).exists()), bases[0] / recorded)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------------------------ DVC


def md5_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def dvc_origin(path: Path, root: Path | None = None) -> DvcOrigin | None:
    """The dvc.lock stage whose outs hold ``path`` (a file inside an out folder counts), and the md5 it recorded.

    A folder out's per-file md5 is read from its ``.dir`` listing in the DVC cache; where that listing
    is not in the cache the recorded md5 is None (unknown), not a mismatch.
    """
    root = root or project_root(path)
    lock = root / "dvc.lock" if root else None
    if lock is None or not lock.is_file():
        return None
    try:
        relative = Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return None
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for name, stage in stages.items():
        for out in stage.get("outs", []):
            out_path = out["path"].rstrip("/")
            if relative != out_path and not relative.startswith(out_path + "/"):
                continue
            md5 = out.get("md5")
            if md5 and md5.endswith(".dir"):
                md5 = _md5_in_dir_listing(root, md5, relative[len(out_path) + 1 :])
            return DvcOrigin(name, out_path, str(lock), md5, md5_file(Path(path)))
    return None


def _md5_in_dir_listing(root: Path, dir_md5: str, relpath: str) -> str | None:
    listing = root / ".dvc" / "cache" / "files" / "md5" / dir_md5[:2] / dir_md5[2:]
    if not listing.is_file():
        return None
    return next((e["md5"] for e in json.loads(listing.read_text()) if e["relpath"] == relpath), None)


# ---------------------------------------------------------------------------------------------- records


def _parquet_kind(path: Path) -> tuple[str, str | None]:
    meta = pq.read_schema(path).metadata or {}
    name = meta.get(SCHEMA_NAME_KEY)
    if name is None:
        raise AuditError(f"{path} is a Parquet file but not an avemo table (no avemo.schema in its metadata)")
    version = meta.get(SCHEMA_VERSION_KEY)
    return name.decode(), version.decode() if version else None


def _doc_seconds(doc: dict[str, Any]) -> float | None:
    if doc.get("stage") == "train" and doc.get("runs"):
        return sum(r["seconds"] for r in doc["runs"])
    return doc.get("flow_seconds", doc.get("seconds"))


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def lineage(doc: dict[str, Any], root: Path | None) -> list[Step]:
    """The upstream stage runs, newest first: evaluate -> train -> preprocess -> ingest, as far as recorded."""
    steps: list[Step] = []
    seen: set[str] = set()
    while doc:
        stage = doc.get("stage")
        if stage == "evaluate" and doc.get("model_dir"):
            upstream = resolve(doc["model_dir"], root) / "train.json"
            doc = _read_json(upstream) or {}
        elif stage == "train" and doc.get("features"):
            upstream = resolve(doc["features"], root) / "clips.parquet"
            doc = (read_provenance(upstream) if upstream.is_file() else None) or {}
        elif stage == "preprocess" and doc.get("manifest"):
            upstream = resolve(doc["manifest"], root)
            doc = (read_provenance(upstream) if upstream.is_file() else None) or {}
        else:
            break
        if not doc or str(upstream) in seen:
            break
        seen.add(str(upstream))
        steps.append(
            Step(doc.get("stage", "?"), _display(upstream), doc.get("written_at"), _doc_seconds(doc), doc.get("git", {}).get("commit"))
        )
    return steps


def _manifest_rows(manifest: Path) -> dict[str, dict[str, Any]]:
    if not manifest.is_file():
        return {}
    return {r["clip_id"]: r for r in pq.read_table(manifest).to_pylist()}


def _located(hashes: dict[str, str], prep_doc: dict[str, Any], root: Path | None) -> list[SourceFile]:
    """Recorded source hashes with the files they name, found through the manifest the stage read."""
    corpus = resolve(prep_doc["corpus_dir"], root) if prep_doc.get("corpus_dir") else None
    rows = _manifest_rows(resolve(prep_doc["manifest"], root)) if prep_doc.get("manifest") else {}
    return [
        SourceFile(clip, sha, _display(corpus / rows[clip]["path"]) if corpus and clip in rows else None)
        for clip, sha in sorted(hashes.items())
    ]


def _clip_ids(path: Path) -> list[str]:
    return pq.read_table(path, columns=["clip_id"])["clip_id"].to_pylist()


def describe(path: Path | str, clip: str | None = None) -> AuditRecord:
    """Where ``path`` (an avemo Parquet file or a checkpoint) came from; ``clip`` narrows it to one clip."""
    path = Path(path)
    if not path.exists():
        raise AuditError(f"{path} does not exist; give an avemo output, e.g. data/features/segments.parquet")
    if path.is_dir():
        examples = sorted(p.name for p in path.iterdir() if p.suffix in (".parquet", ".pt"))[:4]
        raise AuditError(f"{path} is a folder; audit one of its files ({', '.join(examples) or 'none found'})")
    root = project_root(path)
    if path.suffix == ".pt":
        return _describe_checkpoint(path, root, clip)
    if path.suffix != ".parquet":
        raise AuditError(f"{path}: avemo audits Parquet outputs and .pt checkpoints, not {path.suffix or 'this file'}")
    kind, version = _parquet_kind(path)
    doc = read_provenance(path)
    if doc is None:
        raise AuditError(f"{path} has no avemo provenance document; it was not written by avemo: re-run its stage")
    clip_ids = _clip_ids(path)
    details: dict[str, Any] = {"clips": len(set(clip_ids))}
    sources, sources_from = _describe_sources(path, kind, doc, root, details)
    if clip is not None:
        known = set(clip_ids) | {s.clip_id for s in sources}
        if clip not in known:
            raise AuditError(f"clip {clip} is not in {path} ({len(set(clip_ids))} clips, e.g. {', '.join(sorted(set(clip_ids))[:3])})")
        sources = [s for s in sources if s.clip_id == clip]
        details["clip_rows"] = clip_ids.count(clip)
        if kind in ("manifest", "predictions", "failures", "clips"):
            table = pq.read_table(path)
            details["clip_row"] = [_short(r) for r in table.filter(pc.equal(table["clip_id"], clip)).to_pylist()]
    return AuditRecord(
        path=_display(path),
        kind=kind,
        schema_version=version,
        rows=len(clip_ids),
        stage=doc.get("stage"),
        avemo_version=doc.get("avemo_version"),
        git=doc.get("git", {}),
        written_at=doc.get("written_at"),
        seconds=_doc_seconds(doc),
        stage_seconds=doc.get("stage_seconds") or {},
        params=doc.get("params", {}),
        tools=doc.get("tools", {}),
        details=details,
        sources=sources,
        sources_from=sources_from,
        lineage=lineage(doc, root),
        dvc=dvc_origin(path, root),
        clip=clip,
    )


def _short(row: dict[str, Any]) -> dict[str, Any]:
    """A row without its long arrays, for display."""
    return {k: v for k, v in row.items() if not isinstance(v, list) or len(v) <= 16}


def _describe_sources(
    path: Path, kind: str, doc: dict[str, Any], root: Path | None, details: dict[str, Any]
) -> tuple[list[SourceFile], str | None]:
    """The source clips the file derives from, as recorded, and the per-kind inputs it names."""
    here = _display(path)
    for key in ("manifest", "corpus_dir", "features", "model_dir", "checkpoints", "face_embedder", "system", "skipped", "train_written_at"):
        if doc.get(key) not in (None, [], {}):
            details[key] = doc[key]
    if kind == "manifest":
        corpus = resolve(doc.get("corpus_dir", path.parent), root)
        table = pq.read_table(path, columns=["clip_id", "path", "sha256"])
        return [SourceFile(r["clip_id"], r["sha256"], _display(corpus / r["path"])) for r in table.to_pylist()], here
    if doc.get("stage") == "preprocess":
        hashes = doc.get("sources")
        if hashes is None:  # failures.parquet records only the manifest it read: its clips are the sources
            manifest = resolve(doc["manifest"], root) if doc.get("manifest") else None
            if manifest is None or not manifest.is_file():
                return [], None
            hashes = {clip: row["sha256"] for clip, row in _manifest_rows(manifest).items()}
            doc = {**doc, "corpus_dir": (read_provenance(manifest) or {}).get("corpus_dir")}
            return _located(hashes, doc, root), _display(manifest)
        return _located(hashes, doc, root), here
    # train and evaluate outputs: the sources the training run recorded of its features
    model_dir = resolve(doc["model_dir"], root) if doc.get("model_dir") else path.parent
    train_doc = _read_json(model_dir / "train.json")
    if not train_doc or not train_doc.get("features_sources"):
        return [], None
    features = resolve(train_doc["features"], root)
    prep_doc = read_provenance(features / "clips.parquet") if (features / "clips.parquet").is_file() else None
    return _located(train_doc["features_sources"], prep_doc or {}, root), _display(model_dir / "train.json")


def _describe_checkpoint(path: Path, root: Path | None, clip: str | None) -> AuditRecord:
    from tasks.learning.checkpoints import load_checkpoint
    from tasks.learning.trained import TrainError

    try:
        _, meta = load_checkpoint(path)
    except TrainError as err:
        raise AuditError(str(err)) from err
    train_doc = _read_json(path.parent / "train.json") or {}
    run = next((r for r in train_doc.get("runs", []) if r.get("checkpoint") == path.name), {})
    details = {
        key: meta.get(key)
        for key in ("system", "model", "fold", "test_speakers", "task", "classes", "best_epoch", "hyperparameters")
    }
    details["seed"] = meta.get("settings", {}).get("seed")
    details["epochs_run"] = len(meta.get("history", []))
    details["best_val_uar"] = run.get("best_val_uar")
    details["features"] = train_doc.get("features")
    details["feature_params"] = meta.get("feature_params")
    sources: list[SourceFile] = []
    sources_from = None
    if train_doc.get("features_sources"):
        features = resolve(train_doc["features"], root)
        prep = read_provenance(features / "clips.parquet") if (features / "clips.parquet").is_file() else None
        sources = _located(train_doc["features_sources"], prep or {}, root)
        sources_from = _display(path.parent / "train.json")
    if clip is not None:
        folds = path.parent / "folds.parquet"
        roles = pq.read_table(folds).to_pylist() if folds.is_file() else []
        role = next((r["role"] for r in roles if r["fold"] == meta.get("fold") and r["clip_id"] == clip), None)
        if role is None and clip not in {s.clip_id for s in sources}:
            raise AuditError(f"clip {clip} is neither in the fold of {path} ({folds}) nor among its features' sources")
        details["clip_role"] = role or "not used by this fold"
        sources = [s for s in sources if s.clip_id == clip]
    return AuditRecord(
        path=_display(path),
        kind="checkpoint",
        schema_version=None,
        rows=None,
        stage="train",
        avemo_version=meta.get("avemo_version"),
        git=train_doc.get("git", {}),
        written_at=train_doc.get("written_at"),
        seconds=run.get("seconds"),
        stage_seconds={},
        params=train_doc.get("params") or meta.get("settings", {}),
        tools=train_doc.get("tools", {}),
        details=details,
        sources=sources,
        sources_from=sources_from,
        lineage=lineage(train_doc, root) if train_doc else [],
        dvc=dvc_origin(path, root),
        clip=clip,
    )


# ---------------------------------------------------------------------------------------------- verify


def _rerun_hint(record: AuditRecord) -> str:
    stage = record.dvc.stage if record.dvc else record.stage
    return f"`dvc repro {stage}`" if record.dvc else f"re-run `avemo {stage}`"


def check_sources(record: AuditRecord) -> tuple[int, list[Finding], list[str]]:
    """Re-hash every source the record names: (how many were checked, findings, notes)."""
    findings, notes, checked = [], [], 0
    unplaced = [s.clip_id for s in record.sources if s.file is None]
    if unplaced:
        notes.append(f"{len(unplaced)} source(s) could not be located (no manifest row), not re-hashed: {', '.join(unplaced[:5])}")
    if not record.sources:
        notes.append("no source hashes are recorded for this file: sources not checked")
    for source in record.sources:
        if source.file is None:
            continue
        checked += 1
        file = Path(source.file)
        if not file.is_file():
            findings.append(
                Finding("source_missing", source.file, source.clip_id, "the source file is missing",
                        f"restore it (e.g. `dvc checkout`), or rebuild without it: {_rerun_hint(record)}")
            )  # fmt: skip
        elif (now := sha256_file(file)) != source.sha256:
            findings.append(
                Finding(
                    "source_changed", source.file, source.clip_id,
                    f"sha256 is {now[:16]}…, recorded {source.sha256[:16]}… (the bytes changed since {record.path} was made)",
                    f"restore the original file, or rebuild from the new bytes: {_rerun_hint(record)}",
                )
            )  # fmt: skip
    return checked, findings, notes


def check_dvc(record: AuditRecord) -> tuple[list[Finding], list[str]]:
    if record.dvc is None:
        return [], ["not a DVC-tracked output (no dvc.lock stage lists it): DVC check skipped"]
    if record.dvc.matches is None:
        return [], [f"dvc.lock stage {record.dvc.stage}: the file's recorded md5 is not in the DVC cache, not compared"]
    if record.dvc.matches:
        return [], []
    return [
        Finding(
            "dvc_changed", record.path, None,
            f"md5 {record.dvc.current_md5} differs from {record.dvc.recorded_md5} recorded by {record.dvc.lock} (stage {record.dvc.stage})",
            f"`dvc checkout {record.dvc.out}` restores the recorded version; `dvc repro {record.dvc.stage}` rebuilds it",
        )
    ], []  # fmt: skip


def environment_notes(record: AuditRecord) -> list[str]:
    """Where the running avemo and tools differ from those recorded: a cause to suspect for a mismatch."""
    notes = []
    now = git_commit()
    if record.git.get("commit") and now.get("commit") and record.git["commit"] != now["commit"]:
        notes.append(f"code now at git {now['commit'][:8]}{' (dirty)' if now.get('dirty') else ''}, recorded {record.git['commit'][:8]}")
    tools = tool_versions()
    changed = [f"{name} {tools.get(name)} (recorded {version})" for name, version in record.tools.items() if tools.get(name) != version]
    if changed:
        notes.append("tool versions now: " + ", ".join(changed))
    return notes


def sample_clips(clip_ids: Iterable[str], n: int, seed: int = 0) -> list[str]:
    """A reproducible sample: the same clips for the same file, n and seed."""
    pool = sorted(set(clip_ids))
    return sorted(random.Random(seed).sample(pool, min(n, len(pool))))


def compare_values(stored: list[Any], fresh: list[Any]) -> str | None:
    """None when two columns agree (floats within RTOL/ATOL), else what differs."""
    if stored == fresh:
        return None
    if len(stored) != len(fresh):
        return f"{len(stored)} stored rows, {len(fresh)} re-computed"
    try:
        a, b = np.asarray(stored, dtype=np.float64), np.asarray(fresh, dtype=np.float64)
    except (TypeError, ValueError):  # strings, or nulls where the other has a list
        row = next(i for i, (x, y) in enumerate(zip(stored, fresh)) if x != y)
        return f"row {row}: stored {_brief(stored[row])}, re-computed {_brief(fresh[row])}"
    if a.shape != b.shape:
        return f"shape {a.shape} stored, {b.shape} re-computed"
    if np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True):
        return None
    diff = np.abs(np.nan_to_num(a - b, nan=np.inf))
    at = np.unravel_index(int(np.argmax(diff)), diff.shape)
    bad = int(np.sum(~np.isclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True)))
    return f"{bad} value(s) differ, largest at row {at[0]}: stored {a[at]:.6g}, re-computed {b[at]:.6g}"


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def verify(path: Path | str, sample: int = 3, clip: str | None = None, faces: bool = False, seed: int = 0) -> Verification:
    """Drift of ``path`` from its record: sources re-hashed, DVC md5, a seeded sample of rows re-computed.

    ``faces`` also re-runs the face stages (MTCNN, several seconds a clip) for clips.parquet and
    segments.parquet; frames.parquet always needs them.
    """
    started = time.perf_counter()
    path = Path(path)
    record = describe(path, clip)
    checked, findings, notes = check_sources(record)
    dvc_findings, dvc_notes = check_dvc(record)
    findings += dvc_findings
    notes += dvc_notes
    changed = {f.clip_id for f in findings if f.kind.startswith("source_")}
    recomputed: list[str] = []
    columns: list[str] = []
    if sample <= 0:
        notes.append("--sample 0: no rows re-computed")
    elif record.kind in FEATURE_TABLES:
        recomputed, columns = _recompute_features(path, record, sample, clip, faces, seed, changed, findings, notes)
    elif record.kind == "manifest":
        recomputed, columns = _reprobe_manifest(path, record, sample, clip, seed, changed, findings)
    elif record.kind == "checkpoint":
        _check_training_features(path, record, findings, notes)
    elif record.kind == "predictions":
        recomputed, columns = _recompute_predictions(path, record, sample, clip, seed, findings, notes)
    else:
        notes.append(f"{record.kind} rows are not re-computed by audit; its sources and DVC md5 were checked")
    if findings:
        notes += environment_notes(record)
    return Verification(record.path, checked, recomputed, columns, findings, notes, time.perf_counter() - started)


def _reprobe_manifest(
    path: Path, record: AuditRecord, n: int, clip: str | None, seed: int, changed: set[str | None], findings: list[Finding]
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


def _recompute_finding(record: AuditRecord, clip_id: str, column: str, why: str, rerun: str) -> Finding:
    return Finding(
        "recomputed_differs", record.path, clip_id,
        f"column {column}: {why}",
        f"the same source and parameters now give other values: the file was modified, or code or tools changed "
        f"(see the notes); rebuild it with {rerun}",
    )  # fmt: skip


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
    from pydantic import ValidationError

    from avemo.config import PreprocessParams
    from tasks.clip import StageFailure, clip_features, face_models, read_sources

    try:
        params = PreprocessParams(**record.params)
    except ValidationError as err:
        notes.append(f"the recorded parameters are not valid for this avemo ({err.error_count()} errors): rows not re-computed")
        return [], []
    manifest = resolve(record.details.get("manifest", ""), project_root(path))
    if not manifest.is_file():
        notes.append(f"manifest {manifest} not found: rows not re-computed")
        return [], []
    files = {s.clip_id: Path(s.file) for s in record.sources if s.file}
    sources = {s.clip_id: dataclasses.replace(s, file=files[s.clip_id]) for s in read_sources(manifest)[0] if s.clip_id in files}
    table = pq.read_table(path)
    in_file = table["clip_id"].to_pylist()
    skipped = sorted(c for c in changed if c in set(in_file))
    if skipped:
        notes.append(f"not re-computed, their source changed: {', '.join(skipped)}")
    pool = [c for c in ([clip] if clip else in_file) if c not in changed and c in sources]
    chosen = sample_clips(pool, n, seed)
    with_faces = faces or record.kind == "frames"
    if with_faces:
        _, embedder = face_models(params)
        recorded = (record.details.get("face_embedder") or {}).get("weights_sha256")
        if recorded and recorded != embedder.weights_sha256:
            findings.append(
                Finding("upstream_changed", record.path, None,
                        f"face embedder {embedder.name} weights sha256 {embedder.weights_sha256[:16]}…, recorded {recorded[:16]}…",
                        "install the recorded weights, or rebuild the features: `dvc repro preprocess`")
            )  # fmt: skip
    compared: set[str] = set()
    face_skipped = []
    for clip_id in chosen:
        source = sources[clip_id]
        run_faces = with_faces and source.info.has_video
        if source.info.has_video and not with_faces:
            face_skipped.append(clip_id)
        fresh = clip_features(source, params, with_faces=run_faces)
        if isinstance(fresh, StageFailure):
            findings.append(_recompute_finding(record, clip_id, "(all)", f"re-computation fails at {fresh.stage}: {fresh.reason}", "`dvc repro preprocess`"))
            continue
        stored = table.filter(pc.equal(table["clip_id"], clip_id))
        new = {"clips": pa.Table.from_pylist([fresh.clip]), "segments": fresh.segments, "frames": fresh.frames}[record.kind]
        names = [c for c in table.column_names if c != "clip_id"]
        if not run_faces:
            names = [c for c in names if c in AUDIO_COLUMNS[record.kind]]
        for name in names:
            if why := compare_values(stored[name].to_pylist(), new[name].to_pylist()):
                findings.append(_recompute_finding(record, clip_id, name, why, "`avemo preprocess` (dvc repro preprocess)"))
        compared.update(names)
    if face_skipped:
        notes.append(f"face columns of {', '.join(face_skipped)} not re-computed (pass --faces to run MTCNN, a few seconds a clip)")
    if clip is None and len(chosen) < len(set(pool)):
        notes.append(f"re-computed {len(chosen)} of {len(set(pool))} clips (seed {seed}); --sample N for more, --clip ID for one")
    return chosen, sorted(compared)


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
            Finding("upstream_changed", str(clips), None,
                    f"{len(differing)} clip(s) of the features differ from those the model was trained on: {', '.join(differing[:5])}", rerun)
        )  # fmt: skip
    if record.details.get("feature_params") and current.get("params") != record.details["feature_params"]:
        keys = _differing_keys(record.details["feature_params"], current.get("params") or {})
        findings.append(
            Finding("upstream_changed", str(clips), None, f"feature parameters changed since training: {', '.join(keys[:6])}", rerun)
        )
    notes.append("model weights are not re-trained by audit; the features it names were compared by source hash and parameters")


def _differing_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            keys += _differing_keys(x, y, f"{prefix}{key}.")
        elif x != y:
            keys.append(f"{prefix}{key} {x!r} -> {y!r}")
    return keys


def _recompute_predictions(
    path: Path, record: AuditRecord, n: int, clip: str | None, seed: int, findings: list[Finding], notes: list[str]
) -> tuple[list[str], list[str]]:
    """Predict a sample of clips again with the recorded checkpoints; each fold's whole test set is run,
    since speaker normalisation reads all of a fold's test clips."""
    from flows.evaluate import evaluate_fold
    from models.registry import get_spec
    from tasks.learning.features import load_features, task_labels

    root = project_root(path)
    details = record.details
    system = record.params.get("system") or details.get("system")
    model_dir = resolve(details["model_dir"], root)
    train_doc = _read_json(model_dir / "train.json")
    rerun = f"`avemo evaluate --system {system}` (dvc repro evaluate@{system})"
    if train_doc is None:
        notes.append(f"{model_dir / 'train.json'} not found: predictions not re-computed")
        return [], []
    if details.get("train_written_at") and train_doc.get("written_at") != details["train_written_at"]:
        findings.append(
            Finding("upstream_changed", _display(model_dir / "train.json"), None,
                    f"the models were re-trained at {train_doc.get('written_at')}, after these predictions' training run "
                    f"({details['train_written_at']})", f"re-evaluate: {rerun}")
        )  # fmt: skip
        return [], []
    checkpoints = [model_dir / name for name in details.get("checkpoints", [])]
    missing = [p.name for p in checkpoints if not p.is_file()]
    if missing:
        findings.append(Finding("source_missing", str(model_dir), None, f"checkpoints missing: {', '.join(missing)}", f"re-train, then {rerun}"))
        return [], []
    table = pq.read_table(path)
    stored = {r["clip_id"]: r for r in table.to_pylist()}
    chosen = sample_clips([clip] if clip else stored, n, seed)
    folds = pq.read_table(model_dir / "folds.parquet").to_pylist()
    spec = get_spec(system)
    features = load_features(resolve(details["features"], root), spec.needs, spec.input_kind)
    labels = task_labels(features, train_doc["params"]["task"])
    folds_run = sorted({stored[c]["fold"] for c in chosen})
    notes.append(f"re-predicted the whole test set of fold(s) {', '.join(folds_run)} with the recorded checkpoints")
    for fold in folds_run:
        members = [p for p in checkpoints if p.name.startswith(f"fold-{fold}-seed")]
        test = [r["clip_id"] for r in folds if r["fold"] == fold and r["role"] == "test"]
        clip_predictions, _, _ = evaluate_fold.fn(fold, members, features, labels, test)
        fresh = dict(zip(clip_predictions.clip_ids, clip_predictions.probabilities.tolist()))
        for clip_id in (c for c in chosen if stored[c]["fold"] == fold):
            if clip_id not in fresh:
                findings.append(_recompute_finding(record, clip_id, "(all)", f"no longer predicted in fold {fold}", rerun))
            elif why := compare_values([stored[clip_id]["probabilities"]], [fresh[clip_id]]):
                findings.append(_recompute_finding(record, clip_id, "probabilities", why, rerun))
    return chosen, ["probabilities"]


# ---------------------------------------------------------------------------------------------- text


def _flatten(doc: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key in sorted(doc):
        value = doc[key]
        if isinstance(value, dict) and value:
            items += _flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} s"


def render(record: AuditRecord, max_sources: int = 30) -> str:
    """The record as readable text: what a person asks first comes first."""
    git = record.git or {}
    commit = git.get("commit") or "unknown"
    state = {True: " (uncommitted changes)", False: " (clean)"}.get(git.get("dirty"), "")
    what = f"{record.kind} {record.schema_version}" if record.schema_version else record.kind
    size = f", {record.rows} rows" if record.rows is not None else ""
    lines = [record.path, f"  table        {what}{size}" + (f", {record.details['clips']} clips" if "clips" in record.details else "")]
    if record.dvc:
        match = {True: "md5 matches dvc.lock", False: "md5 DIFFERS from dvc.lock", None: "md5 not in the DVC cache"}[record.dvc.matches]
        lines.append(f"  dvc stage    {record.dvc.stage} (out {record.dvc.out}; {match})")
    else:
        lines.append("  dvc stage    none (not an out of a dvc.lock stage)")
    lines.append(f"  stage        {record.stage}, avemo {record.avemo_version}, git {commit}{state}")
    took = f", took {_seconds(record.seconds)}" if record.seconds is not None else ""
    lines.append(f"  written      {record.written_at}{took}")
    if record.stage_seconds:
        spent = [f"{k} {_seconds(v)}" if v else f"{k} 0 s (all from the cache)" for k, v in record.stage_seconds.items()]
        lines.append("  compute      " + ", ".join(spent) + " (summed over clips)")
    for key, value in record.details.items():
        if key in ("clips", "feature_params"):
            continue
        text = json.dumps(value, default=str) if not isinstance(value, str) else value
        lines.append(f"  {key:<12} {text if len(text) <= 200 else text[:197] + '...'}")
    if record.lineage:
        lines.append("  upstream")
        for step in record.lineage:
            lines.append(f"    {step.stage:<11} {step.file}  written {step.written_at}, {_seconds(step.seconds)}, git {(step.commit or '?')[:8]}")
    if record.tools:
        lines.append("  tools        " + ", ".join(f"{k} {v}" for k, v in sorted(record.tools.items())))
    lines.append("  params")
    lines += [f"    {k}: {json.dumps(v, default=str)}" for k, v in _flatten(record.params)]
    origin = f" (recorded in {record.sources_from})" if record.sources_from and record.sources_from != record.path else ""
    lines.append(f"  sources      {len(record.sources)}{origin}")
    for source in record.sources[:max_sources]:
        lines.append(f"    {source.clip_id}  sha256 {source.sha256}  {source.file or '(location unknown)'}")
    if len(record.sources) > max_sources:
        lines.append(f"    ... {len(record.sources) - max_sources} more (--json lists all, --clip ID shows one)")
    return "\n".join(lines)


def render_verification(result: Verification) -> str:
    head = "clean: no drift found" if result.clean else f"DRIFT: {len(result.findings)} finding(s)"
    recomputed = (
        f"{len(result.recomputed)} clip(s) re-computed ({', '.join(result.recomputed)}), columns {', '.join(result.recomputed_columns)}"
        if result.recomputed
        else "no rows re-computed"
    )
    lines = [f"verify {result.path}: {head}", f"  {result.sources_checked} source(s) re-hashed; {recomputed}; {result.seconds:.1f} s"]
    for f in result.findings:
        lines.append(f"  ✗ {f.kind}: {f.file}" + (f" [clip {f.clip_id}]" if f.clip_id else ""))
        lines.append(f"      {f.detail}")
        lines.append(f"      what to do: {f.action}")
    lines += [f"  note: {note}" for note in result.notes]
    return "\n".join(lines)
