"""Checkpoints: one ``torch.save`` file per run, holding the state dict and a JSON string of metadata.

``torch.load(weights_only=True)`` reads it without running pickled code. The SVM of ``avef`` is not
pickled: the checkpoint keeps its settings and the pooled training embeddings it was fitted on, and
:func:`load_trained` re-fits it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import avemo
from avemo.device import resolve_device
from models.registry import InputShapes, build_model
from tasks.learning.standardization import (
    Standardization,
)
from tasks.learning.trained import (
    EpochRecord,
    Trained,
    TrainError,
    TrainSettings,
    TransferReport,
    fit_clip_svm,
)

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: Path, model: nn.Module, meta: Mapping[str, Any]) -> None:
    """State dict + JSON metadata in one file, written atomically; ``meta`` must be JSON-able."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": state,
        "meta": json.dumps(meta),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state dict, meta) of a :func:`save_checkpoint` file; refuses anything needing pickled code."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainError(f"checkpoint {path} not found; train a model first (avemo train)") from None
    except Exception as err:  # torch raises UnpicklingError and friends for foreign files
        raise TrainError(f"{path} is not an avemo checkpoint readable without pickled code: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path} is not an avemo checkpoint of format {CHECKPOINT_FORMAT}; re-train the model")
    return payload["state_dict"], json.loads(payload["meta"])


def _json_ready(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def checkpoint_meta(trained: Trained) -> dict[str, Any]:
    """Everything :func:`load_trained` needs, as JSON types."""
    svm = None
    if trained.svm_training is not None:
        embeddings, labels = trained.svm_training
        svm = {"embeddings": embeddings.tolist(), "labels": labels.tolist()}
    return {
        "avemo_version": avemo.__version__,
        "model": trained.model_name,
        "hyperparameters": {k: _json_ready(v) for k, v in trained.hyperparameters.items()},
        "input_shapes": dataclasses.asdict(trained.shapes),
        "task": trained.task,
        "classes": list(trained.classes),
        "standardization": trained.standardization.to_json() if trained.standardization else None,
        "speaker_fallback": trained.speaker_fallback.to_json() if trained.speaker_fallback else None,
        "settings": dataclasses.asdict(trained.settings),
        "history": [dataclasses.asdict(r) for r in trained.history],
        "best_epoch": trained.best_epoch,
        "clip_svm_training": svm,
        "transfer": dataclasses.asdict(trained.transfer) if trained.transfer else None,
        **trained.extra,
    }


def save_trained(path: Path, trained: Trained) -> None:
    save_checkpoint(path, trained.model, checkpoint_meta(trained))


def _migrated_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings of a checkpoint written before the optimizer ``adam`` was renamed ``adamw`` (what it
    always built), or before speed perturbation existed (none was used): the same run, in today's terms."""
    settings = {"speed_perturbation": False, **settings}
    return {**settings, "optimizer": "adamw"} if settings.get("optimizer") == "adam" else settings


def _legacy_shapes(meta: dict[str, Any], hyperparameters: dict[str, Any]) -> InputShapes:
    """The input sizes of a checkpoint written before they were stored: its feature settings give them
    (and a crop size or embedding width then passed as a hyper-parameter, which it moves out)."""
    features = meta.get("feature_params") or {}
    faces = features.get("faces", {})
    embedding = {"fer2013": 304, "vggface2": 512}.get(features.get("face_features", {}).get("extractor"))
    return InputShapes(
        mel_bands=features.get("audio_features", {}).get("n_mels"),
        segment_frames=features.get("segment", {}).get("frames"),
        faces_per_segment=faces.get("frames_per_segment"),
        crop_size=hyperparameters.pop("crop_size", faces.get("crop_size")),
        embedding_dim=hyperparameters.pop("video_dim", embedding),
    )


def _tuples(values: Mapping[str, Any]) -> dict[str, Any]:
    """JSON's lists back as the tuples they were saved from."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def load_trained(path: Path, device: str = "cpu") -> Trained:
    """Rebuild the model from its registry name, input sizes and hyper-parameters, load its weights,
    re-fit the SVM."""
    state, meta = load_checkpoint(path)
    hyperparameters = _tuples(meta["hyperparameters"])
    if "input_shapes" in meta:
        shapes = InputShapes(**_tuples(meta["input_shapes"]))
    else:
        shapes = _legacy_shapes(meta, hyperparameters)
    model = build_model(meta["model"], len(meta["classes"]), shapes, **hyperparameters)
    model.load_state_dict(state)
    model.to(resolve_device(device)).eval()
    known = {
        "avemo_version",
        "model",
        "hyperparameters",
        "input_shapes",
        "task",
        "classes",
        "standardization",
        "speaker_fallback",
        "settings",
        "history",
        "best_epoch",
        "clip_svm_training",
        "transfer",
    }
    transfer = meta["transfer"]
    trained = Trained(
        model_name=meta["model"],
        hyperparameters=hyperparameters,
        shapes=shapes,
        model=model,
        task=meta["task"],
        classes=tuple(meta["classes"]),
        standardization=Standardization.from_json(meta["standardization"]) if meta["standardization"] else None,
        # None in a checkpoint written before it was stored: prediction then says what it does instead
        speaker_fallback=Standardization.from_json(fallback) if (fallback := meta.get("speaker_fallback")) else None,
        settings=TrainSettings(**_migrated_settings(meta["settings"])),
        history=[EpochRecord(**r) for r in meta["history"]],
        best_epoch=meta["best_epoch"],
        transfer=TransferReport(**_tuples(transfer)) if transfer else None,
        extra={k: v for k, v in meta.items() if k not in known},
    )
    if meta["clip_svm_training"] is not None:
        svm = meta["clip_svm_training"]
        fit_clip_svm(
            trained,
            np.asarray(svm["embeddings"], np.float32),
            np.asarray(svm["labels"], np.int64),
        )
    return trained
