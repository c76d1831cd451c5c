"""Training: class weights, a separable problem learnt with early stopping, determinism, checkpoints
read with weights_only=True, transfer learning, and AVEF's segment training with its clip SVM.

Features are built in memory (the datasets tests cover reading them from Parquet); models are the
registry's, at a few channels wide, so the whole file runs in seconds on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest
import torch

from avemo.config import TrainParams
from models.registry import ModalityError
from tasks.learning.checkpoints import load_checkpoint, load_trained, save_trained
from tasks.learning.datasets import make_dataset
from tasks.learning.features import Features, SegmentArrays, TaskLabels, task_labels
from tasks.learning.fit import class_weights, fit
from tasks.learning.inference import model_posteriors, trained_posteriors
from tasks.learning.trained import TrainError, TrainSettings

CLASSES = ("anger", "happiness", "sadness")
BINS = 200
VIDEO_DIM = 16
SMALL_AUDIO = dict(audio_channels=(4, 8, 8, 8, 8))
SMALL_VIDEO: dict = {}  # the video stream's input width comes from the features
SMALL_AVEF = dict(width=1 / 16, fc_dim=16, dbn_hidden=(16, 8))  # 32 px crops: the features'
FAST = TrainSettings.of(TrainParams(epochs=30, batch_size=4, lr=3e-2, patience=4, speaker_normalisation=False), seed=0)


def clip_features(clips_per_class: int = 6, seed: int = 0) -> Features:
    """Three classes over unit noise, 3 speakers: in the spectrogram the level (0, +3, +6) of bins
    40-119 (a level, not a band position: the FBP audio encoder max-pools over frequency); in the
    face embeddings a +3 shift of dimensions 4c..4c+3, which the video stream's 4x1 convolution sees."""
    rng = np.random.default_rng(seed)
    ids, speakers, emotions, spectrograms, embeddings = [], [], [], {}, {}
    for c, emotion in enumerate(CLASSES):
        for i in range(clips_per_class):
            clip = f"{emotion}{i}"
            ids.append(clip)
            speakers.append(f"s{i % 3}")
            emotions.append(emotion)
            spectrograms[clip] = rng.normal(size=(int(rng.integers(64, 90)), BINS)).astype(np.float32)
            spectrograms[clip][:, 40:120] += 3.0 * c
            embeddings[clip] = rng.normal(size=(int(rng.integers(5, 12)), VIDEO_DIM)).astype(np.float32)
            embeddings[clip][:, 4 * c : 4 * c + 4] += 3.0
    return Features(
        tuple(ids),
        tuple(speakers),
        tuple(emotions),
        frozenset({"audio", "video"}),
        "clip",
        {},
        spectrograms,
        embeddings,
    )


def segment_features(clips_per_class: int = 6, segments: int = 3, seed: int = 0) -> Features:
    """Log-mel segments with a class-dependent band, and 32 x 32 face crops of class-dependent brightness."""
    rng = np.random.default_rng(seed)
    ids, speakers, emotions, seg_clips, seg_index, mels, crops, face_rows = [], [], [], [], [], [], [], []
    for c, emotion in enumerate(CLASSES):
        for i in range(clips_per_class):
            clip = f"{emotion}{i}"
            ids.append(clip)
            speakers.append(f"s{i % 3}")
            emotions.append(emotion)
            for s in range(segments):
                mel = rng.normal(size=(3, 64, 64)).astype(np.float32)
                mel[:, 20 * c : 20 * c + 16] += 3.0
                seg_clips.append(clip)
                seg_index.append(s)
                mels.append(mel)
                face_rows.append(np.arange(len(crops), len(crops) + 16))
                crops.extend(rng.integers(0, 60, (16, 32, 32, 3)) + 90 * c)
    arrays = SegmentArrays(
        np.asarray(seg_clips, dtype=object),
        np.asarray(seg_index),
        np.stack(mels),
        np.stack(face_rows),
        np.stack(crops).astype(np.uint8),
    )
    return Features(
        tuple(ids), tuple(speakers), tuple(emotions), frozenset({"audio", "video"}), "segment", {}, segments=arrays
    )


def split(features: Features) -> tuple[list[str], list[str]]:
    """Speakers s0, s1 train; s2 validates."""
    train = [c for c, s in zip(features.clip_ids, features.speakers, strict=True) if s != "s2"]
    return train, [c for c, s in zip(features.clip_ids, features.speakers, strict=True) if s == "s2"]


@pytest.fixture(scope="module")
def problem():
    features = clip_features()
    return features, task_labels(features, "emotion"), *split(features)


@pytest.fixture(scope="module")
def trained_video(problem):
    features, labels, train, val = problem
    epochs = []
    trained = fit("video", features, labels, train, val, FAST, hyperparameters=SMALL_VIDEO, progress=epochs.append)
    return trained, epochs


def test_class_weights_balance_the_classes_present():
    weights = class_weights(np.array([0, 0, 0, 1]), 3)
    np.testing.assert_allclose(weights, [4 / (2 * 3), 4 / (2 * 1), 0.0], rtol=1e-6)
    counts = np.bincount([0, 0, 0, 1], minlength=3)
    assert weights @ counts == pytest.approx(4)  # the weighted sample count is the sample count


def _validation_loss(trained, features, labels, val) -> float:
    again = trained_posteriors(trained, features, labels, val).clips
    return float(-np.log(again.probabilities[np.arange(len(val)), again.true]).mean())


def test_separable_problem_is_learnt_and_the_best_epoch_kept(problem, trained_video):
    features, labels, _, val = problem
    trained, epochs = trained_video
    assert [r.epoch for r in epochs] == list(range(1, len(trained.history) + 1))  # one call per epoch
    best = trained.history[trained.best_epoch - 1]
    assert best.val_uar == max(r.val_uar for r in trained.history) >= 0.9
    assert best.val_accuracy >= 0.9 and all(r.seconds > 0 and r.train_loss > 0 for r in trained.history)
    assert _validation_loss(trained, features, labels, val) == pytest.approx(best.val_loss, rel=1e-5)


def test_early_stopping_restores_the_best_epoch(problem):
    """Validation clips labelled with the next class: the better the model learns, the worse it
    validates, so training stops ``patience`` epochs after its best and returns that epoch's state."""
    features, labels, train, val = problem
    shifted = TaskLabels(
        labels.task, labels.classes, {c: (i + 1) % 3 if c in val else i for c, i in labels.index.items()}, {}
    )
    trained = fit("video", features, shifted, train, val, FAST, hyperparameters=SMALL_VIDEO)
    assert len(trained.history) == trained.best_epoch + FAST.patience < FAST.epochs
    best, last = trained.history[trained.best_epoch - 1], trained.history[-1]
    assert _validation_loss(trained, features, shifted, val) == pytest.approx(best.val_loss, rel=1e-5)
    assert last.val_loss != pytest.approx(best.val_loss, rel=1e-3)


def test_same_seed_gives_identical_weights_and_another_seed_does_not(problem):
    features, labels, train, val = problem
    settings = TrainSettings.of(TrainParams(epochs=2, batch_size=6, optimizer="sgd", mask_bands=20, mask_frames=5))
    runs = [
        fit(
            "audio", features, labels, train, val, dataclasses.replace(settings, seed=seed), hyperparameters=SMALL_AUDIO
        )
        for seed in (7, 7, 8)
    ]
    states = [r.model.state_dict() for r in runs]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_without_validation_every_epoch_runs_and_the_last_state_is_kept(problem):
    features, labels, train, _ = problem
    trained = fit(
        "video", features, labels, train, [], dataclasses.replace(FAST, epochs=3), hyperparameters=SMALL_VIDEO
    )
    assert trained.best_epoch == 3 and len(trained.history) == 3
    assert trained.history[-1].val_uar is None


def test_a_model_needing_video_is_refused_on_audio_features(problem):
    features, labels, train, val = problem
    audio_only = dataclasses.replace(features, modalities=frozenset({"audio"}), embeddings=None)
    with pytest.raises(ModalityError, match="needs video"):
        fit("gfbp", audio_only, labels, train, val, FAST)


def test_checkpoint_round_trip_with_weights_only(tmp_path, problem, trained_video):
    features, labels, _, val = problem
    trained, _ = trained_video
    trained.extra["fold"] = "loso-s2"
    path = tmp_path / "video.pt"
    save_trained(path, trained)
    raw = torch.load(path, weights_only=True)  # plain tensors and strings: no pickled code to run
    assert set(raw) == {"format", "state_dict", "meta"}
    _, meta = load_checkpoint(path)
    assert meta["model"] == "video" and meta["classes"] == list(CLASSES) and meta["fold"] == "loso-s2"
    assert meta["hyperparameters"] == {} and meta["input_shapes"]["embedding_dim"] == VIDEO_DIM
    assert meta["best_epoch"] == trained.best_epoch and meta["settings"]["lr"] == FAST.lr
    assert len(meta["standardization"]["embedding"]["mean"]) == VIDEO_DIM
    restored = load_trained(path)
    assert restored.extra == {"fold": "loso-s2"} and restored.history == trained.history
    before = trained_posteriors(trained, features, labels, val).clips.probabilities
    after = trained_posteriors(restored, features, labels, val).clips.probabilities
    np.testing.assert_array_equal(before, after)


def test_speaker_normalised_model_standardises_the_predicted_speakers_itself(tmp_path, problem):
    features, labels, train, val = problem
    settings = dataclasses.replace(FAST, epochs=3, speaker_normalisation=True)
    trained = fit("video", features, labels, train, val, settings, hyperparameters=SMALL_VIDEO)
    assert trained.standardization is None
    save_trained(tmp_path / "speaker.pt", trained)
    assert load_checkpoint(tmp_path / "speaker.pt")[1]["standardization"] is None
    restored = load_trained(tmp_path / "speaker.pt")
    before = trained_posteriors(trained, features, labels, val).clips.probabilities
    np.testing.assert_array_equal(trained_posteriors(restored, features, labels, val).clips.probabilities, before)


def test_foreign_or_pickled_files_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "obj": argparse.Namespace(x=1)}, path)  # needs pickled code to rebuild
    with pytest.raises(TrainError, match="pickled code"):
        load_checkpoint(path)
    with pytest.raises(TrainError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_transfer_loads_matching_layers_reinitialises_the_head_and_freezes(tmp_path, problem, trained_video):
    features, _, train, val = problem
    source, _ = trained_video
    save_trained(tmp_path / "source.pt", source)
    # Another corpus, another label set: two classes instead of three, so the head's shape differs.
    binary = TaskLabels(
        "toy", ("calm", "upset"), {c: int(not c.startswith("happiness")) for c in features.clip_ids}, {}
    )
    target = fit(
        "video",
        features,
        binary,
        train,
        val,
        dataclasses.replace(FAST, epochs=2),
        hyperparameters=SMALL_VIDEO,
        init_from=tmp_path / "source.pt",
        trainable=["classifier", "video_stream.pooling"],
    )
    report = target.transfer
    assert set(report.reinitialised) == {"classifier.weight", "classifier.bias"}
    assert "video_stream.reduction.conv.weight" in report.loaded and "classifier.weight" not in report.loaded
    assert set(report.frozen) == {"video_stream.reduction.conv.weight", "video_stream.reduction.conv.bias"}
    source_state, new_state = source.model.state_dict(), target.model.state_dict()
    for name in report.frozen:
        assert torch.equal(new_state[name], source_state[name]), name
    trained_pooling = [n for n in report.loaded if n.startswith("video_stream.pooling")]
    assert any(not torch.equal(new_state[n], source_state[n]) for n in trained_pooling)
    with pytest.raises(TrainError, match="match no parameter"):
        fit(
            "video",
            features,
            binary,
            train,
            val,
            FAST,
            hyperparameters=SMALL_VIDEO,
            init_from=tmp_path / "source.pt",
            trainable=["no_such_layer"],
        )


def test_avef_trains_on_segments_and_its_clip_svm_survives_the_checkpoint(tmp_path):
    features = segment_features()
    labels = task_labels(features, "emotion")
    train, val = split(features)
    train_params = TrainParams(
        epochs=3, batch_size=8, lr=3e-3, patience=3, dbn_pretrain_epochs=1, speaker_normalisation=False
    )
    settings = TrainSettings.of(train_params)
    trained = fit("avef", features, labels, train, val, settings, hyperparameters=SMALL_AVEF)
    assert trained.clip_svm is not None
    embeddings, svm_labels = trained.svm_training
    assert embeddings.shape == (len(train), SMALL_AVEF["dbn_hidden"][-1])
    assert svm_labels.tolist() == [labels.index[c] for c in train]
    predictions = trained_posteriors(trained, features, labels, val)
    assert predictions.segments is not None and len(predictions.segments.clip_ids) == 3 * len(val)
    # the clip decision is the SVM's, not the mean of the segment posteriors
    mean_of_segments = model_posteriors(
        trained.model, make_dataset(features, labels, val, trained.standardization), labels.classes
    )
    assert not np.allclose(predictions.clips.probabilities, mean_of_segments.clips.probabilities)
    save_trained(tmp_path / "avef.pt", trained)
    restored = load_trained(tmp_path / "avef.pt")
    again = trained_posteriors(restored, features, labels, val)
    np.testing.assert_allclose(again.clips.probabilities, predictions.clips.probabilities, atol=1e-6)


def test_a_checkpoint_of_the_earlier_format_loads_the_same_model(tmp_path, problem, trained_video):
    """Written before input sizes were stored and before 'adam' was renamed 'adamw': its sizes come from
    its feature settings (or the hyper-parameters that carried them), its optimizer under its new name."""
    import json

    features, labels, _, val = problem
    trained, _ = trained_video
    save_trained(tmp_path / "new.pt", trained)
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    meta = json.loads(payload["meta"])
    embedding_dim = meta.pop("input_shapes")["embedding_dim"]
    meta["hyperparameters"] = {"video_dim": embedding_dim}
    meta["settings"]["optimizer"] = "adam"
    torch.save({**payload, "meta": json.dumps(meta)}, tmp_path / "old.pt")
    old = load_trained(tmp_path / "old.pt")
    assert old.shapes.embedding_dim == embedding_dim and old.hyperparameters == {}
    assert old.settings.optimizer == "adamw"
    np.testing.assert_array_equal(
        trained_posteriors(old, features, labels, val).clips.probabilities,
        trained_posteriors(trained, features, labels, val).clips.probabilities,
    )
