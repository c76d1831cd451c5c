"""Which checkpoints can predict which files: one checkpoint or a model folder's, their feature settings.

A model folder (``data/models/SYSTEM``) predicts with all its fold and seed checkpoints and averages
their posteriors, as evaluation averages seeds; its checkpoints must agree on the system, the classes
and the feature settings, and a file must have the streams the model needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

import avemo
from avemo.config import PreprocessParams
from avemo.errors import AvemoError
from models.registry import MODALITIES, PRETRAINED_FRONTENDS, InputKind, get_spec, models_for
from tasks.learning.checkpoints import load_checkpoint, load_trained
from tasks.learning.trained import Trained, TrainError
from tasks.probe import MediaInfo, ProbeError, probe

# The preprocess sections that shape features; the others (folders, workers, runners) do not.
FEATURE_SECTIONS = ("audio", "vad", "segment", "audio_features", "faces", "face_features", "whisper")
# How many crops go through one forward pass, and where and on how many threads Whisper runs: not values.
NOT_SHAPING = frozenset({"face_features.batch_size", "whisper.device", "whisper.threads"})


CHECKPOINT_GLOB = "fold-*-seed*.pt"


class PredictError(AvemoError):
    """A checkpoint, a setting or a media file that prediction cannot use."""


@dataclass(frozen=True)
class Predictor:
    """The model of one checkpoint, or the models of a folder's checkpoints, and the feature settings they read."""

    model_path: Path
    checkpoints: tuple[Path, ...]
    members: tuple[Trained, ...]
    params: PreprocessParams  # the preprocess settings the training features were made with
    trained_with: str  # the avemo version that saved the (first) checkpoint

    @property
    def model_name(self) -> str:
        return self.members[0].model_name

    @property
    def system(self) -> str:
        return str(self.members[0].extra.get("system", self.model_name))

    @property
    def task(self) -> str:
        return self.members[0].task

    @property
    def classes(self) -> tuple[str, ...]:
        return self.members[0].classes

    @property
    def frontend(self) -> str | None:
        """The audio front-end the models read (None: their paper's)."""
        return self.members[0].shapes.audio_frontend

    @property
    def speaker_normalised(self) -> bool:
        """Whether its models standardise each speaker on that speaker's own files."""
        return any(member.standardization is None for member in self.members)

    @property
    def knows_typical_speaker(self) -> bool:
        """Whether its speaker-normalised checkpoints keep a typical training speaker's statistics (older
        ones do not)."""
        return all(m.speaker_fallback is not None for m in self.members if m.standardization is None)

    @property
    def needs(self) -> frozenset[str]:
        return get_spec(self.model_name).needs

    @property
    def input_kind(self) -> InputKind:
        return get_spec(self.model_name).input_kind


def feature_settings(params: PreprocessParams) -> dict[str, Any]:
    """The settings that shape features, by dotted key (``faces.crop_size``)."""
    dump = params.model_dump(include=set(FEATURE_SECTIONS), mode="json")
    flat = {f"{section}.{key}": value for section in FEATURE_SECTIONS for key, value in dump[section].items()}
    return {key: value for key, value in flat.items() if key not in NOT_SHAPING}


def differing_settings(expected: PreprocessParams, given: PreprocessParams) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (expected, given) for every feature setting that differs."""
    a, b = feature_settings(expected), feature_settings(given)
    return {key: (a[key], b[key]) for key in a if a[key] != b[key]}


def checkpoint_paths(model: Path) -> list[Path]:
    """The checkpoint itself, or every fold and seed checkpoint of a model folder."""
    model = Path(model)
    if model.is_dir():
        paths = sorted(model.glob(CHECKPOINT_GLOB))
        if not paths:
            raise PredictError(
                f"{model} holds no {CHECKPOINT_GLOB} checkpoints; train the system first "
                f"(avemo train --system {model.name}) or pass one checkpoint file"
            )
        return paths
    if not model.exists():
        raise PredictError(
            f"model {model} not found; pass a checkpoint (data/models/SYSTEM/fold-FOLD-seed0.pt) or a model "
            "folder (data/models/SYSTEM)"
        )
    return [model]


def _stored_feature_params(path: Path, meta: dict[str, Any]) -> PreprocessParams:
    stored = meta.get("feature_params")
    if not stored:
        raise PredictError(
            f"{path} does not record the feature settings its model was trained on, so its inputs cannot be "
            "reproduced; re-train it with `avemo train`, which stores them in the checkpoint"
        )
    try:
        return PreprocessParams.model_validate({k: v for k, v in stored.items() if k in FEATURE_SECTIONS})
    except ValidationError as err:
        raise PredictError(
            f"{path}: its stored feature settings are not valid for avemo {avemo.__version__} ({err}); "
            "re-train it with this version"
        ) from err


def load_predictor(model: Path, device: str = "cpu") -> Predictor:
    """Load a checkpoint or a model folder's checkpoints, refusing any without consistent feature settings."""
    paths = checkpoint_paths(model)
    members: list[Trained] = []
    params: PreprocessParams | None = None
    trained_with = "unknown"
    for path in paths:
        try:
            _, meta = load_checkpoint(path)
            own = _stored_feature_params(path, meta)
            trained = load_trained(path, device)
        except TrainError as err:
            raise PredictError(str(err)) from err
        except RuntimeError as err:  # load_state_dict: the network's code changed since the checkpoint
            raise PredictError(
                f"{path}: its weights do not fit this avemo's {meta['model']} network "
                f"({str(err).strip().splitlines()[-1].strip()}); re-train it (avemo train --system "
                f"{meta.get('system', meta['model'])})"
            ) from err
        if params is None:
            params, trained_with = own, str(meta.get("avemo_version", "unknown"))
        else:
            first = members[0]
            if (trained.model_name, trained.task, trained.classes) != (first.model_name, first.task, first.classes):
                raise PredictError(
                    f"{path} is a {trained.model_name} model of {list(trained.classes)} but {paths[0]} is a "
                    f"{first.model_name} model of {list(first.classes)}; "
                    "a model folder must hold one system's checkpoints"
                )
            differing = differing_settings(params, own)
            if differing:
                raise PredictError(
                    f"{path} and {paths[0]} were trained on features made with different settings "
                    f"({', '.join(differing)}); predict with one of them"
                )
        members.append(trained)
    assert params is not None  # checkpoint_paths gives at least one checkpoint
    frontend = members[0].shapes.audio_frontend
    # only the front-end the models read is computed for a file, not every one the training features had
    needed = [name for name in (frontend or "").split("+") if name in PRETRAINED_FRONTENDS]
    params = params.model_copy(update={"frontends": needed})
    return Predictor(Path(model), tuple(paths), tuple(members), params, trained_with)


def check_feature_params(predictor: Predictor, params: PreprocessParams, params_file: Path) -> None:
    """Refuse settings whose features would differ from those the model was trained on."""
    differing = differing_settings(predictor.params, params)
    if differing:
        listed = "; ".join(
            f"{key}: {ours!r} in the checkpoint, {theirs!r} in {params_file}"
            for key, (ours, theirs) in differing.items()
        )
        raise PredictError(
            f"{predictor.checkpoints[0]} was trained on features made with other preprocess settings than "
            f"{params_file} sets ({listed}). Predict uses the checkpoint's own settings: drop --params "
            f"{params_file}, or preprocess and re-train with it (avemo preprocess; avemo train) to use its settings"
        )


def check_media(predictor: Predictor, file: Path) -> MediaInfo:
    """The file's stream facts, if the predictor can use the file; a clear refusal otherwise."""
    file = Path(file)
    if not file.is_file():
        raise PredictError(f"{file} not found; pass an existing video or audio file")
    try:
        info = probe(file)
    except ProbeError as err:
        raise PredictError(f"{file}: {err}; pass a video or audio file ffmpeg can read") from err
    if not info.has_audio:
        raise PredictError(f"{file} has no audio stream; avemo finds the speech segments in the audio, so it needs one")
    if "video" in predictor.needs and not info.has_video:
        audio_models = ", ".join(models_for({"audio"}))
        needs = " and ".join(m for m in MODALITIES if m in predictor.needs)
        raise PredictError(
            f"{file} has no video stream, but {predictor.model_path} ({predictor.system}) needs {needs}; "
            f"predict it with a model trained on audio only ({audio_models}), e.g. --model data/models/audio"
        )
    return info
