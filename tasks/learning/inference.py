"""Posteriors of a model over a dataset, and of a trained model over loaded features.

:func:`model_posteriors` runs a network on a dataset; :func:`trained_posteriors` first builds the dataset
the way its training did (its standardisation, its audio padding, its SVM). A segment model's clip
posterior is the mean of its segments' posteriors (or, for ``avef``, the clip SVM's on the pooled DBN
embedding); both levels are kept so a report can score either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from models.avef import ClipSVM, average_pool_segments
from models.fbp import AudioEncoder
from models.registry import InputKind, get_spec
from tasks.learning.datasets import AnyDataset, PooledDataset, SegmentDataset, collate_for, make_dataset
from tasks.learning.features import Features, TaskLabels
from tasks.learning.standardization import (
    speaker_standardization,
)
from tasks.learning.trained import Trained, TrainError


@dataclass(frozen=True)
class ClipPredictions:
    clip_ids: tuple[str, ...]
    true: np.ndarray  # (n,) class indices
    probabilities: np.ndarray  # (n, classes), rows summing to 1
    classes: tuple[str, ...]
    embeddings: np.ndarray | None = None  # (n, E) segment embeddings pooled per clip (segment models)

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


@dataclass(frozen=True)
class SegmentPredictions:
    clip_ids: tuple[str, ...]
    segments: np.ndarray  # (n,) segment index within its clip
    true: np.ndarray
    probabilities: np.ndarray
    classes: tuple[str, ...]

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


@dataclass(frozen=True)
class Predictions:
    clips: ClipPredictions
    segments: SegmentPredictions | None  # segment models only


def _svm_posteriors(svm: ClipSVM, embeddings: np.ndarray, n_classes: int) -> np.ndarray:
    """The SVM's probabilities spread over all classes; a class unseen in training gets 0."""
    out = np.zeros((len(embeddings), n_classes))
    out[:, svm.classes_.astype(np.int64)] = svm.predict_proba(embeddings)
    return out


@torch.no_grad()
def model_posteriors(
    model: nn.Module,
    dataset: AnyDataset,
    classes: Sequence[str],
    *,
    clip_svm: ClipSVM | None = None,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> Predictions:
    """Posteriors of every item of ``dataset``, in its order, with the model in eval mode."""
    model.eval()
    segment_level = isinstance(dataset, SegmentDataset)
    kind: InputKind = "segment" if segment_level else "pooled" if isinstance(dataset, PooledDataset) else "clip"
    loader = DataLoader(dataset, batch_size, collate_fn=collate_for(kind))
    batch_probabilities: list[np.ndarray] = []
    hidden: list[np.ndarray] = []
    clip_ids: list[str] = []
    segments: list[int] = []
    for batch in loader:
        output = model(**batch.inputs(device))
        batch_probabilities.append(torch.softmax(output.logits.float(), dim=-1).cpu().numpy())
        if segment_level:
            hidden.append(output.hidden.float().cpu().numpy())
            segments.extend(batch.segments)
        clip_ids.extend(batch.clip_ids)
    probabilities = np.concatenate(batch_probabilities).astype(np.float64)
    classes = tuple(classes)
    if not segment_level:
        return Predictions(
            ClipPredictions(tuple(clip_ids), dataset.labels.copy(), probabilities, classes),
            None,
        )

    segment_predictions = SegmentPredictions(
        tuple(clip_ids),
        np.asarray(segments),
        dataset.labels.copy(),
        probabilities,
        classes,
    )
    clips, clip_posteriors = average_pool_segments(probabilities, clip_ids)
    _, pooled = average_pool_segments(np.concatenate(hidden), clip_ids)
    if clip_svm is not None:
        clip_posteriors = _svm_posteriors(clip_svm, pooled, len(classes))
    label_of = dict(zip(clip_ids, dataset.labels, strict=True))  # every segment carries its clip's label
    true = np.array([label_of[clip] for clip in clips], dtype=np.int64)
    return Predictions(
        ClipPredictions(tuple(clips), true, clip_posteriors, classes, pooled),
        segment_predictions,
    )


def model_device(model: nn.Module) -> torch.device:
    """Where the model's tensors are: its first parameter's device, or buffer's (an SVM has no parameters)."""
    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def min_audio_frames(model: nn.Module) -> int:
    """The fewest spectrogram frames the model's audio encoder accepts (1 when it has none)."""
    return max(
        (m.min_frames for m in model.modules() if isinstance(m, AudioEncoder)),
        default=1,
    )


def trained_posteriors(
    trained: Trained,
    features: Features,
    labels: TaskLabels,
    clip_ids: Sequence[str],
    batch_size: int = 32,
) -> Predictions:
    """Clip (and segment) posteriors of a trained model, with its own standardisation and SVM."""
    if tuple(labels.classes) != trained.classes:
        raise TrainError(
            f"the model predicts {trained.classes} but the labels are {labels.classes}; "
            f"build the labels with the model's task ({trained.task!r}) on the same corpus"
        )
    needs = get_spec(trained.model_name).needs
    stats = trained.standardization or speaker_standardization(features, clip_ids)
    dataset = make_dataset(features, labels, clip_ids, stats, needs, min_audio_frames(trained.model))
    device = model_device(trained.model)
    return model_posteriors(
        trained.model,
        dataset,
        trained.classes,
        clip_svm=trained.clip_svm,
        batch_size=batch_size,
        device=device,
    )
