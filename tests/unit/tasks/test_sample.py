"""The sample corpus: CREMA-D names, 2-4 s H.264/AAC clips, a face MTCNN finds, speech with pauses
whose prosody follows the label, and byte-identical output for the same arguments."""

from __future__ import annotations

import time
from pathlib import Path

import librosa
import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN

from avemo.config import SampleParams
from tasks.demux import iter_video_frames, load_audio
from tasks.probe import probe, sha256_file
from tasks.sample import write_sample_corpus
from tasks.sample.face import express, speaker_canvas
from tasks.sample.mux import mux_clip
from tasks.sample.speech import UtterancePlan, mouth_opening, plan_utterance, synthesize_speech
from tasks.sample.styles import (
    DEFAULT_SENTENCES,
    EMOTION_STYLES,
    FPS,
    FRAME_SIZE,
    SENTENCE_SYLLABLES,
    EmotionStyle,
    SampleError,
    speaker_look,
)

RATE = 16000
RMS_FRAME = 480  # 30 ms, the VAD's frame


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[tuple[int, str, str], Path]:
    """The default corpus (params.yaml's sample section), keyed by (speaker, emotion, sentence)."""
    params = SampleParams()
    out_dir = tmp_path_factory.mktemp("sample")
    started = time.perf_counter()
    paths = write_sample_corpus(out_dir, params.speakers, params.emotions, params.seed)
    print(f"sample corpus: {len(paths)} clips in {time.perf_counter() - started:.1f} s")
    return {(int(p.name[:4]), p.name.split("_")[2], p.name.split("_")[1]): p for p in paths}


@pytest.fixture(scope="module")
def audio(corpus) -> dict[tuple[int, str, str], np.ndarray]:
    return {key: load_audio(path, RATE).signal for key, path in corpus.items()}


def frame_rms(samples: np.ndarray) -> np.ndarray:
    usable = samples[: samples.size // RMS_FRAME * RMS_FRAME]
    return np.sqrt((usable.reshape(-1, RMS_FRAME).astype(np.float64) ** 2).mean(axis=1))


def longest_run(mask: np.ndarray) -> int:
    best = run = 0
    for flag in mask:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def test_writes_one_cremad_named_clip_per_speaker_emotion_and_sentence(corpus):
    folder = next(iter(corpus.values())).parent
    expected = {
        f"{speaker}_{sentence}_{emotion}_XX.mp4"
        for speaker in (1001, 1002, 1003)
        for emotion in ("ANG", "HAP", "NEU", "SAD")
        for sentence in ("DFA", "IEO")
    }
    assert folder.name == "VideoMP4"
    assert {p.name for p in folder.iterdir()} == expected  # and no partial files left behind
    assert len(corpus) == 24


def test_clips_are_2_to_4_s_of_h264_at_25_fps_with_mono_aac(corpus):
    infos = [probe(path) for path in corpus.values()]
    for path, info in zip(corpus.values(), infos, strict=True):
        assert 2.0 <= info.duration_s <= 4.05, path.name
        video = (info.video_codec, info.video_fps, info.video_width, info.video_height)
        assert video == ("h264", 25.0, FRAME_SIZE, FRAME_SIZE), path.name
        audio = (info.audio_codec, info.audio_sample_rate, info.audio_channels)
        assert audio == ("aac", RATE, 1), path.name
    assert 60.0 <= sum(info.duration_s for info in infos) <= 80.0
    assert len({round(info.duration_s, 2) for info in infos}) > 6  # durations vary, not one fixed length


def test_mtcnn_finds_one_confident_face_on_frames_of_every_clip(corpus):
    torch.manual_seed(0)
    # the faces are 75-100 px wide: a 64 px floor keeps MTCNN's image pyramid short
    detector = MTCNN(keep_all=True, device="cpu", min_face_size=64)
    frames, names = [], []
    for path in corpus.values():
        # first, middle and last of the 50 frames that even the shortest clip has
        for frame in iter_video_frames(path, FPS, FRAME_SIZE, FRAME_SIZE, wanted=[0, 25, 49]):
            frames.append(frame.rgb)
            names.append(f"{path.name}#{frame.index}")
    assert len(frames) == 3 * len(corpus)
    boxes, probs = detector.detect(np.stack(frames))
    for name, frame_boxes, frame_probs in zip(names, boxes, probs, strict=True):
        assert frame_probs is not None, f"no face in {name}"
        confident = frame_probs > 0.95
        assert confident.sum() == 1, f"{name}: probabilities {frame_probs}"
        left, top, right, bottom = frame_boxes[confident][0]
        assert right - left > 0.25 * FRAME_SIZE and bottom - top > 0.3 * FRAME_SIZE, name
        assert abs((left + right) / 2 - FRAME_SIZE / 2) < 30, name  # the face stays near the centre


def test_audio_is_speech_with_a_long_pause_and_quiet_gaps(audio):
    for key, samples in audio.items():
        assert np.abs(samples).max() < 0.95, key
        rms = frame_rms(samples)
        silent = rms < 0.01 * rms.max()
        assert 0.15 < silent.mean() < 0.7, f"{key}: silent share {silent.mean():.2f}"
        assert (rms > 0.3 * rms.max()).mean() > 0.2, f"{key}: too little speech"
        inner = silent[np.argmax(~silent) : len(silent) - np.argmax(~silent[::-1])]
        assert longest_run(inner) * RMS_FRAME / RATE >= 0.3, f"{key}: no mid-sentence pause of 300 ms"


def mean_f0(samples: np.ndarray) -> float:
    f0 = librosa.yin(samples, fmin=60, fmax=600, sr=RATE, frame_length=1024, hop_length=RMS_FRAME)
    rms = librosa.feature.rms(y=samples, frame_length=1024, hop_length=RMS_FRAME)[0]
    return float(np.median(f0[rms > 0.3 * rms.max()]))


def voiced_rms(samples: np.ndarray) -> float:
    rms = frame_rms(samples)
    return float(rms[rms > 0.1 * rms.max()].mean())


@pytest.mark.parametrize("speaker", [1001, 1002, 1003])
def test_prosody_follows_the_documented_direction_per_speaker(audio, speaker):
    """HAP and ANG above NEU in f0, SAD below it; loudness ANG > HAP > NEU > SAD (EMOTION_STYLES)."""
    emotions = ("ANG", "HAP", "NEU", "SAD")
    f0 = {e: np.mean([mean_f0(audio[speaker, e, s]) for s in DEFAULT_SENTENCES]) for e in emotions}
    energy = {e: np.mean([voiced_rms(audio[speaker, e, s]) for s in DEFAULT_SENTENCES]) for e in emotions}
    assert f0["HAP"] > 1.15 * f0["NEU"] and f0["ANG"] > 1.1 * f0["NEU"], f0
    assert f0["NEU"] > 1.05 * f0["SAD"], f0
    assert energy["ANG"] > energy["HAP"] > energy["NEU"] > energy["SAD"], energy


def test_speakers_differ_in_voice_female_like_even_ids_higher(audio):
    f0 = {speaker: mean_f0(audio[speaker, "NEU", "DFA"]) for speaker in (1001, 1002)}
    assert 95 < f0[1001] < 140 and 170 < f0[1002] < 250, f0


def test_synthesised_f0_is_the_speakers_base_when_the_range_is_zero():
    look = speaker_look(1001, seed=7)
    flat = EmotionStyle(1.0, 0.0, 1.0, 0.5, 0.45, 0.5, 0.0, 0.0)
    plan = UtterancePlan(2.0, ((0.1, 0.8), (1.2, 1.9)))
    samples = synthesize_speech(plan, flat, look, np.random.default_rng(0))
    assert samples.dtype == np.float32 and samples.size == 2 * RATE
    assert abs(np.abs(samples).max() - 0.5) < 0.01
    assert mean_f0(samples) == pytest.approx(look.base_f0, rel=0.02)
    assert np.abs(samples[int(0.9 * RATE) : int(1.1 * RATE)]).max() < 0.003  # the pause is only noise


@pytest.mark.parametrize("emotion", sorted(EMOTION_STYLES))
def test_plans_fit_every_sentence_in_2_to_4_s_with_a_long_pause(emotion):
    style = EMOTION_STYLES[emotion]
    for sentence, n_syllables in SENTENCE_SYLLABLES.items():
        plan = plan_utterance(n_syllables, style, np.random.default_rng(3))
        starts, ends = np.array(plan.syllables).T
        assert 2.0 <= plan.duration_s <= 4.0, sentence
        assert round(plan.duration_s * FPS) == pytest.approx(plan.duration_s * FPS), sentence
        assert len(starts) == n_syllables and starts[0] > 0.1 and ends[-1] < plan.duration_s - 0.1
        gaps = starts[1:] - ends[:-1]
        assert gaps.min() > 0.0 and gaps.max() >= style.pause_s >= 0.4, sentence


def test_sad_speaks_slower_than_angry():
    syllables = SENTENCE_SYLLABLES["DFA"]
    sad = plan_utterance(syllables, EMOTION_STYLES["SAD"], np.random.default_rng(1))
    angry = plan_utterance(syllables, EMOTION_STYLES["ANG"], np.random.default_rng(1))
    assert sad.duration_s > angry.duration_s + 0.5


def test_mouth_opens_only_during_syllables():
    plan = UtterancePlan(2.0, ((0.2, 0.6), (1.2, 1.6)))
    opening = mouth_opening(plan, EMOTION_STYLES["ANG"], 50)
    assert opening[:5].max() == 0.0 and opening[15:30].max() == 0.0  # 0-0.2 s and 0.6-1.2 s shut
    assert opening[10] == pytest.approx(1.0, abs=0.05)  # mid-syllable, ANG opens fully
    assert mouth_opening(plan, EMOTION_STYLES["SAD"], 50).max() <= EMOTION_STYLES["SAD"].mouth_open


def test_expression_warp_is_local_and_neutral_is_the_identity():
    look = speaker_look(1003, seed=0)
    canvas = speaker_canvas(look)
    assert np.array_equal(express(canvas, look, EMOTION_STYLES["NEU"]), canvas)
    happy = express(canvas, look, EMOTION_STYLES["HAP"])
    changed_rows = np.flatnonzero(np.abs(happy - canvas).max(axis=(1, 2)) > 8)
    assert changed_rows.size > 10
    # only between the brows and the chin (source rows 88-141, in canvas rows)
    assert 60 * look.zoom < changed_rows.min() and changed_rows.max() < 200 * look.zoom + 32


def test_same_arguments_give_byte_identical_files_and_another_seed_does_not(tmp_path):
    def digests(folder: Path, seed: int) -> list[str]:
        clips = write_sample_corpus(folder, [1002], ["SAD"], seed, sentences=["TSI"])
        return [sha256_file(path) for path in clips]

    first = digests(tmp_path / "a", 0)
    assert digests(tmp_path / "b", 0) == first
    assert digests(tmp_path / "a", 0) == first  # overwriting gives the same bytes
    assert digests(tmp_path / "c", 1) != first


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"emotions": ["ANG", "JOY"]}, "JOY"),
        ({"sentences": ["XYZ"]}, "XYZ"),
        ({"speakers": []}, "at least one"),
    ],
)
def test_rejects_wrong_arguments_naming_them(tmp_path, kwargs, named):
    arguments = {"speakers": [1001], "emotions": ["ANG"], "sentences": ["DFA"]} | kwargs
    with pytest.raises(SampleError, match=named):
        write_sample_corpus(tmp_path, seed=0, **arguments)
    assert not (tmp_path / "VideoMP4").exists()


def test_a_failed_encode_raises_with_ffmpegs_reason_and_leaves_no_file(tmp_path):
    odd_sized = np.zeros((10, 65, 65, 3), dtype=np.uint8)  # yuv420p needs even sides
    target = tmp_path / "odd.mp4"
    with pytest.raises(SampleError, match="odd.mp4"):
        mux_clip(target, odd_sized, np.zeros(RATE // 2, dtype=np.float32))
    assert list(tmp_path.iterdir()) == []
