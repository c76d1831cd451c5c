"""The outputs of ``avemo predict``: a JSON document of the model and every file, or CSV rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import avemo
from tasks.predict.compatibility import Predictor
from tasks.predict.windows import STANDARDISATIONS, FileFailure, FilePrediction

TIMELINE = {
    "segment": "segment posteriors of the segment model",
    "clip": "each segment's span scored as a clip by the clip model; the file's emotion is the whole file's score",
}


def _probabilities(classes: Sequence[str], values: Sequence[float]) -> dict[str, float]:
    return {name: round(value, 4) for name, value in zip(classes, values, strict=True)}


def predictions_document(predictor: Predictor, results: Sequence[FilePrediction | FileFailure]) -> dict[str, Any]:
    """The JSON output: the model, then per file its emotion, probabilities and segment timeline
    (times in seconds to the millisecond, probabilities to 4 decimals)."""
    classes = predictor.classes
    files: list[dict[str, Any]] = []
    for result in results:
        if isinstance(result, FileFailure):
            files.append({"file": str(result.file), "error": {"stage": result.stage, "reason": result.reason}})
            continue
        files.append(
            {
                "file": str(result.file),
                "sha256": result.sha256,
                "duration_s": round(result.duration_s, 3),
                "has_video": result.has_video,
                "voiced_share": round(result.voiced_share, 4),
                "speaker": result.speaker,
                "standardisation": result.standardisation,
                "emotion": result.emotion,
                "probabilities": _probabilities(classes, result.probabilities),
                "windows": result.windows,
                "skipped_windows": [dataclasses.asdict(s) for s in result.skipped_windows],
                "segments": [
                    {
                        "segment": row.segment,
                        "t_begin": round(row.t_begin, 3),
                        "t_end": round(row.t_end, 3),
                        "emotion": row.emotion,
                        "probabilities": _probabilities(classes, row.probabilities),
                        "face_found": row.face_found,
                        "voiced_share": round(row.voiced_share, 4),
                    }
                    for row in result.segments
                ],
            }
        )
    return {
        "model": {
            "path": str(predictor.model_path),
            "system": predictor.system,
            "model": predictor.model_name,
            "task": predictor.task,
            "classes": list(classes),
            "checkpoints": [p.name for p in predictor.checkpoints],
            "trained_with_avemo": predictor.trained_with,
            "speaker_normalised": predictor.speaker_normalised,
        },
        "avemo_version": avemo.__version__,
        "timeline": TIMELINE[predictor.input_kind],
        "standardisations": STANDARDISATIONS,
        "files": files,
    }


def csv_columns(classes: Sequence[str]) -> list[str]:
    return [
        "file",
        "speaker",
        "level",
        "segment",
        "t_begin",
        "t_end",
        "emotion",
        *(f"p_{c}" for c in classes),
        "face_found",
        "voiced_share",
        "error",
    ]


def csv_rows(predictor: Predictor, results: Sequence[FilePrediction | FileFailure]) -> list[dict[str, Any]]:
    """The CSV output: per file a ``clip`` row (0 to its duration), its ``segment`` rows, or an ``error`` row."""
    classes = predictor.classes
    out: list[dict[str, Any]] = []
    for result in results:
        if isinstance(result, FileFailure):
            out.append({"file": str(result.file), "level": "error", "error": f"{result.stage}: {result.reason}"})
            continue
        file = {"file": str(result.file), "speaker": result.speaker}
        faces = [row.face_found for row in result.segments if row.face_found is not None]
        out.append(
            {
                **file,
                "level": "clip",
                "t_begin": 0.0,
                "t_end": round(result.duration_s, 3),
                "emotion": result.emotion,
                **{f"p_{c}": v for c, v in _probabilities(classes, result.probabilities).items()},
                "face_found": any(faces) if faces else None,
                "voiced_share": round(result.voiced_share, 4),
            }
        )
        for row in result.segments:
            out.append(
                {
                    **file,
                    "level": "segment",
                    "segment": row.segment,
                    "t_begin": round(row.t_begin, 3),
                    "t_end": round(row.t_end, 3),
                    "emotion": row.emotion,
                    **{f"p_{c}": v for c, v in _probabilities(classes, row.probabilities).items()},
                    "face_found": row.face_found,
                    "voiced_share": round(row.voiced_share, 4),
                }
            )
    return out
