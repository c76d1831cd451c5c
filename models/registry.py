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

from avemo.errors import AvemoError
from models.avef import AVEF, AVEFConfig, VisualNet, avef_audio
from models.baselines import (
    AudioOnly,
    ConcatFusion,
    DecisionConfig,
    DecisionFusion,
    IntraModalAttentionFBP,
    IntraModalConfig,
    VideoOnly,
)
from models.classical import (
    FusionConfig,
    LateFusion,
    LogisticRegression,
    LogRegConfig,
    SupportVectorMachine,
    SVMConfig,
)
from models.fbp import FBPConfig, FBPNet, StreamConfig

# segment: one 655 ms segment at a time (AVEF); clip: a clip's sequences (FBP family, baselines); pooled: a
# clip's front-end vector (the classical systems).
InputKind = Literal["segment", "clip", "pooled"]
# The audio front-end each kind reads when a system names none: the papers' own, and for the classical
# systems eGeMAPS, the set its authors proposed as the common reference.
PAPER_FRONTENDS: dict[str, str] = {"clip": "linear", "segment": "logmel", "pooled": "egemaps"}
PRETRAINED_FRONTENDS: tuple[str, ...] = ("egemaps", "compare", "whisper")
MODALITIES: tuple[str, ...] = ("audio", "video")


class ModalityError(AvemoError):
    """The model needs features the corpus does not have."""


class ModelSpecError(AvemoError):
    """An unknown model name or hyper-parameter, or features without a size the model needs."""


@dataclass(frozen=True)
class InputShapes:
    """The sizes of the features a model reads, taken from the features themselves (their fixed-shape
    Parquet columns, as loaded), so a model is never built for a second, possibly stale, copy of them.
    None: the features hold no such input (audio-only features have no crops or embeddings)."""

    mel_bands: int | None = None  # segment models: log-mel bands of a segment image
    segment_frames: int | None = None  # ... and its analysis frames
    faces_per_segment: int | None = None  # ... and its face crops
    crop_size: int | None = None  # S of the S x S crops
    embedding_dim: int | None = None  # clip models: width of a frame's face embedding
    audio_frontend: str | None = None  # the audio front-end the features come from (linear, logmel, whisper, ...)
    audio_dim: int | None = None  # width of its audio vectors, where they are vectors (not log-mel images)
    audio_blocks: tuple[int, ...] | None = None  # several front-ends' vectors side by side: each one's width


# Constructor field -> the InputShapes size it takes; a model's spec lists the ones it has.
SHAPE_FIELDS: dict[str, str] = {
    "mel_bins": "mel_bands",
    "mel_frames": "segment_frames",
    "frames": "faces_per_segment",
    "crop_size": "crop_size",
    "video_dim": "embedding_dim",
    "audio_frontend": "audio_frontend",
    "audio_dim": "audio_dim",
    "audio_blocks": "audio_blocks",
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    needs: frozenset[str]
    input_kind: InputKind
    build: Callable[..., nn.Module]  # build(num_classes, **sizes, **hyperparameters)
    hyperparameters: tuple[str, ...]  # the keyword arguments build accepts besides num_classes and sizes
    description: str
    sizes: tuple[str, ...] = ()  # constructor fields the features' InputShapes fill (SHAPE_FIELDS)

    @property
    def frontends(self) -> tuple[str, ...]:
        """The audio front-ends the model reads, its paper's first; none for a video model."""
        if "audio" not in self.needs:
            return ()
        if self.name == "fusion":
            return PRETRAINED_FRONTENDS
        paper = PAPER_FRONTENDS[self.input_kind]
        return tuple(dict.fromkeys((paper, *PRETRAINED_FRONTENDS)))

    def missing_sizes(self, shapes: InputShapes) -> list[str]:
        """The sizes the features lack for this model: a video model's, and its audio front-end's."""
        frontend = shapes.audio_frontend or PAPER_FRONTENDS[self.input_kind]
        optional = {"audio_frontend", "audio_blocks"}  # not said: the paper front-end; one front-end
        if "video" not in self.needs:
            optional.add("video_dim")
        if frontend != "logmel":
            optional |= {"mel_bins", "mel_frames"}
        if frontend in ("linear", "logmel"):
            optional.add("audio_dim")
        return [SHAPE_FIELDS[f] for f in self.sizes if getattr(shapes, SHAPE_FIELDS[f]) is None and f not in optional]


def _configured(
    name: str,
    needs: set[str],
    kind: InputKind,
    model: type[nn.Module],
    config: type,
    description: str,
    **preset: object,
) -> ModelSpec:
    """A model built from a hyper-parameter dataclass; ``preset`` fixes fields that define the variant."""

    def build(num_classes: int, **hyperparameters: object) -> nn.Module:
        return model(config(num_classes, **{**preset, **hyperparameters}))

    fields = [f.name for f in dataclasses.fields(config) if f.name != "num_classes" and f.name not in preset]
    sizes = tuple(f for f in fields if f in SHAPE_FIELDS)
    hyperparameters = tuple(f for f in fields if f not in SHAPE_FIELDS)
    return ModelSpec(name, frozenset(needs), kind, build, hyperparameters, description, sizes)


def _direct(name: str, needs: set[str], model: Callable[..., nn.Module], description: str) -> ModelSpec:
    """A segment sub-network whose constructor takes its hyper-parameters as arguments."""
    names = [p for p in inspect.signature(model).parameters if p != "num_classes"]
    sizes = tuple(p for p in names if p in SHAPE_FIELDS)
    return ModelSpec(
        name, frozenset(needs), "segment", model, tuple(p for p in names if p not in SHAPE_FIELDS), description, sizes
    )


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
            "amfbp",
            AV,
            "clip",
            FBPNet,
            FBPConfig,
            "AG-FBP + intra-trunk FBP (AM-FBP)",
            adaptive=True,
            projection_bias=True,
            multi_level=True,
        ),
        _configured("concat", AV, "clip", ConcatFusion, StreamConfig, "both streams' vectors concatenated"),
        _configured("decision", AV, "clip", DecisionFusion, DecisionConfig, "posterior averaging of audio and video"),
        _configured("audio", {"audio"}, "clip", AudioOnly, StreamConfig, "audio stream alone (FCN + attention)"),
        _configured("video", {"video"}, "clip", VideoOnly, StreamConfig, "video stream alone (conv + attention)"),
        *(
            _configured(
                f"{kind}_attention",
                AV,
                "clip",
                IntraModalAttentionFBP,
                IntraModalConfig,
                f"{kind}-attention on both streams, then FBP (EmotiW 2019)",
                attention=kind,
            )
            for kind in ("self", "relation", "transformer")
        ),
        _configured(
            "logreg",
            {"audio"},
            "pooled",
            LogisticRegression,
            LogRegConfig,
            "multinomial logistic regression on a front-end's clip vector (the classical reference)",
        ),
        _configured(
            "svm",
            {"audio"},
            "pooled",
            SupportVectorMachine,
            SVMConfig,
            "support vector machine (RBF) on a front-end's clip vector, calibrated probabilities",
        ),
        _configured(
            "fusion",
            {"audio"},
            "pooled",
            LateFusion,
            FusionConfig,
            "logistic regressions on several front-ends' clip vectors, their posteriors averaged",
        ),
        _direct("avef_audio", {"audio"}, avef_audio, "AVEF's audio-net alone: AlexNet-shaped CNN on log-mel segments"),
        _direct("avef_video", {"video"}, VisualNet, "AVEF's visual-net alone: C3D-shaped CNN on face-crop segments"),
    )
}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelSpecError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None


def build_model(name: str, num_classes: int, shapes: InputShapes, **hyperparameters: object) -> nn.Module:
    """The named model for features of ``shapes``, with its paper's defaults, any of which
    ``hyperparameters`` overrides."""
    spec = get_spec(name)
    frontends = (shapes.audio_frontend or "").split("+")
    if shapes.audio_frontend is not None and spec.frontends and not set(frontends) <= set(spec.frontends):
        raise ModelSpecError(
            f"model {name!r} reads the audio front-ends {', '.join(spec.frontends)}, not {shapes.audio_frontend!r}"
        )
    needed = spec.missing_sizes(shapes)
    if needed:
        raise ModelSpecError(f"model {name!r} needs features with {', '.join(needed)}; these features have none")
    sizes = {field: getattr(shapes, SHAPE_FIELDS[field]) for field in spec.sizes}
    if sizes.get("audio_frontend", "") is None:
        del sizes["audio_frontend"]  # not said: the model's own, its paper's
    unknown = sorted(set(hyperparameters) - set(spec.hyperparameters))
    if unknown:
        raise ModelSpecError(
            f"model {name!r} has no hyper-parameter {', '.join(unknown)}; its hyper-parameters are: "
            f"{', '.join(spec.hyperparameters)}"
        )
    return spec.build(num_classes, **sizes, **hyperparameters)


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
