"""The audit record of an avemo output (``describe``): where it came from, read from the artifact itself.

Everything ``describe`` reports is read from the artifact itself (the provenance document in a Parquet
file's metadata, a checkpoint's JSON meta and the ``train.json`` beside it), from the upstream files those
name, and from ``dvc.lock``. ``avemo audit --verify`` then checks the record against the world
(``tasks.audit.verify``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from avemo.errors import AvemoError
from avemo.parquet_io import read_provenance
from avemo.schemas import SCHEMA_NAME_KEY, SCHEMA_VERSION_KEY

# The inputs a provenance document may name, shown in the record's details when present.
RECORDED_INPUTS = (
    "manifest",
    "corpus_dir",
    "features",
    "model_dir",
    "checkpoints",
    "face_embedder",
    "system",
    "skipped",
    "train_written_at",
)


class AuditError(AvemoError):
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
        return {
            **dataclasses.asdict(self),
            "dvc": self.dvc and {**dataclasses.asdict(self.dvc), "matches": self.dvc.matches},
        }


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


def display_path(path: Path) -> str:
    """``path`` relative to the cwd where it lies below it, as the record shows it; else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def md5_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def dvc_origin(path: Path, root: Path | None = None) -> DvcOrigin | None:
    """The dvc.lock stage whose outs hold ``path`` (a file inside an out folder counts), and the md5 it recorded.

    A folder out's per-file md5 is read from its ``.dir`` listing in the DVC cache; where that listing
    is not in the cache the recorded md5 is None (unknown), not a mismatch.
    """
    root = root or project_root(path)
    if root is None:
        return None
    lock = root / "dvc.lock"
    if not lock.is_file():
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


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON record (``train.json``), or None where there is none."""
    return json.loads(path.read_text()) if path.is_file() else None


def lineage(doc: dict[str, Any], root: Path | None) -> list[Step]:
    """The upstream stage runs, newest first: evaluate -> train -> preprocess -> ingest, as far as recorded."""
    steps: list[Step] = []
    seen: set[str] = set()
    while doc:
        stage = doc.get("stage")
        if stage == "evaluate" and doc.get("model_dir"):
            upstream = resolve(doc["model_dir"], root) / "train.json"
            doc = read_json(upstream) or {}
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
            Step(
                doc.get("stage", "?"),
                display_path(upstream),
                doc.get("written_at"),
                _doc_seconds(doc),
                doc.get("git", {}).get("commit"),
            )
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
        SourceFile(clip, sha, display_path(corpus / rows[clip]["path"]) if corpus and clip in rows else None)
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
        sources = _narrow_to_clip(path, kind, clip, clip_ids, sources, details)
    return AuditRecord(
        path=display_path(path),
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


def _narrow_to_clip(
    path: Path, kind: str, clip: str, clip_ids: list[str], sources: list[SourceFile], details: dict[str, Any]
) -> list[SourceFile]:
    """The sources of ``clip`` alone, its rows added to ``details``; a clip the file does not hold is refused."""
    known = set(clip_ids) | {s.clip_id for s in sources}
    if clip not in known:
        examples = ", ".join(sorted(set(clip_ids))[:3])
        raise AuditError(f"clip {clip} is not in {path} ({len(set(clip_ids))} clips, e.g. {examples})")
    details["clip_rows"] = clip_ids.count(clip)
    if kind in ("manifest", "predictions", "failures", "clips"):
        table = pq.read_table(path)
        details["clip_row"] = [_short(r) for r in table.filter(pc.equal(table["clip_id"], clip)).to_pylist()]
    return [s for s in sources if s.clip_id == clip]


def _short(row: dict[str, Any]) -> dict[str, Any]:
    """A row without its long arrays, for display."""
    return {k: v for k, v in row.items() if not isinstance(v, list) or len(v) <= 16}


def _describe_sources(
    path: Path, kind: str, doc: dict[str, Any], root: Path | None, details: dict[str, Any]
) -> tuple[list[SourceFile], str | None]:
    """The source clips the file derives from, as recorded, and the per-kind inputs it names."""
    here = display_path(path)
    for key in RECORDED_INPUTS:
        if doc.get(key) not in (None, [], {}):
            details[key] = doc[key]
    if kind == "manifest":
        corpus = resolve(doc.get("corpus_dir", path.parent), root)
        rows = pq.read_table(path, columns=["clip_id", "path", "sha256"]).to_pylist()
        return [SourceFile(r["clip_id"], r["sha256"], display_path(corpus / r["path"])) for r in rows], here
    if doc.get("stage") == "preprocess":
        hashes = doc.get("sources")
        if hashes is None:  # failures.parquet records only the manifest it read: its clips are the sources
            manifest = resolve(doc["manifest"], root) if doc.get("manifest") else None
            if manifest is None or not manifest.is_file():
                return [], None
            hashes = {clip: row["sha256"] for clip, row in _manifest_rows(manifest).items()}
            doc = {**doc, "corpus_dir": (read_provenance(manifest) or {}).get("corpus_dir")}
            return _located(hashes, doc, root), display_path(manifest)
        return _located(hashes, doc, root), here
    # train and evaluate outputs: the sources the training run recorded of its features
    model_dir = resolve(doc["model_dir"], root) if doc.get("model_dir") else path.parent
    train_doc = read_json(model_dir / "train.json")
    if not train_doc or not train_doc.get("features_sources"):
        return [], None
    return _training_sources(train_doc, root), display_path(model_dir / "train.json")


def _training_sources(train_doc: dict[str, Any], root: Path | None) -> list[SourceFile]:
    """The sources a training run recorded of its features, located through the features' own record."""
    features = resolve(train_doc["features"], root)
    prep_doc = read_provenance(features / "clips.parquet") if (features / "clips.parquet").is_file() else None
    return _located(train_doc["features_sources"], prep_doc or {}, root)


def _describe_checkpoint(path: Path, root: Path | None, clip: str | None) -> AuditRecord:
    from tasks.learning.checkpoints import load_checkpoint
    from tasks.learning.trained import TrainError

    try:
        _, meta = load_checkpoint(path)
    except TrainError as err:
        raise AuditError(str(err)) from err
    train_doc = read_json(path.parent / "train.json") or {}
    run: dict[str, Any] = next((r for r in train_doc.get("runs", []) if r.get("checkpoint") == path.name), {})
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
        sources = _training_sources(train_doc, root)
        sources_from = display_path(path.parent / "train.json")
    if clip is not None:
        sources = _narrow_checkpoint_to_clip(path, meta.get("fold"), clip, sources, details)
    return AuditRecord(
        path=display_path(path),
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


def _narrow_checkpoint_to_clip(
    path: Path, fold: str | None, clip: str, sources: list[SourceFile], details: dict[str, Any]
) -> list[SourceFile]:
    """The sources of ``clip`` alone, its role in the checkpoint's fold added to ``details``."""
    folds = path.parent / "folds.parquet"
    roles = pq.read_table(folds).to_pylist() if folds.is_file() else []
    role = next((r["role"] for r in roles if r["fold"] == fold and r["clip_id"] == clip), None)
    if role is None and clip not in {s.clip_id for s in sources}:
        raise AuditError(f"clip {clip} is neither in the fold of {path} ({folds}) nor among its features' sources")
    details["clip_role"] = role or "not used by this fold"
    return [s for s in sources if s.clip_id == clip]
