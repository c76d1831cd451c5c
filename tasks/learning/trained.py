"""What a trained model is: the network, the settings and history of its run, and what prediction needs.

``avef`` adds the paper's clip level, a polynomial SVM on the DBN's last hidden layer average-pooled per
clip; :func:`fit_clip_svm` fits it, deterministically (libsvm with a fixed ``random_state``), so a
checkpoint keeps the SVM's training embeddings rather than a pickle.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from torch import nn

from avemo.config import TrainParams
from avemo.errors import AvemoError
from models.avef import ClipSVM
from models.registry import InputShapes
from tasks.learning.features import Task
from tasks.learning.standardization import (
    Standardization,
)


class TrainError(AvemoError):
    """Settings, clips or a checkpoint that training cannot use."""


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings of one run: the train section's (``avemo.config.TrainParams``, where each is
    documented) and the run's seed. AVEF's Table 3 trains with SGD, momentum 0.9."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: Literal["sgd", "adamw"]
    patience: int  # epochs without a better validation UAR before stopping
    class_weighting: bool  # cross entropy weighted by inverse training class frequency
    seed: int
    device: str  # auto (CUDA if available) | cpu | cuda | cuda:N
    dbn_pretrain_epochs: int  # avef: greedy CD-1 RBM pre-training of the DBN first; 0 = none
    dbn_pretrain_lr: float
    svm_degree: int  # avef's clip-level polynomial SVM
    svm_C: float
    mask_bands: int  # training augmentation: widest block of mel bands / spectrogram bins masked
    mask_frames: int  # and of frames (tasks.learning.datasets.Masking); 0 and 0 = no augmentation
    speaker_normalisation: bool  # standardise each speaker on its own clips, test speakers included
    speed_perturbation: bool  # pooled systems: the training clips' speed-perturbed vectors as more clips

    @classmethod
    def of(cls, params: TrainParams, seed: int = 0) -> TrainSettings:
        """The settings of one run of the train section ``params`` with ``seed``."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"seed"}
        return cls(**params.model_dump(include=fields), seed=seed)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1 or self.lr <= 0:
            raise TrainError(f"epochs, batch_size and patience must be >= 1 and lr > 0, got {self}")
        if self.optimizer not in ("sgd", "adamw"):
            raise TrainError(f"unknown optimizer {self.optimizer!r}; use 'sgd' or 'adamw'")


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # from 1
    train_loss: float
    val_loss: float | None  # None when the fold has no validation clips
    val_uar: float | None
    val_accuracy: float | None
    seconds: float


@dataclass(frozen=True)
class TransferReport:
    source: str
    loaded: tuple[str, ...]  # parameters taken from the source checkpoint
    reinitialised: tuple[str, ...]  # absent there or of another shape (e.g. a head for other classes)
    frozen: tuple[str, ...]  # not trained here


@dataclass
class Trained:
    """A fitted model and everything prediction needs to reproduce its inputs and decisions."""

    model_name: str
    hyperparameters: dict[str, Any]
    shapes: InputShapes  # the sizes of the features it was built for
    model: nn.Module
    task: Task
    classes: tuple[str, ...]
    standardization: Standardization | None  # None: per speaker, fitted on the clips predicted
    # a speaker-normalised model's typical training speaker, for files whose speaker is not known
    speaker_fallback: Standardization | None
    settings: TrainSettings
    history: list[EpochRecord]
    best_epoch: int
    clip_svm: ClipSVM | None = None
    svm_training: tuple[np.ndarray, np.ndarray] | None = None  # pooled training embeddings, labels
    transfer: TransferReport | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # fold, feature parameters, ...


def fit_clip_svm(trained: Trained, embeddings: np.ndarray, labels: np.ndarray) -> None:
    trained.svm_training = (
        np.asarray(embeddings, np.float32),
        np.asarray(labels, np.int64),
    )
    svm = ClipSVM(degree=trained.settings.svm_degree, C=trained.settings.svm_C)
    trained.clip_svm = svm.fit(*trained.svm_training)
