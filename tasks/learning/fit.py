"""The training loop, written once: one model on one fold with one seed, and transfer from a checkpoint.

Early stopping watches the validation clips' unweighted average recall (UAR), the papers' score, not
the loss: with unbalanced emotions a falling loss can come from the majority class alone. Segment
models (AVEF) learn from segments labelled with their clip's emotion and are validated per clip on the
mean of the segments' posteriors.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from avemo.distributed import (
    ShardedBatchSampler,
    World,
    all_reduce_sum,
    current_world,
    data_parallel,
    from_main,
    process_device,
    rank_seed,
)
from models.avef import AVEF, pretrain_dbn
from models.classical import FitsInOneStep
from models.registry import InputKind, build_model, check_modalities
from tasks.learning.checkpoints import load_checkpoint
from tasks.learning.datasets import AnyDataset, Masking, PooledDataset, collate_for, make_dataset
from tasks.learning.features import Features, TaskLabels
from tasks.learning.inference import Predictions, min_audio_frames, model_posteriors
from tasks.learning.metrics import accuracy, confusion_matrix, unweighted_average_recall
from tasks.learning.standardization import (
    Standardization,
    Standardizer,
    fit_standardization,
    speaker_standardization,
    typical_speaker,
)
from tasks.learning.trained import (
    EpochRecord,
    Trained,
    TrainError,
    TrainSettings,
    TransferReport,
    fit_clip_svm,
)


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """n / (k * n_c) for each of the k classes present, so each class weighs as much in the loss;
    0 for a class absent from training (no sample carries it)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


@contextmanager
def _deterministic(device: torch.device):
    """Deterministic kernels on the CPU for the run only (CUDA would also need a cuBLAS setting)."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(device.type == "cpu" or previous)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)


def transfer_parameters(model: nn.Module, checkpoint: Path, trainable: Sequence[str] | None) -> TransferReport:
    """Load the parameters of ``checkpoint`` whose names and shapes match; freeze all but ``trainable``.

    ``trainable`` lists parameter-name prefixes (e.g. ``["dbn.", "audio_net.fc"]``); None trains all.
    """
    source, _ = load_checkpoint(checkpoint)
    own = model.state_dict()
    loadable = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not loadable:
        raise TrainError(
            f"{checkpoint}: no parameter matches this model by name and shape; transfer from a checkpoint "
            "of the same model"
        )
    model.load_state_dict(loadable, strict=False)
    frozen = []
    if trainable is not None:
        names = [name for name, _ in model.named_parameters()]
        unmatched = [p for p in trainable if not any(n.startswith(p) for n in names)]
        if unmatched:
            raise TrainError(f"trainable prefixes {unmatched} match no parameter; names start with e.g. {names[:3]}")
        for name, parameter in model.named_parameters():
            if not any(name.startswith(p) for p in trainable):
                parameter.requires_grad_(False)
                frozen.append(name)
    return TransferReport(
        str(checkpoint),
        tuple(loadable),
        tuple(k for k in own if k not in loadable),
        tuple(frozen),
    )


def _optimizer(parameters: list[nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=settings.lr, momentum=0.9, weight_decay=settings.weight_decay)
    return torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)


def _validation_scores(predictions: Predictions) -> tuple[float, float, float]:
    """(loss, UAR, accuracy): the loss on what the model was trained on (segments or clips), the
    scores per clip."""
    scored = predictions.segments or predictions.clips
    picked = scored.probabilities[np.arange(len(scored.true)), scored.true]
    loss = float(-np.log(np.clip(picked, 1e-12, None)).mean())
    clips = predictions.clips
    confusion = confusion_matrix(clips.true, clips.predicted, len(clips.classes))
    return (
        loss,
        unweighted_average_recall(confusion),
        accuracy(clips.true, clips.predicted),
    )


def _validation_scores_of(
    model: nn.Module, val_set: AnyDataset, classes: Sequence[str], device: torch.device
) -> tuple[float, float, float]:
    return _validation_scores(model_posteriors(model, val_set, classes, device=device))


def _pretrain_dbn(model: AVEF, loader: DataLoader, settings: TrainSettings, device: torch.device) -> list[float]:
    """The DBN's RBMs on the training segments' visible vectors from the (not yet tuned) CNNs."""
    model.eval()
    model.visible_norm.train()  # standardise with batch statistics: the running ones are not learnt yet
    with torch.no_grad():
        visible = [model.visible(**batch.inputs(device)) for batch in loader]
    return pretrain_dbn(model.dbn, visible, settings.dbn_pretrain_epochs, settings.dbn_pretrain_lr)


def _train_loader(dataset: AnyDataset, collate: Callable, settings: TrainSettings, world: World) -> DataLoader:
    """Shuffled batches of ``settings.batch_size`` items, the same on every process (same seed), each
    process loading its share of each; an empty share (a short last batch) comes out as None."""
    if settings.batch_size < world.size or len(dataset) < world.size:
        raise TrainError(
            f"{world.size} processes need a batch_size and a training set of at least {world.size} items, got "
            f"batch_size {settings.batch_size} and {len(dataset)} items; raise train.batch_size or use fewer processes"
        )
    generator = torch.Generator().manual_seed(settings.seed)
    # The DataLoader draws from the generator too: one process shuffles exactly as shuffle=True would.
    batches = ShardedBatchSampler(RandomSampler(dataset, generator=generator), settings.batch_size, world)
    return DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=lambda items: collate(items) if items else None,
        generator=generator,
    )


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    criterion: nn.CrossEntropyLoss,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    world: World,
) -> float:
    """One pass over the training data; float16 autocast where the scaler is enabled (CUDA).

    Each process holds a share of every batch and DDP averages the processes' gradients. A process's
    mean loss is therefore scaled by its share of the batch's total class weight, times the number of
    processes, so that the average is the gradient of the whole batch's weighted mean loss: the update
    one process makes. With one process the scale is exactly 1.
    """
    model.train()
    total, previous = 0.0, None
    for batch in loader:
        if batch is None:  # an empty share: a pass that counts for nothing keeps DDP's all-reduce in step
            batch, counted = previous, 0.0
        else:
            previous, counted = batch, 1.0
        labels = batch.labels.to(device)
        weight = (
            criterion.weight[labels].sum()
            if criterion.weight is not None
            else torch.tensor(float(len(labels)), device=device)
        )
        share = torch.stack([weight, torch.tensor(float(len(labels)), device=device)]) * counted
        batch_weight, batch_size = all_reduce_sum(share.clone()).tolist()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=scaler.is_enabled()):
            mean = criterion(model(**batch.inputs(device)).float(), labels)
        loss = mean * (share[0] * world.size / batch_weight)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += loss.item() / world.size * batch_size
    items = len(cast(Sized, loader.dataset))  # torch's Dataset type has no __len__; ours all do
    return all_reduce_sum(torch.tensor(total, dtype=torch.float64, device=device)).item() / items


@dataclass(frozen=True)
class _FoldData:
    """A fold's standardised datasets, and the standardisation the checkpoint keeps (None: per speaker,
    with the typical training speaker's for files of an unknown speaker)."""

    kind: InputKind
    standardization: Standardization | None
    speaker_fallback: Standardization | None
    train_stats: Standardizer
    train_set: AnyDataset
    val_set: AnyDataset | None


def _fold_data(
    model: nn.Module,
    needs: frozenset[str],
    features: Features,
    labels: TaskLabels,
    train_clips: Sequence[str],
    val_clips: Sequence[str],
    settings: TrainSettings,
    world: World,
) -> _FoldData:
    fallback = None
    if settings.speaker_normalisation:
        standardization = None
        per_speaker = speaker_standardization(features, train_clips)
        train_stats: Standardizer = per_speaker
        val_stats: Standardizer = speaker_standardization(features, val_clips)
        fallback = typical_speaker(per_speaker)
    else:
        standardization = train_stats = val_stats = fit_standardization(features, train_clips)
    min_frames = min_audio_frames(model)
    masking = None
    if settings.mask_bands or settings.mask_frames:
        masking = Masking(settings.mask_bands, settings.mask_frames, rank_seed(settings.seed, world.rank))
    train_set = make_dataset(features, labels, train_clips, train_stats, needs, min_frames, masking)
    val_set = make_dataset(features, labels, val_clips, val_stats, needs, min_frames) if val_clips else None
    return _FoldData(features.kind, standardization, fallback, train_stats, train_set, val_set)


def _epochs(
    model: nn.Module,
    data: _FoldData,
    classes: Sequence[str],
    settings: TrainSettings,
    device: torch.device,
    world: World,
    progress: Callable[[EpochRecord], None] | None,
) -> tuple[list[EpochRecord], int]:
    """Train epoch after epoch, stopping ``patience`` epochs after the best validation UAR; the model is
    left holding its best state. Returns the history and the best epoch."""
    loader = _train_loader(data.train_set, collate_for(data.kind), settings, world)
    if world.rank:  # dropout masks of its own (rank 0 keeps the single-process stream)
        torch.manual_seed(rank_seed(settings.seed, world.rank))
    training = data_parallel(model, device)  # logits; rank 0's weights on every process under DDP
    weights = class_weights(data.train_set.labels, len(classes)) if settings.class_weighting else None
    criterion = nn.CrossEntropyLoss(weight=torch.from_numpy(weights).to(device) if weights is not None else None)
    optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], settings)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")  # mixed precision on CUDA only
    history: list[EpochRecord] = []
    best_key, best_state, best_epoch = None, None, settings.epochs
    for epoch in range(1, settings.epochs + 1):
        started = time.perf_counter()
        train_loss = _train_epoch(training, loader, criterion, optimizer, scaler, device, world)
        scores: tuple[float | None, float | None, float | None] = (None, None, None)
        if data.val_set is not None:  # on rank 0; all ranks then take the same early-stopping decisions
            scores = from_main(functools.partial(_validation_scores_of, model, data.val_set, classes, device))
        record = EpochRecord(epoch, train_loss, *scores, time.perf_counter() - started)
        history.append(record)
        if progress is not None:
            progress(record)
        if data.val_set is None:
            continue
        assert record.val_loss is not None  # validated this epoch
        key = (record.val_uar, -record.val_loss)  # ties in UAR, common on few clips, go to the lower loss
        if best_key is None or key > best_key:
            best_key, best_epoch = key, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= settings.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history, best_epoch


def _perturbed_rows(
    features: Features, labels: TaskLabels, train_clips: Sequence[str], settings: TrainSettings
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The training clips' speed-perturbed vectors as more training rows, one block per speed, each block
    standardised on its own (per speaker, or over the training clips): a faster or slower voice is
    another voice, as a new speaker's would be."""
    rows, classes = [], []
    views = features.pooled_views or {}
    count = min((len(views[c]) for c in train_clips if c in views), default=0)
    if count == 0:
        raise TrainError(
            "train.speed_perturbation learns from the clips' speed-perturbed vectors, but the features have "
            "none; preprocess with preprocess.speed_perturbation set (e.g. [0.9, 1.1]), or set it false"
        )
    for v in range(count):
        view = dataclasses.replace(features, pooled={c: views[c][v] for c in views}, pooled_views=None)
        stats = speaker_standardization(view, train_clips) if settings.speaker_normalisation else None
        x, y = PooledDataset(view, labels, train_clips, stats or fit_standardization(view, train_clips)).matrix()
        rows.append(x)
        classes.append(y)
    return rows, classes


def _fit_in_one_step(
    model: nn.Module,
    data: _FoldData,
    features: Features,
    labels: TaskLabels,
    train_clips: Sequence[str],
    settings: TrainSettings,
    device: torch.device,
    progress: Callable[[EpochRecord], None] | None,
) -> tuple[list[EpochRecord], int]:
    """A classical system's fit (scikit-learn's solver, not epochs of gradient descent): one record, its
    training loss and validation scores as an epoch's would be."""
    assert isinstance(data.train_set, PooledDataset) and isinstance(model, FitsInOneStep)  # the pooled systems'
    started = time.perf_counter()
    x, y = data.train_set.matrix()
    if settings.speed_perturbation:
        more_x, more_y = _perturbed_rows(features, labels, train_clips, settings)
        x, y = np.concatenate([x, *more_x]), np.concatenate([y, *more_y])
    model.fit_classifier(x, y, settings.class_weighting, settings.seed)
    train_loss, _, _ = _validation_scores_of(model, data.train_set, labels.classes, device)
    scores: tuple[float | None, float | None, float | None] = (None, None, None)
    if data.val_set is not None:
        scores = _validation_scores_of(model, data.val_set, labels.classes, device)
    record = EpochRecord(1, train_loss, *scores, time.perf_counter() - started)
    if progress is not None:
        progress(record)
    return [record], 1


def fit(
    model_name: str,
    features: Features,
    labels: TaskLabels,
    train_clips: Sequence[str],
    val_clips: Sequence[str],
    settings: TrainSettings,
    *,
    hyperparameters: Mapping[str, Any] | None = None,
    init_from: Path | None = None,
    trainable: Sequence[str] | None = None,
    progress: Callable[[EpochRecord], None] | None = None,
) -> Trained:
    """Train ``model_name`` on ``train_clips``, keeping the state of the best validation UAR.

    Without validation clips all ``settings.epochs`` run and the last state is kept. ``progress`` is
    called once per epoch. ``init_from``/``trainable``: see :func:`transfer_parameters`.
    """
    spec = check_modalities(model_name, features.modalities)
    if spec.input_kind != features.kind:
        raise TrainError(
            f"model {model_name!r} reads {spec.input_kind}s but the features were loaded for {features.kind}s"
        )
    if not train_clips:
        raise TrainError("the fold has no training clips")
    hyperparameters = dict(hyperparameters or {})
    world = current_world()
    device = process_device(settings.device)
    torch.manual_seed(settings.seed)
    with _deterministic(device):
        model = build_model(model_name, len(labels.classes), features.shapes, **hyperparameters).to(device)
        transfer = transfer_parameters(model, init_from, trainable) if init_from is not None else None
        data = _fold_data(model, spec.needs, features, labels, train_clips, val_clips, settings, world)
        if isinstance(model, AVEF) and settings.dbn_pretrain_epochs:
            collate = collate_for(features.kind)
            _pretrain_dbn(model, DataLoader(data.train_set, 64, collate_fn=collate), settings, device)
        if spec.input_kind == "pooled":
            history, best_epoch = _fit_in_one_step(
                model, data, features, labels, train_clips, settings, device, progress
            )
        else:
            history, best_epoch = _epochs(model, data, labels.classes, settings, device, world, progress)
        trained = Trained(
            model_name,
            hyperparameters,
            features.shapes,
            model,
            labels.task,
            labels.classes,
            data.standardization,
            data.speaker_fallback,
            settings,
            history,
            best_epoch,
            transfer=transfer,
        )
        if model_name == "avef":
            unmasked = make_dataset(features, labels, train_clips, data.train_stats, spec.needs)
            pooled = model_posteriors(model, unmasked, labels.classes, device=device).clips
            assert pooled.embeddings is not None  # a segment model's clip predictions carry the pooled embeddings
            fit_clip_svm(trained, pooled.embeddings, pooled.true)
    return trained
