"""Model names -> builders, with the modalities each model needs and the input it reads.

Input kinds: ``segment`` models (AVEF and its sub-networks) read one 655 ms segment at a time
(log-mel image (B, 3, 64, 64), face crops (B, 3, 16, S, S)); ``clip`` models (FBP family and
baselines) read a whole clip (spectrogram frames (B, T, 200) and face embeddings (B, L, D), each with
its lengths (B,)), passed by keyword: ``model(audio=..., audio_lengths=..., video=..., video_lengths=...)``
with only the modalities the model needs.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from models.avef import AVEF, AudioNet, AVEFConfig, VisualNet
from models.baselines import (
    AudioOnly,
    ConcatFusion,
    DecisionConfig,
    DecisionFusion,
    IntraModalAttentionFBP,
    IntraModalConfig,
    VideoOnly,
)
from models.fbp import FBPConfig, FBPNet, StreamConfig

InputKind = Literal["segment", "clip"]
MODALITIES: tuple[str, ...] = ("audio", "video")


class ModalityError(ValueError):
    """The model needs features the corpus does not have."""


class ModelSpecError(ValueError):
    """An unknown model name or hyper-parameter."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    needs: frozenset[str]
    input_kind: InputKind
    build: Callable[..., nn.Module]  # build(num_classes, **hyperparameters)
    hyperparameters: tuple[str, ...]  # the keyword arguments build accepts besides num_classes
    description: str


def _configured(
    name: str, needs: set[str], kind: InputKind, model: type[nn.Module], config: type, description: str, **preset: object
) -> ModelSpec:
    """A model built from a hyper-parameter dataclass; ``preset`` fixes fields that define the variant."""

    def build(num_classes: int, **hyperparameters: object) -> nn.Module:
        return model(config(num_classes, **{**preset, **hyperparameters}))

    names = tuple(f.name for f in dataclasses.fields(config) if f.name != "num_classes" and f.name not in preset)
    return ModelSpec(name, frozenset(needs), kind, build, names, description)


def _direct(name: str, needs: set[str], model: type[nn.Module], description: str) -> ModelSpec:
    """A segment sub-network whose constructor takes its hyper-parameters as arguments."""
    names = tuple(p for p in inspect.signature(model).parameters if p != "num_classes")
    return ModelSpec(name, frozenset(needs), "segment", model, names, description)


AV = {"audio", "video"}
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _configured("avef", AV, "segment", AVEF, AVEFConfig, "audio-net + visual-net + DBN per segment (AVEF)"),
        _configured("gfbp", AV, "clip", FBPNet, FBPConfig, "global factorized bilinear pooling (G-FBP)"),
        _configured(
            "agfbp", AV, "clip", FBPNet, FBPConfig, "adaptive G-FBP (AG-FBP)", adaptive=True, projection_bias=True
        ),
        _configured("mfbp", AV, "clip", FBPNet, FBPConfig, "G-FBP + intra-trunk FBP (M-FBP)", multi_level=True),
        _configured(
            "amfbp", AV, "clip", FBPNet, FBPConfig, "AG-FBP + intra-trunk FBP (AM-FBP)",
            adaptive=True, projection_bias=True, multi_level=True,
        ),  # fmt: skip
        _configured("concat", AV, "clip", ConcatFusion, StreamConfig, "both streams' vectors concatenated"),
        _configured("decision", AV, "clip", DecisionFusion, DecisionConfig, "posterior averaging of audio and video"),
        _configured("audio", {"audio"}, "clip", AudioOnly, StreamConfig, "audio stream alone (FCN + attention)"),
        _configured("video", {"video"}, "clip", VideoOnly, StreamConfig, "video stream alone (conv + attention)"),
        *(
            _configured(
                f"{kind}_attention", AV, "clip", IntraModalAttentionFBP, IntraModalConfig,
                f"{kind}-attention on both streams, then FBP (EmotiW 2019)", attention=kind,
            )  # fmt: skip
            for kind in ("self", "relation", "transformer")
        ),
        _direct("avef_audio", {"audio"}, AudioNet, "AVEF's audio-net alone: AlexNet-shaped CNN on log-mel segments"),
        _direct("avef_video", {"video"}, VisualNet, "AVEF's visual-net alone: C3D-shaped CNN on face-crop segments"),
    )
}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelSpecError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None


def build_model(name: str, num_classes: int, **hyperparameters: object) -> nn.Module:
    """The named model with its paper's defaults, any of which ``hyperparameters`` overrides."""
    spec = get_spec(name)
    unknown = sorted(set(hyperparameters) - set(spec.hyperparameters))
    if unknown:
        raise ModelSpecError(
            f"model {name!r} has no hyper-parameter {', '.join(unknown)}; its hyper-parameters are: "
            f"{', '.join(spec.hyperparameters)}"
        )
    return spec.build(num_classes, **hyperparameters)


def models_for(available: Iterable[str]) -> list[str]:
    """The models whose modalities are all among ``available``, in registry order."""
    available = set(available)
    return [name for name, spec in MODELS.items() if spec.needs <= available]


def _describe(available: set[str]) -> str:
    present = [m for m in MODALITIES if m in available]
    if not present:
        return "neither audio nor video features"
    return f"{present[0]} only" if len(present) == 1 else "audio and video"


def check_modalities(name: str, available: Iterable[str]) -> ModelSpec:
    """The model's spec if the corpus has every modality it needs, else a :class:`ModalityError`."""
    spec = get_spec(name)
    available = set(available)
    missing = [m for m in MODALITIES if m in spec.needs - available]
    if missing:
        usable = models_for(available)
        raise ModalityError(
            f"model {name!r} needs {' and '.join(missing)} features, but this corpus has {_describe(available)}; "
            + (f"choose one of: {', '.join(usable)}" if usable else "no model can run without features")
        )
    return spec
