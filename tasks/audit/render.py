"""The audit record and the verification result as readable text, as ``avemo audit`` prints them.

What a person asks first comes first: the table, its DVC stage, the run that wrote it, then the inputs,
upstream runs, tools, parameters and sources; a verification leads with clean or drift, then each
finding with what to do about it. ``--json`` prints the records' ``to_json`` instead.
"""

from __future__ import annotations

import json
from typing import Any

from tasks.audit.lineage import AuditRecord
from tasks.audit.verify import Verification

DVC_MATCH = {True: "md5 matches dvc.lock", False: "md5 DIFFERS from dvc.lock", None: "md5 not in the DVC cache"}


def render(record: AuditRecord, max_sources: int = 30) -> str:
    """The record as readable text: what a person asks first comes first."""
    lines = [*_run_lines(record), *_detail_lines(record)]
    if record.lineage:
        lines.append("  upstream")
        for step in record.lineage:
            run = f"written {step.written_at}, {_seconds(step.seconds)}, git {(step.commit or '?')[:8]}"
            lines.append(f"    {step.stage:<11} {step.file}  {run}")
    if record.tools:
        lines.append("  tools        " + ", ".join(f"{k} {v}" for k, v in sorted(record.tools.items())))
    lines.append("  params")
    lines += [f"    {k}: {json.dumps(v, default=str)}" for k, v in _flatten(record.params)]
    lines += _source_lines(record, max_sources)
    return "\n".join(lines)


def _run_lines(record: AuditRecord) -> list[str]:
    """The file, its table, its DVC stage, and the stage run that wrote it."""
    git = record.git or {}
    commit = git.get("commit") or "unknown"
    states: dict[Any, str] = {True: " (uncommitted changes)", False: " (clean)"}  # "dirty" may be missing or null
    state = states.get(git.get("dirty"), "")
    what = f"{record.kind} {record.schema_version}" if record.schema_version else record.kind
    size = f", {record.rows} rows" if record.rows is not None else ""
    clips = f", {record.details['clips']} clips" if "clips" in record.details else ""
    lines = [record.path, f"  table        {what}{size}{clips}"]
    if record.dvc:
        lines.append(f"  dvc stage    {record.dvc.stage} (out {record.dvc.out}; {DVC_MATCH[record.dvc.matches]})")
    else:
        lines.append("  dvc stage    none (not an out of a dvc.lock stage)")
    lines.append(f"  stage        {record.stage}, avemo {record.avemo_version}, git {commit}{state}")
    took = f", took {_seconds(record.seconds)}" if record.seconds is not None else ""
    lines.append(f"  written      {record.written_at}{took}")
    if record.stage_seconds:
        spent = [
            f"{k} {_seconds(v)}" if v else f"{k} 0 s (all from the cache)" for k, v in record.stage_seconds.items()
        ]
        lines.append("  compute      " + ", ".join(spent) + " (summed over clips)")
    return lines


def _detail_lines(record: AuditRecord) -> list[str]:
    """The per-kind details (inputs, system, fold, the clip's rows...), each cut to 200 characters."""
    lines = []
    for key, value in record.details.items():
        if key in ("clips", "feature_params"):
            continue
        text = json.dumps(value, default=str) if not isinstance(value, str) else value
        lines.append(f"  {key:<12} {text if len(text) <= 200 else text[:197] + '...'}")
    return lines


def _source_lines(record: AuditRecord, max_sources: int) -> list[str]:
    """How many sources, where they are recorded, and the first ``max_sources`` of them."""
    recorded_elsewhere = record.sources_from and record.sources_from != record.path
    origin = f" (recorded in {record.sources_from})" if recorded_elsewhere else ""
    lines = [f"  sources      {len(record.sources)}{origin}"]
    for source in record.sources[:max_sources]:
        lines.append(f"    {source.clip_id}  sha256 {source.sha256}  {source.file or '(location unknown)'}")
    if len(record.sources) > max_sources:
        lines.append(f"    ... {len(record.sources) - max_sources} more (--json lists all, --clip ID shows one)")
    return lines


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


def render_verification(result: Verification) -> str:
    """The verification as readable text: clean or drift first, then each finding and what to do about it."""
    head = "clean: no drift found" if result.clean else f"DRIFT: {len(result.findings)} finding(s)"
    if result.recomputed:
        columns = ", ".join(result.recomputed_columns)
        recomputed = f"{len(result.recomputed)} clip(s) re-computed ({', '.join(result.recomputed)}), columns {columns}"
    else:
        recomputed = "no rows re-computed"
    lines = [
        f"verify {result.path}: {head}",
        f"  {result.sources_checked} source(s) re-hashed; {recomputed}; {result.seconds:.1f} s",
    ]
    for f in result.findings:
        lines.append(f"  ✗ {f.kind}: {f.file}" + (f" [clip {f.clip_id}]" if f.clip_id else ""))
        lines.append(f"      {f.detail}")
        lines.append(f"      what to do: {f.action}")
    lines += [f"  note: {note}" for note in result.notes]
    return "\n".join(lines)
