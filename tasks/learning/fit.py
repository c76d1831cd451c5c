"""Training one model on one fold with one seed, transfer from another corpus, and checkpoints.

Early stopping watches the validation clips' unweighted average recall (UAR), the papers' score, not
the loss: with unbalanced emotions a falling loss can come from the majority class alone. Segment
models (AVEF) learn from segments labelled with their clip's emotion and are validated per clip on the
mean of the segments' posteriors; ``avef`` then adds the paper's clip level, a polynomial SVM on the
DBN's last hidden layer average-pooled per clip.

A checkpoint is one ``torch.save`` file holding the state dict and a JSON string of metadata, so
``torch.load(weights_only=True)`` reads it without running pickled code. The SVM is not pickled: the
checkpoint keeps its settings and the pooled training embeddings it was fitted on, and
:func:`load_trained` re-fits it, which libsvm does deterministically (fixed ``random_state``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

import avemo
from avemo.device import resolve_device
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
from models.avef import AVEF, ClipSVM, pretrain_dbn
from models.fbp import AudioEncoder
from models.registry import build_model, check_modalities, get_spec
from tasks.learning.datasets import (
    Features,
    Masking,
    Standardization,
    TaskLabels,
    collate_for,
    fit_standardization,
    make_dataset,
    speaker_standardization,
)
from tasks.learning.evaluation import Predictions, predict
from tasks.learning.metrics import accuracy, confusion_matrix, unweighted_average_recall

CHECKPOINT_FORMAT = 1


class TrainError(ValueError):
    """Settings, clips or a checkpoint that training cannot use."""


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings of one run; AVEF's Table 3 trains with SGD, momentum 0.9."""

    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: Literal["sgd", "adam"] = "adam"  # adam: AdamW (decoupled weight decay); sgd: momentum 0.9
    patience: int = 10  # epochs without a better validation UAR before stopping
    class_weighting: bool = True  # cross entropy weighted by inverse training class frequency
    seed: int = 0
    device: str = "auto"  # auto (CUDA if available) | cpu | cuda | cuda:N
    dbn_pretrain_epochs: int = 0  # avef: greedy CD-1 RBM pre-training of the DBN first; 0 = none
    dbn_pretrain_lr: float = 0.01
    svm_degree: int = 3  # avef's clip-level polynomial SVM
    svm_C: float = 1.0
    mask_bands: int = 0  # training augmentation: widest block of mel bands / spectrogram bins masked
    mask_frames: int = 0  # and of frames (tasks.learning.datasets.Masking); 0 and 0 = no augmentation
    speaker_normalisation: bool = False  # standardise each speaker on its own clips, test speakers included

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1 or self.lr <= 0:
            raise TrainError(f"epochs, batch_size and patience must be >= 1 and lr > 0, got {self}")
        if self.optimizer not in ("sgd", "adam"):
            raise TrainError(f"unknown optimizer {self.optimizer!r}; use 'sgd' or 'adam'")


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
    model: nn.Module
    task: str
    classes: tuple[str, ...]
    standardization: Standardization | None  # None: per speaker, fitted on the clips predicted
    settings: TrainSettings
    history: list[EpochRecord]
    best_epoch: int
    clip_svm: ClipSVM | None = None
    svm_training: tuple[np.ndarray, np.ndarray] | None = None  # pooled training embeddings, labels
    transfer: TransferReport | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # fold, feature parameters, ...


def min_audio_frames(model: nn.Module) -> int:
    """The fewest spectrogram frames the model's audio encoder accepts (1 when it has none)."""
    return max((m.min_frames for m in model.modules() if isinstance(m, AudioEncoder)), default=1)


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
        str(checkpoint), tuple(loadable), tuple(k for k in own if k not in loadable), tuple(frozen)
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
    return loss, unweighted_average_recall(confusion), accuracy(clips.true, clips.predicted)


def _pretrain_dbn(model: AVEF, loader: DataLoader, settings: TrainSettings, device: torch.device) -> list[float]:
    """The DBN's RBMs on the training segments' visible vectors from the (not yet tuned) CNNs."""
    model.eval()
    model.visible_norm.train()  # standardise with batch statistics: the running ones are not learnt yet
    with torch.no_grad():
        visible = [model.visible(**batch.inputs(device)) for batch in loader]
    return pretrain_dbn(model.dbn, visible, settings.dbn_pretrain_epochs, settings.dbn_pretrain_lr)


def _train_loader(dataset: Dataset, collate: Callable, settings: TrainSettings, world: World) -> DataLoader:
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
    return DataLoader(dataset, batch_sampler=batches, collate_fn=lambda items: collate(items) if items else None, generator=generator)


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
        weight = criterion.weight[labels].sum() if criterion.weight is not None else torch.tensor(float(len(labels)), device=device)
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
    return all_reduce_sum(torch.tensor(total, dtype=torch.float64, device=device)).item() / len(loader.dataset)


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
        raise TrainError(f"model {model_name!r} reads {spec.input_kind}s but the features were loaded for {features.kind}s")
    if not train_clips:
        raise TrainError("the fold has no training clips")
    hyperparameters = dict(hyperparameters or {})
    world = current_world()
    device = process_device(settings.device)
    torch.manual_seed(settings.seed)
    with _deterministic(device):
        model = build_model(model_name, len(labels.classes), **hyperparameters).to(device)
        transfer = transfer_parameters(model, init_from, trainable) if init_from is not None else None
        if settings.speaker_normalisation:
            standardization = None
            train_stats = speaker_standardization(features, train_clips)
            val_stats = speaker_standardization(features, val_clips)
        else:
            standardization = train_stats = val_stats = fit_standardization(features, train_clips)
        min_frames = min_audio_frames(model)
        masking = (
            Masking(settings.mask_bands, settings.mask_frames, rank_seed(settings.seed, world.rank))
            if settings.mask_bands or settings.mask_frames
            else None
        )
        train_set = make_dataset(features, labels, train_clips, train_stats, spec.needs, min_frames, masking)
        val_set = make_dataset(features, labels, val_clips, val_stats, spec.needs, min_frames) if val_clips else None
        collate = collate_for(features.kind)
        loader = _train_loader(train_set, collate, settings, world)
        if isinstance(model, AVEF) and settings.dbn_pretrain_epochs:
            _pretrain_dbn(model, DataLoader(train_set, 64, collate_fn=collate), settings, device)
        if world.rank:  # dropout masks of its own (rank 0 keeps the single-process stream)
            torch.manual_seed(rank_seed(settings.seed, world.rank))
        training = data_parallel(model, device)  # logits; rank 0's weights on every process under DDP
        weights = class_weights(train_set.labels, len(labels.classes)) if settings.class_weighting else None
        criterion = nn.CrossEntropyLoss(weight=torch.from_numpy(weights).to(device) if weights is not None else None)
        optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], settings)
        scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")  # mixed precision on CUDA only

        history: list[EpochRecord] = []
        best_key, best_state, best_epoch = None, None, settings.epochs
        for epoch in range(1, settings.epochs + 1):
            started = time.perf_counter()
            train_loss = _train_epoch(training, loader, criterion, optimizer, scaler, device, world)
            scores = (None, None, None)
            if val_set is not None:  # on rank 0; all ranks then take the same early-stopping decisions
                scores = from_main(lambda: _validation_scores(predict(model, val_set, labels.classes, device=device)))
            record = EpochRecord(epoch, train_loss, *scores, time.perf_counter() - started)
            history.append(record)
            if progress is not None:
                progress(record)
            if val_set is None:
                continue
            key = (record.val_uar, -record.val_loss)  # ties in UAR, common on few clips, go to the lower loss
            if best_key is None or key > best_key:
                best_key, best_epoch = key, epoch
                best_state = copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= settings.patience:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()

        trained = Trained(
            model_name, hyperparameters, model, labels.task, labels.classes, standardization, settings,
            history, best_epoch, transfer=transfer,
        )  # fmt: skip
        if model_name == "avef":
            unmasked = make_dataset(features, labels, train_clips, train_stats, spec.needs)
            pooled = predict(model, unmasked, labels.classes, device=device).clips
            _fit_clip_svm(trained, pooled.embeddings, pooled.true)
    return trained


def _fit_clip_svm(trained: Trained, embeddings: np.ndarray, labels: np.ndarray) -> None:
    trained.svm_training = (np.asarray(embeddings, np.float32), np.asarray(labels, np.int64))
    svm = ClipSVM(degree=trained.settings.svm_degree, C=trained.settings.svm_C, random_state=trained.settings.seed)
    trained.clip_svm = svm.fit(*trained.svm_training)


def save_checkpoint(path: Path, model: nn.Module, meta: Mapping[str, Any]) -> None:
    """State dict + JSON metadata in one file, written atomically; ``meta`` must be JSON-able."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": CHECKPOINT_FORMAT, "state_dict": state, "meta": json.dumps(meta)}
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
        "task": trained.task,
        "classes": list(trained.classes),
        "standardization": trained.standardization.to_json() if trained.standardization else None,
        "settings": dataclasses.asdict(trained.settings),
        "history": [dataclasses.asdict(r) for r in trained.history],
        "best_epoch": trained.best_epoch,
        "clip_svm_training": svm,
        "transfer": dataclasses.asdict(trained.transfer) if trained.transfer else None,
        **trained.extra,
    }


def save_trained(path: Path, trained: Trained) -> None:
    save_checkpoint(path, trained.model, checkpoint_meta(trained))


def load_trained(path: Path, device: str = "cpu") -> Trained:
    """Rebuild the model from its registry name and hyper-parameters, load its weights, re-fit the SVM."""
    state, meta = load_checkpoint(path)
    hyperparameters = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["hyperparameters"].items()}
    model = build_model(meta["model"], len(meta["classes"]), **hyperparameters)
    model.load_state_dict(state)
    model.to(resolve_device(device)).eval()
    known = {"avemo_version", "model", "hyperparameters", "task", "classes", "standardization", "settings",
             "history", "best_epoch", "clip_svm_training", "transfer"}  # fmt: skip
    transfer = meta["transfer"]
    trained = Trained(
        model_name=meta["model"],
        hyperparameters=hyperparameters,
        model=model,
        task=meta["task"],
        classes=tuple(meta["classes"]),
        standardization=Standardization.from_json(meta["standardization"]) if meta["standardization"] else None,
        settings=TrainSettings(**meta["settings"]),
        history=[EpochRecord(**r) for r in meta["history"]],
        best_epoch=meta["best_epoch"],
        transfer=TransferReport(**{k: tuple(v) if isinstance(v, list) else v for k, v in transfer.items()}) if transfer else None,
        extra={k: v for k, v in meta.items() if k not in known},
    )
    if meta["clip_svm_training"] is not None:
        svm = meta["clip_svm_training"]
        _fit_clip_svm(trained, np.asarray(svm["embeddings"], np.float32), np.asarray(svm["labels"], np.int64))
    return trained


def predict_trained(trained: Trained, features: Features, labels: TaskLabels, clip_ids: Sequence[str], batch_size: int = 32) -> Predictions:
    """Clip (and segment) posteriors of a trained model, with its own standardisation and SVM."""
    if tuple(labels.classes) != trained.classes:
        raise TrainError(
            f"the model predicts {trained.classes} but the labels are {labels.classes}; "
            f"build the labels with the model's task ({trained.task!r}) on the same corpus"
        )
    needs = get_spec(trained.model_name).needs
    stats = trained.standardization or speaker_standardization(features, clip_ids)
    dataset = make_dataset(features, labels, clip_ids, stats, needs, min_audio_frames(trained.model))
    device = next(trained.model.parameters()).device
    return predict(trained.model, dataset, trained.classes, clip_svm=trained.clip_svm, batch_size=batch_size, device=device)
