"""One typed configuration, loaded from ``params.yaml``: its one home, and the home of every default.

``params.yaml`` in avemo's repository holds every setting with its value and meaning; this module holds
their types and bounds, and reads the values from that file (``DEFAULTS``), so no value is written twice.
A params file given with ``--params`` may hold only what it changes: the keys it leaves out keep
``params.yaml``'s values. Each stage reads only its own section, so DVC's dotted ``params`` in
``dvc.yaml`` re-run exactly the stages whose settings changed. Unknown keys are rejected: a typo in a
params file must not silently fall back to a default.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from avemo.errors import AvemoError

DEFAULTS = Path(__file__).resolve().parents[1] / "params.yaml"


class ConfigError(AvemoError):
    """``params.yaml`` is missing, unreadable or holds a wrong setting."""


@functools.cache
def _shipped() -> dict[str, Any]:
    try:
        return yaml.safe_load(DEFAULTS.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(
            f"{DEFAULTS} not found: avemo reads its settings' values from the params.yaml of its repository; "
            "install avemo from a clone (make setup, or pip install -e .)"
        ) from None


def shipped_section(dotted: str) -> dict[str, Any]:
    """The section of ``params.yaml`` at ``dotted`` (``preprocess.vad``; "" for the whole file)."""
    section: Any = _shipped()
    for key in filter(None, dotted.split(".")):
        section = section.get(key) or {}
    return section if isinstance(section, dict) else {}


class _Section(BaseModel):
    """A section of ``params.yaml``; the keys a given document leaves out take their values from there."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    defaults_at: ClassVar[str | None] = None  # where in params.yaml the section's values live

    @model_validator(mode="before")
    @classmethod
    def _shipped_values(cls, data: Any) -> Any:
        if cls.defaults_at is None or not isinstance(data, dict):
            return data
        return {**shipped_section(cls.defaults_at), **data}


class SampleParams(_Section):
    defaults_at = "sample"

    out_dir: Path
    speakers: list[int]
    emotions: list[str]
    sentences: list[str]
    seed: int


CorpusFormat = Literal["cremad", "ravdess", "enterface", "mead", "emodb", "csv"]


class IngestParams(_Section):
    defaults_at = "ingest"

    corpus_dir: Path
    format: CorpusFormat
    csv: Path | None  # --format csv: the path,speaker,label file (default CORPUS_DIR/labels.csv)
    manifest: Path
    workers: int = Field(ge=1)  # files probed and hashed at once


class AudioParams(_Section):
    defaults_at = "preprocess.audio"

    sample_rate: Literal[8000, 16000, 32000, 48000]  # rates webrtcvad accepts
    pre_emphasis: float = Field(ge=0.0, le=1.0)
    ffmpeg: str = Field(min_length=1)  # bundled, system or a path to a binary: avemo.ffmpeg.decoder


class VadParams(_Section):
    defaults_at = "preprocess.vad"

    frame_ms: Literal[10, 20, 30]
    aggressiveness: int = Field(ge=0, le=3)
    smoothing_frames: int = Field(ge=1)

    @field_validator("smoothing_frames")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("smoothing_frames must be odd (a centred median filter)")
        return value


class SegmentParams(_Section):
    defaults_at = "preprocess.segment"

    window_ms: float = Field(gt=0)
    hop_ms: float = Field(gt=0)
    frames: int = Field(ge=1)
    overlap_frames: int = Field(ge=0)
    min_voiced_share: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _overlap_below_frames(self) -> SegmentParams:
        if self.overlap_frames >= self.frames:
            raise ValueError("overlap_frames must be smaller than frames")
        return self

    @property
    def stride_frames(self) -> int:
        return self.frames - self.overlap_frames

    @property
    def duration_s(self) -> float:
        """655 ms for the paper's 25 ms windows, 10 ms shift and 64 frames."""
        return (self.window_ms + (self.frames - 1) * self.hop_ms) / 1000.0


class AudioFeatureParams(_Section):
    defaults_at = "preprocess.audio_features"

    n_mels: int = Field(ge=1)
    fmin: float = Field(ge=0.0)
    fmax: float = Field(gt=0.0)
    log_offset: float = Field(gt=0.0)
    delta_width: int = Field(ge=1)
    linear_window_ms: float = Field(gt=0.0)
    linear_hop_ms: float = Field(gt=0.0)
    linear_n_fft: int = Field(ge=2)
    linear_bins: int = Field(ge=1)


class FaceParams(_Section):
    defaults_at = "preprocess.faces"

    frames_per_segment: int = Field(ge=1)
    margin: float = Field(ge=0.0)
    crop_size: int = Field(ge=8)
    detect_every: int = Field(ge=1)
    min_face_share: float = Field(gt=0.0, le=1.0)
    min_probability: float = Field(ge=0.0, le=1.0)
    decode_short_side: int | None = Field(ge=48)  # frames decoded at most this high (or wide); None: native


class FaceFeatureParams(_Section):
    defaults_at = "preprocess.face_features"

    extractor: Literal["fer2013", "vggface2"]
    weights_path: Path | None
    batch_size: int = Field(ge=1)


# Audio front-ends: the two the papers' networks read (always computed) and the pretrained ones that
# preprocess.frontends adds to every clip; a system picks one with models.SYSTEM.frontend.
BUILTIN_FRONTENDS: tuple[str, ...] = ("logmel", "linear")
PretrainedFrontend = Literal["egemaps", "compare", "whisper"]
AudioFrontend = Literal["logmel", "linear", "egemaps", "compare", "whisper"]
AUDIO_FRONTENDS: tuple[str, ...] = get_args(AudioFrontend)


class WhisperParams(_Section):
    defaults_at = "preprocess.whisper"

    weights_path: Path | None  # a CTranslate2 Whisper folder; None: the Whisper base avemo installs
    pad_to_s: float = Field(ge=0.0, le=30.0)  # silence appended up to this length before the encoder
    compute_type: str  # CTranslate2's: int8, int8_float16, float16, float32, ...
    device: str  # auto: CUDA when present, else CPU
    threads: int = Field(ge=1)  # per clip worker


class PreprocessParams(_Section):
    defaults_at = "preprocess"

    out_dir: Path
    cache_dir: Path
    workers: int = Field(ge=1)
    task_runner: Literal["thread", "sequential"]
    # A Dask scheduler (tcp://HOST:8786): clips then run on its workers and task_runner is not used.
    # Workers must see the corpus and cache_dir at the same paths as this machine (a shared filesystem).
    dask_address: str | None
    # torch and BLAS threads in each Dask worker process. Features match a single-process run bit for bit
    # only at equal thread counts: both sum in an order that depends on them (last float32 bits differ).
    dask_compute_threads: int = Field(ge=1)
    audio: AudioParams
    vad: VadParams
    segment: SegmentParams
    audio_features: AudioFeatureParams
    faces: FaceParams
    face_features: FaceFeatureParams
    frontends: list[PretrainedFrontend]  # pretrained audio front-ends computed for every clip
    speed_perturbation: list[float]  # also each front-end's clip vector of the clip played this much faster
    whisper: WhisperParams

    @field_validator("speed_perturbation")
    @classmethod
    def _plausible_speeds(cls, value: list[float]) -> list[float]:
        if any(not 0.5 <= speed <= 2.0 or speed == 1.0 for speed in value):
            raise ValueError(f"speed factors lie in [0.5, 2] and are not 1, got {value}")
        return value


class SplitParams(_Section):
    """Speaker-independent folds (AVEF Sec. 4.2: LOSO for few speakers, LOSGO for many)."""

    defaults_at = "train.split"

    scheme: Literal["loso", "losgo", "fixed", "speakers"]
    k: int = Field(ge=2)  # losgo: speaker groups
    seed: int
    val_speakers: int = Field(ge=0)  # per fold, drawn from its training speakers, for early stopping
    shares: tuple[float, float, float]  # fixed: train/validation/test speakers
    test_speakers: list[str]  # speakers: the test speakers (a corpus's official split, a held-out set)
    validation_speakers: list[str]  # speakers: the validation speakers (empty: val_speakers drawn)


class TrainParams(_Section):
    defaults_at = "train"

    features_dir: Path
    out_dir: Path  # one folder per system
    systems: list[str]  # what `dvc repro` trains and evaluates
    task: Literal["emotion", "arousal", "valence"]
    split: SplitParams
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)  # global: under torchrun split over the processes
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    optimizer: Literal["sgd", "adamw"]  # AdamW (decoupled weight decay); SGD: momentum 0.9
    patience: int = Field(ge=1)  # early stopping on validation unweighted average recall
    class_weighting: bool
    seeds: list[int]  # an ensemble of len(seeds) models per fold, averaged at the posterior level
    device: str  # auto: CUDA when present, else CPU
    workers: int = Field(ge=1)  # (fold, seed) runs trained at once
    speaker_normalisation: bool  # standardise each speaker's features with its own statistics
    speed_perturbation: bool  # pooled systems: also learn from the training clips' speed-perturbed vectors
    mask_bands: int = Field(ge=0)  # SpecAugment-style masking while training: widest band mask
    mask_frames: int = Field(ge=0)  # ... and widest frame mask; 0 = none
    dbn_pretrain_epochs: int = Field(ge=0)  # avef: greedy RBM pre-training of the DBN
    dbn_pretrain_lr: float = Field(gt=0)
    svm_degree: int = Field(ge=1)  # avef: the clip-level polynomial SVM
    svm_C: float = Field(gt=0)
    init_from: Path | None  # transfer learning: a checkpoint trained on another corpus
    trainable: list[str] | None  # with init_from: parameter-name prefixes re-trained, the rest frozen

    @field_validator("optimizer", mode="before")
    @classmethod
    def _renamed_adam(cls, value: object) -> object:
        if value == "adam":
            raise ValueError("optimizer 'adam' is now called 'adamw', the optimizer it always built: write adamw")
        return value


class EvaluateParams(_Section):
    defaults_at = "evaluate"

    out_dir: Path  # one folder per system


class ReportParams(_Section):
    """``avemo report``: one HTML file over every system's evaluation, PNG copies of its figures."""

    defaults_at = "report"

    out_dir: Path  # report.html and figures/*.png
    example_clips: int = Field(ge=0)  # clips whose attention curves are drawn (deep-fusion Fig. 5)
    tsne_perplexity: float = Field(gt=0)  # lowered to (clips - 1) / 3 on small corpora
    tsne_max_clips: int = Field(ge=5)  # t-SNE on a fixed random subset of the clips beyond this
    seed: int  # picks the example clips and the subset, seeds t-SNE


class PredictParams(_Section):
    """``avemo predict``: the feature settings come from the checkpoint, never from here."""

    defaults_at = "predict"

    model: Path | None  # a checkpoint file, or a model folder (its fold checkpoints averaged)
    inputs: list[Path]  # media files predicted when the command names none (the DVC stage's)
    out: Path  # where the DVC stage writes (the command: stdout)
    format: Literal["json", "csv"]
    window_s: float = Field(ge=2.0)  # longer files are processed this many seconds at a time
    device: str  # cpu | auto (CUDA if available) | cuda | cuda:N: where the emotion models run
    batch_size: int = Field(ge=1)  # segments or clips per forward pass


class ServeCorpus(_Section):
    """One corpus ``avemo serve`` re-trains on (an item of ``serve.corpora``)."""

    dir: Path
    format: CorpusFormat
    csv: Path | None = None  # format csv: the path,speaker,label file (absent: DIR/labels.csv)


class ServeParams(_Section):
    """Scheduled re-training (``avemo serve``): a cycle re-trains only when a corpus's content changed."""

    defaults_at = "serve"

    cron: str  # when a cycle runs (5-field cron, in ``timezone``)
    timezone: str
    deployment: str  # the Prefect deployment's name
    corpora: list[ServeCorpus]
    system: str
    work_dir: Path  # last manifest, held-out speakers, decisions, candidates
    # Test speakers no model of this work_dir ever trains on; empty: drawn once, in the first cycle.
    heldout_speakers: list[str]
    heldout_share: float = Field(gt=0.0, lt=1.0)  # ... as this share of the speakers (at least 1)
    split: SplitParams | None  # the candidate's folds over the other speakers (None: train.split)

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"cron must have 5 fields (minute hour day month weekday), got {value!r}")
        return value

    @field_validator("corpora")
    @classmethod
    def _some_corpus(cls, value: list[ServeCorpus]) -> list[ServeCorpus]:
        if not value:
            raise ValueError("list at least one corpus to re-train on")
        return value


class Params(_Section):
    defaults_at = ""

    sample: SampleParams
    ingest: IngestParams
    preprocess: PreprocessParams
    train: TrainParams
    models: dict[str, dict[str, Any]]  # per system: its front-end, recipe and hyper-parameters (see system())
    evaluate: EvaluateParams
    report: ReportParams
    predict: PredictParams
    serve: ServeParams

    @field_validator("models", mode="before")
    @classmethod
    def _shipped_systems(cls, value: Any) -> Any:
        """A file's ``models`` keeps the systems it leaves out, and each system's keys it leaves out."""
        if not isinstance(value, dict):
            return value
        shipped = shipped_section("models")
        return {**shipped, **{name: {**(shipped.get(name) or {}), **(keys or {})} for name, keys in value.items()}}

    def system(self, name: str) -> SystemChoice:
        """What ``models.NAME`` chooses: an audio ``frontend`` (absent: the paper's), a ``train`` recipe
        over the train section's (any of its optimisation keys), and the model's hyper-parameters."""
        section = dict(self.models.get(name) or {})
        frontend = section.pop("frontend", None)
        recipe = section.pop("train", None) or {}
        names = frontend if isinstance(frontend, list) else [frontend] if frontend is not None else []
        if any(n not in AUDIO_FRONTENDS for n in names):
            raise ConfigError(f"models.{name}.frontend {frontend!r}: choose among {', '.join(AUDIO_FRONTENDS)}")
        frontend = "+".join(names) or None  # several (a list): their vectors side by side, "a+b"
        if isinstance(section.get("C"), list):
            section["C"] = tuple(section["C"])
        try:
            train = TrainParams.model_validate({**self.train.model_dump(), **recipe})
        except ValidationError as err:
            raise ConfigError(f"models.{name}.train: {err}") from err
        return SystemChoice(name, frontend, train, section)


@dataclass(frozen=True)
class SystemChoice:
    """One system as params.yaml sets it: front-end, the train section with its recipe, hyper-parameters."""

    name: str
    frontend: str | None  # None: the model's paper front-end; "a+b": several, side by side
    train: TrainParams
    hyperparameters: dict[str, Any]


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate a params file; a missing file, and the keys a file leaves out, keep the values
    of avemo's own ``params.yaml``."""
    path = Path(path)
    if not path.exists():
        return Params.model_validate({})
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return Params.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as err:
        raise ConfigError(f"{path}: {err}") from err
