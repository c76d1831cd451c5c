"""Features folder -> datasets: what is loaded, layouts, padding, train-only standardisation, labels,
and the modality check. A tiny folder is written with avemo's own schemas for every test module run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from avemo import schemas
from avemo.parquet_io import write_table
from models.registry import ModalityError, check_modalities
from tasks.learning.datasets import (
    ClipDataset,
    Masking,
    SegmentDataset,
    collate_clips,
    collate_segments,
)
from tasks.learning.features import (
    DatasetError,
    available_modalities,
    load_features,
    task_labels,
)
from tasks.learning.standardization import (
    Moments,
    RunningStandardization,
    Standardization,
    fit_standardization,
    speaker_standardization,
    typical_speaker,
)

BINS, MELS, FRAMES, FACES, CROP, DIM = 200, 64, 64, 16, 32, 8
# clip id -> (speaker, emotion, spectrogram frames, has video)
CLIPS = {
    "a": ("s1", "anger", 70, True),
    "b": ("s1", "sadness", 80, True),
    "c": ("s2", "neutral", 65, False),
    "d": ("s2", "anger", 75, True),
}
SEGMENTS_PER_CLIP = 2
FRAMES_PER_CLIP = 20


def spectrogram(clip: str) -> np.ndarray:
    """Distinct, known values: frame t, bin f of clip k is k * 1000 + t + f / 1000."""
    k = list(CLIPS).index(clip)
    t = CLIPS[clip][2]
    return (k * 1000 + np.arange(t)[:, None] + np.arange(BINS)[None, :] / 1000).astype(np.float32)


def log_mel(clip: str, segment: int) -> np.ndarray:
    """(mel, frame, channel) with value 100 c + mel + frame / 100 + clip number + 10 * segment."""
    k = list(CLIPS).index(clip)
    m, f, c = np.meshgrid(np.arange(MELS), np.arange(FRAMES), np.arange(3), indexing="ij")
    return (100 * c + m + f / 100 + k + 10 * segment).astype(np.float32)


def crop(frame_index: int) -> np.ndarray:
    return np.full((CROP, CROP, 3), frame_index * 10, dtype=np.uint8)


def embedding(clip: str, frame_index: int) -> list[float]:
    return [float(frame_index), float(list(CLIPS).index(clip))] + [0.5] * (DIM - 2)


def write_features(folder: Path, with_video: bool = True) -> Path:
    clip_rows, segment_rows, frame_rows = [], [], []
    for clip, (speaker, emotion, frames, video) in CLIPS.items():
        video = video and with_video
        spec = spectrogram(clip)
        clip_rows.append(
            dict(
                clip_id=clip,
                path=f"{clip}.mp4",
                sha256="0" * 64,
                corpus="toy",
                speaker=speaker,
                label=emotion,
                corpus_label=emotion,
                duration_s=frames / 100,
                voiced_share=1.0,
                n_segments=SEGMENTS_PER_CLIP,
                has_video=video,
                video_fps=25.0 if video else None,
                n_face_frames=FRAMES_PER_CLIP if video else 0,
                n_no_face_frames=0,
                n_multiple_face_frames=0,
                decode_errors=0,
                linear_times=(np.arange(frames) / 100).tolist(),
                linear_spectrogram=spec.tolist(),
            )
        )
        for segment in range(SEGMENTS_PER_CLIP):
            segment_rows.append(
                dict(
                    clip_id=clip,
                    segment=segment,
                    first_frame=34 * segment,
                    t_begin=0.34 * segment,
                    t_end=0.34 * segment + 0.655,
                    voiced_share=1.0,
                    face_frames=list(range(2 * segment, 2 * segment + FACES)) if video else None,
                    n_no_face=0 if video else None,
                    n_multiple_faces=0 if video else None,
                )
            )
        if video:
            for index in reversed(range(FRAMES_PER_CLIP)):  # stored out of time order on purpose
                frame_rows.append(
                    dict(
                        clip_id=clip,
                        frame_index=index,
                        t=index / 25,
                        box=None,
                        probability=None,
                        landmarks=None,
                        detected=True,
                        no_face=False,
                        multiple_faces=False,
                        embedding=embedding(clip, index),
                    )
                )
    mels = np.stack([log_mel(r["clip_id"], r["segment"]) for r in segment_rows])
    segments = pa.Table.from_pylist(segment_rows)
    segments = segments.add_column(6, "log_mel", pa.FixedShapeTensorArray.from_numpy_ndarray(mels))
    frames_schema = schemas.frames_schema(CROP, DIM)
    frames = frames_schema.empty_table()  # an audio-only corpus still gets its (empty) frames file
    if frame_rows:
        crops = pa.FixedShapeTensorArray.from_numpy_ndarray(np.stack([crop(r["frame_index"]) for r in frame_rows]))
        frames = pa.Table.from_pylist(frame_rows, schema=frames_schema.remove(frames_schema.get_field_index("crop")))
        frames = frames.add_column(9, "crop", crops)
    write_table(pa.Table.from_pylist(clip_rows), folder / "clips.parquet", schemas.clips_schema(BINS), {})
    write_table(segments, folder / "segments.parquet", schemas.segments_schema(MELS, FRAMES, FACES), {})
    write_table(frames, folder / "frames.parquet", frames_schema, {})
    return folder


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory) -> Path:
    return write_features(tmp_path_factory.mktemp("features"))


@pytest.fixture(scope="module")
def audio_only_dir(tmp_path_factory) -> Path:
    return write_features(tmp_path_factory.mktemp("audio_only"), with_video=False)


def test_modalities_come_from_the_folder(features_dir, audio_only_dir):
    assert available_modalities(features_dir) == {"audio", "video"}
    assert available_modalities(audio_only_dir) == {"audio"}


def test_a_model_needing_video_on_audio_only_features_fails_before_loading(audio_only_dir):
    with pytest.raises(ModalityError, match="no video features"):
        load_features(audio_only_dir, {"audio", "video"})
    with pytest.raises(ModalityError, match="needs video features.*audio only"):
        check_modalities("gfbp", available_modalities(audio_only_dir))


def test_missing_folder_says_to_run_preprocess(tmp_path):
    with pytest.raises(DatasetError, match="avemo preprocess"):
        load_features(tmp_path, {"audio"})


def test_clip_features_spectrograms_and_time_ordered_embeddings(features_dir):
    features = load_features(features_dir, {"audio", "video"}, "clip")
    assert features.clip_ids == ("a", "b", "d")  # c has no video and is left out, and counted
    assert features.dropped == {"no face frames": 1}
    np.testing.assert_array_equal(features.audio["b"], spectrogram("b"))
    video = features.embeddings["d"]
    assert video.shape == (FRAMES_PER_CLIP, DIM)
    np.testing.assert_array_equal(video[:, 0], np.arange(FRAMES_PER_CLIP))  # sorted by frame index
    assert set(video[:, 1]) == {3.0}  # only clip d's frames


def test_audio_only_model_keeps_every_clip_and_loads_no_video(features_dir):
    features = load_features(features_dir, {"audio"}, "clip")
    assert features.clip_ids == tuple(CLIPS)
    assert features.embeddings is None and features.dropped == {}
    assert features.loaded == {"audio"} and features.modalities == {"audio", "video"}


def test_segments_are_channels_first_and_face_clips_come_from_the_crops(features_dir):
    features = load_features(features_dir, {"audio", "video"}, "segment")
    labels = task_labels(features, "emotion")
    stats = Standardization({"log_mel": (np.zeros((3, MELS, 1), np.float32), np.ones((3, MELS, 1), np.float32))})
    dataset = SegmentDataset(features, labels, ["b"], stats)
    assert len(dataset) == SEGMENTS_PER_CLIP
    audio, video, label, clip, segment = dataset[1]
    assert (clip, segment, labels.classes[label]) == ("b", 1, "sadness")
    assert audio.shape == (3, MELS, FRAMES)
    np.testing.assert_array_equal(audio, log_mel("b", 1).transpose(2, 0, 1))
    assert video.shape == (3, FACES, CROP, CROP) and video.dtype == np.float32
    # segment 1 uses frames 2..17; crop of frame i is 10 i everywhere
    np.testing.assert_allclose(video[:, :, 0, 0], np.tile(np.arange(2, 18) * 10 / 255, (3, 1)), rtol=1e-6)
    batch = collate_segments([dataset[0], dataset[1]])
    assert batch.audio.shape == (2, 3, MELS, FRAMES) and batch.video.shape == (2, 3, FACES, CROP, CROP)
    assert set(batch.inputs("cpu")) == {"audio", "video"}


def test_collate_pads_to_the_longest_clip_and_keeps_lengths(features_dir):
    features = load_features(features_dir, {"audio", "video"}, "clip")
    labels = task_labels(features, "emotion")
    stats = fit_standardization(features, ["a", "b", "d"])
    dataset = ClipDataset(features, labels, ["a", "b"], stats)
    batch = collate_clips([dataset[0], dataset[1]])
    assert batch.audio.shape == (2, 80, BINS) and batch.audio_lengths.tolist() == [70, 80]
    assert batch.video.shape == (2, FRAMES_PER_CLIP, DIM) and batch.video_lengths.tolist() == [20, 20]
    assert torch.all(batch.audio[0, 70:] == 0) and torch.any(batch.audio[0, 69] != 0)
    assert batch.labels.tolist() == [labels.classes.index("anger"), labels.classes.index("sadness")]
    assert set(batch.inputs("cpu")) == {"audio", "audio_lengths", "video", "video_lengths"}


def test_short_spectrograms_are_padded_up_to_the_encoder_minimum(features_dir):
    features = load_features(features_dir, {"audio"}, "clip")
    stats = fit_standardization(features, ["a"])
    audio, *_ = ClipDataset(features, task_labels(features, "emotion"), ["c"], stats, min_frames=100)[0]
    assert audio.shape == (100, BINS) and np.all(audio[65:] == 0)


def test_standardisation_uses_training_clips_only(features_dir):
    features = load_features(features_dir, {"audio", "video"}, "segment")
    train = ["a", "b"]
    stats = fit_standardization(features, train)
    mels = np.stack([log_mel(c, s) for c in train for s in range(SEGMENTS_PER_CLIP)])  # (N, mel, frame, ch)
    mean, std = stats.stats["log_mel"]
    np.testing.assert_allclose(mean[:, :, 0], mels.mean(axis=(0, 2)).T, rtol=1e-5)
    np.testing.assert_allclose(std[:, :, 0], mels.std(axis=(0, 2)).T, rtol=1e-5)
    labels = task_labels(features, "emotion")
    standardised = np.stack([item[0] for item in SegmentDataset(features, labels, train, stats)])
    np.testing.assert_allclose(standardised.mean(axis=(0, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(standardised.std(axis=(0, 3)), 1, atol=1e-4)
    other = fit_standardization(features, ["a", "d"])  # another training set, other statistics
    assert not np.allclose(other.stats["log_mel"][0], mean)


def test_clip_standardisation_per_bin_and_dimension(features_dir):
    features = load_features(features_dir, {"audio", "video"}, "clip")
    stats = fit_standardization(features, ["a", "d"])
    train_frames = np.concatenate([spectrogram("a"), spectrogram("d")])
    np.testing.assert_allclose(stats.stats["spectrogram"][0], train_frames.mean(axis=0, dtype=np.float64), rtol=1e-6)
    mean, std = stats.stats["embedding"]
    assert mean.shape == (DIM,) and std[-1] == 1.0  # a constant dimension is centred, not scaled by ~0
    restored = Standardization.from_json(stats.to_json())
    for name, (m, s) in stats.stats.items():
        np.testing.assert_array_equal(restored.stats[name][0], m)
        np.testing.assert_array_equal(restored.stats[name][1], s)


def test_labels_emotion_classes_and_binary_tasks(features_dir):
    features = load_features(features_dir, {"audio"}, "clip")
    emotion = task_labels(features, "emotion")
    assert emotion.classes == ("anger", "neutral", "sadness")
    assert emotion.index == {"a": 0, "b": 2, "c": 1, "d": 0}
    arousal = task_labels(features, "arousal")
    assert arousal.classes == ("low", "high")
    assert arousal.index == {"a": 1, "b": 0, "d": 1} and arousal.dropped == {"neutral": 1}
    assert arousal.labelled(["c", "b", "a"]) == ["b", "a"]
    with pytest.raises(DatasetError, match="no arousal label"):
        ClipDataset(features, arousal, ["a", "c"], fit_standardization(features, ["a"]))
    with pytest.raises(DatasetError, match="unknown task"):
        task_labels(features, "dominance")


def test_unknown_clips_are_refused(features_dir):
    features = load_features(features_dir, {"audio", "video"}, "clip")
    labels = task_labels(features, "emotion")
    with pytest.raises(DatasetError, match="not in the loaded features"):
        ClipDataset(features, labels, ["c"], fit_standardization(features, ["a"]))


def test_masking_zeroes_one_band_block_and_one_frame_block_reproducibly():
    x = np.ones((3, 64, 64), np.float32)
    masking = Masking(bands=10, frames=10, seed=3)
    rng = masking.rng()
    masked = [masking.apply(x, band_axis=1, frame_axis=2, rng=rng) for _ in range(20)]
    assert np.all(x == 1)  # the input is not modified
    for m in masked:
        zero_bands = np.flatnonzero(np.all(m[0] == 0, axis=1))
        zero_frames = np.flatnonzero(np.all(m[0] == 0, axis=0))
        assert len(zero_bands) <= 10 and len(zero_frames) <= 10
        assert np.all(np.diff(zero_bands) == 1) and np.all(np.diff(zero_frames) == 1)  # one block each
        assert np.array_equal(m[0] == 0, m[2] == 0)  # static, delta and delta2 masked alike
    assert len({m.tobytes() for m in masked}) > 10  # another mask each time
    again = Masking(bands=10, frames=10, seed=3).rng()
    np.testing.assert_array_equal(masking.apply(x, 1, 2, again), masked[0])


def test_speaker_normalisation_standardises_each_speaker_on_its_own_clips(features_dir):
    features = load_features(features_dir, {"audio"}, "clip")
    per_speaker = speaker_standardization(features, ["a", "b", "c", "d"])
    assert set(per_speaker) == {"s1", "s2"}
    s2_frames = np.concatenate([spectrogram("c"), spectrogram("d")])
    np.testing.assert_allclose(
        per_speaker["s2"].stats["spectrogram"][0], s2_frames.mean(0, dtype=np.float64), rtol=1e-6
    )
    dataset = ClipDataset(features, task_labels(features, "emotion"), ["c", "d"], per_speaker)
    standardised = np.concatenate([dataset[0][0], dataset[1][0]])
    np.testing.assert_allclose(standardised.mean(axis=0), 0, atol=1e-3)
    with pytest.raises(DatasetError, match="no standardisation for speakers"):
        ClipDataset(features, task_labels(features, "emotion"), ["a"], {"s2": per_speaker["s2"]})


@pytest.mark.parametrize("kind", ["clip", "segment"])
def test_statistics_gathered_clip_by_clip_equal_those_of_all_clips_at_once(features_dir, kind):
    """Prediction fits a speaker's statistics a file (a window) at a time; evaluation all at once."""
    features = load_features(features_dir, {"audio", "video"}, kind)
    running = RunningStandardization()
    for clip in ["a", "b", "d"]:
        running.add(features, [clip])
    gathered, at_once = running.result(), fit_standardization(features, ["a", "b", "d"])
    assert gathered.stats.keys() == at_once.stats.keys()
    for name, (mean, std) in at_once.stats.items():
        np.testing.assert_allclose(gathered.stats[name][0], mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(gathered.stats[name][1], std, rtol=1e-6)


def test_missing_values_are_left_out_of_the_moments():
    x = np.array([[1.0, np.nan], [3.0, np.nan], [np.nan, np.nan], [5.0, np.nan]])
    merged = Moments.of(x[:1], (0,)).merged(Moments.of(x[1:], (0,)))
    mean, std = merged.mean_std()
    np.testing.assert_allclose(mean, [3.0, 0.0])  # a feature never present: centred on 0, scaled by 1
    np.testing.assert_allclose(std, [np.std([1.0, 3.0, 5.0]), 1.0])


def test_typical_speaker_averages_the_speakers_means_and_variances(features_dir):
    features = load_features(features_dir, {"audio"}, "clip")
    per_speaker = speaker_standardization(features, ["a", "b", "c", "d"])
    typical = typical_speaker(per_speaker)
    (m1, s1), (m2, s2) = (per_speaker[s].stats["spectrogram"] for s in ("s1", "s2"))
    np.testing.assert_allclose(typical.stats["spectrogram"][0], (m1 + m2) / 2, rtol=1e-6)
    np.testing.assert_allclose(typical.stats["spectrogram"][1], np.sqrt((s1**2 + s2**2) / 2), rtol=1e-6)
