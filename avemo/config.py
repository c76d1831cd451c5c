"""One typed configuration, loaded from ``params.yaml``.

Each stage reads only its own section, so DVC's dotted ``params`` in ``dvc.yaml`` re-run exactly the
stages whose settings changed. Unknown keys are rejected: a typo in ``params.yaml`` must not silently
fall back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SampleParams(_Section):
    out_dir: Path = Path("data/sample_corpus")
    speakers: list[int] = [1001, 1002, 1003]
    emotions: list[str] = ["ANG", "HAP", "NEU", "SAD"]
    sentences: list[str] = ["DFA", "IEO"]
    seed: int = 0


CorpusFormat = Literal["cremad", "ravdess", "enterface", "mead", "emodb", "csv"]


class IngestParams(_Section):
    corpus_dir: Path = Path("data/sample_corpus")
    format: CorpusFormat = "cremad"
    csv: Path | None = None  # --format csv: the path,speaker,label file (default CORPUS_DIR/labels.csv)
    manifest: Path = Path("data/manifest.parquet")
    workers: int = Field(4, ge=1)  # files probed and hashed at once


class AudioParams(_Section):
    sample_rate: Literal[8000, 16000, 32000, 48000] = 16000  # rates webrtcvad accepts
    pre_emphasis: float = Field(0.97, ge=0.0, le=1.0)


class VadParams(_Section):
    frame_ms: Literal[10, 20, 30] = 30
    aggressiveness: int = Field(2, ge=0, le=3)
    smoothing_frames: int = Field(5, ge=1)

    @field_validator("smoothing_frames")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("smoothing_frames must be odd (a centred median filter)")
        return value


class SegmentParams(_Section):
    window_ms: float = Field(25.0, gt=0)
    hop_ms: float = Field(10.0, gt=0)
    frames: int = Field(64, ge=1)
    overlap_frames: int = Field(30, ge=0)
    min_voiced_share: float = Field(0.5, ge=0.0, le=1.0)

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
    n_mels: int = Field(64, ge=1)
    fmin: float = Field(0.0, ge=0.0)
    fmax: float = Field(8000.0, gt=0.0)
    log_offset: float = Field(0.01, gt=0.0)
    delta_width: int = Field(2, ge=1)
    linear_window_ms: float = Field(40.0, gt=0.0)
    linear_hop_ms: float = Field(10.0, gt=0.0)
    linear_n_fft: int = Field(800, ge=2)
    linear_bins: int = Field(200, ge=1)


class FaceParams(_Section):
    frames_per_segment: int = Field(16, ge=1)
    margin: float = Field(0.3, ge=0.0)
    crop_size: int = Field(48, ge=8)
    detect_every: int = Field(5, ge=1)
    min_face_share: float = Field(0.2, gt=0.0, le=1.0)
    min_probability: float = Field(0.9, ge=0.0, le=1.0)


class FaceFeatureParams(_Section):
    extractor: Literal["fer2013", "vggface2"] = "fer2013"
    weights_path: Path | None = None
    batch_size: int = Field(64, ge=1)


class PreprocessParams(_Section):
    out_dir: Path = Path("data/features")
    cache_dir: Path = Path("data/cache")
    workers: int = Field(2, ge=1)
    task_runner: Literal["thread", "sequential"] = "thread"
    # A Dask scheduler (tcp://HOST:8786): clips then run on its workers and task_runner is not used.
    # Workers must see the corpus and cache_dir at the same paths as this machine (a shared filesystem).
    dask_address: str | None = None
    # torch and BLAS threads in each Dask worker process. Features match a single-process run bit for bit
    # only at equal thread counts: both sum in an order that depends on them (last float32 bits differ).
    dask_compute_threads: int = Field(1, ge=1)
    audio: AudioParams = AudioParams()
    vad: VadParams = VadParams()
    segment: SegmentParams = SegmentParams()
    audio_features: AudioFeatureParams = AudioFeatureParams()
    faces: FaceParams = FaceParams()
    face_features: FaceFeatureParams = FaceFeatureParams()


SYSTEMS: tuple[str, ...] = (
    "avef", "gfbp", "agfbp", "mfbp", "amfbp", "concat", "decision", "audio", "video",
    "self_attention", "relation_attention", "transformer_attention",
)  # fmt: skip


class SplitParams(_Section):
    """Speaker-independent folds (AVEF Sec. 4.2: LOSO for few speakers, LOSGO for many)."""

    scheme: Literal["loso", "losgo", "fixed"] = "loso"
    k: int = Field(5, ge=2)  # losgo: speaker groups
    seed: int = 0
    val_speakers: int = Field(1, ge=0)  # per fold, drawn from its training speakers, for early stopping
    shares: tuple[float, float, float] = (0.7, 0.15, 0.15)  # fixed: train/validation/test speakers


class TrainParams(_Section):
    features_dir: Path = Path("data/features")
    out_dir: Path = Path("data/models")  # one folder per system
    systems: list[str] = list(SYSTEMS)  # what `dvc repro` trains and evaluates
    task: Literal["emotion", "arousal", "valence"] = "emotion"
    split: SplitParams = SplitParams()
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(16, ge=1)  # global: under torchrun split over the processes
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["sgd", "adamw"] = "adamw"  # AdamW (decoupled weight decay); SGD: momentum 0.9
    patience: int = Field(10, ge=1)  # early stopping on validation unweighted average recall
    class_weighting: bool = True
    seeds: list[int] = [0]  # an ensemble of len(seeds) models per fold, averaged at the posterior level
    device: str = "auto"  # auto: CUDA when present, else CPU
    workers: int = Field(1, ge=1)  # (fold, seed) runs trained at once
    speaker_normalisation: bool = False  # standardise each speaker's features with its own statistics
    mask_bands: int = Field(0, ge=0)  # SpecAugment-style masking while training: widest band mask
    mask_frames: int = Field(0, ge=0)  # ... and widest frame mask; 0 = none
    dbn_pretrain_epochs: int = Field(0, ge=0)  # avef: greedy RBM pre-training of the DBN
    dbn_pretrain_lr: float = Field(0.01, gt=0)
    svm_degree: int = Field(3, ge=1)  # avef: the clip-level polynomial SVM
    svm_C: float = Field(1.0, gt=0)
    init_from: Path | None = None  # transfer learning: a checkpoint trained on another corpus
    trainable: list[str] | None = None  # with init_from: parameter-name prefixes re-trained, the rest frozen

    @field_validator("optimizer", mode="before")
    @classmethod
    def _renamed_adam(cls, value: object) -> object:
        if value == "adam":
            raise ValueError("optimizer 'adam' is now called 'adamw', the optimizer it always built: write adamw")
        return value


class EvaluateParams(_Section):
    out_dir: Path = Path("data/eval")  # one folder per system


class ReportParams(_Section):
    """``avemo report``: one HTML file over every system's evaluation, PNG copies of its figures."""

    out_dir: Path = Path("data/report")  # report.html and figures/*.png
    example_clips: int = Field(2, ge=0)  # clips whose attention curves are drawn (deep-fusion Fig. 5)
    tsne_perplexity: float = Field(30.0, gt=0)  # lowered to (clips - 1) / 3 on small corpora
    tsne_max_clips: int = Field(1000, ge=5)  # t-SNE on a fixed random subset of the clips beyond this
    seed: int = 0  # picks the example clips and the subset, seeds t-SNE


class PredictParams(_Section):
    """``avemo predict``: the feature settings come from the checkpoint, never from here."""

    model: Path | None = None  # a checkpoint file, or a model folder (its fold checkpoints averaged)
    inputs: list[Path] = []  # media files predicted when the command names none (the DVC stage's)
    out: Path = Path("data/predict/predictions.json")  # where the DVC stage writes (the command: stdout)
    format: Literal["json", "csv"] = "json"
    window_s: float = Field(60.0, ge=2.0)  # longer files are processed this many seconds at a time
    device: str = "cpu"  # cpu | auto (CUDA if available) | cuda | cuda:N: where the emotion models run
    batch_size: int = Field(32, ge=1)  # segments or clips per forward pass


class ServeCorpus(_Section):
    dir: Path
    format: CorpusFormat = "cremad"
    csv: Path | None = None  # format csv: the path,speaker,label file (default DIR/labels.csv)


class ServeParams(_Section):
    """Scheduled re-training (``avemo serve``): a cycle re-trains only when a corpus's content changed."""

    cron: str = "0 3 * * 0"  # when a cycle runs (5-field cron, in ``timezone``)
    timezone: str = "UTC"
    deployment: str = "avemo-retrain"  # the Prefect deployment's name
    corpora: list[ServeCorpus] = [ServeCorpus(dir=Path("data/sample_corpus"))]
    system: str = "gfbp"
    work_dir: Path = Path("data/serve")  # last manifest, held-out speakers, decisions, candidates
    # Test speakers no model of this work_dir ever trains on; empty: drawn once, in the first cycle.
    heldout_speakers: list[str] = []
    heldout_share: float = Field(0.2, gt=0.0, lt=1.0)  # ... as this share of the speakers (at least 1)
    split: SplitParams | None = None  # the candidate's folds over the other speakers (None: train.split)

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
    sample: SampleParams = SampleParams()
    ingest: IngestParams = IngestParams()
    preprocess: PreprocessParams = PreprocessParams()
    train: TrainParams = TrainParams()
    models: dict[str, dict[str, Any]] = {}  # per system: hyper-parameters over the paper defaults
    evaluate: EvaluateParams = EvaluateParams()
    report: ReportParams = ReportParams()
    predict: PredictParams = PredictParams()
    serve: ServeParams = ServeParams()


class ConfigError(ValueError):
    """``params.yaml`` is missing, unreadable or holds a wrong setting."""


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; a missing file gives the built-in defaults."""
    path = Path(path)
    if not path.exists():
        return Params()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return Params.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as err:
        raise ConfigError(f"{path}: {err}") from err
