"""The built-in sample corpus: small, deterministic CREMA-D-style clips that every stage can run on.

Real corpora cannot ship with the repo, so ``avemo sample`` synthesises one. Each clip is a real face
(``skimage.data.astronaut``, bundled, so MTCNN finds it without any download) that moves its head and
mouth in step with a source-filter "speech" track. What carries the label:

* audio: f0 level and range, speaking rate, loudness and pause length per emotion (``EMOTION_STYLES``);
  e.g. ANG loud and fast, HAP high and wide-ranging f0, NEU flat, SAD low, slow and quiet;
* video: a static expression warp (mouth corners up for HAP, down for SAD/DIS, brows lowered for
  ANG/DIS, raised for FEA/SAD) plus how wide the mouth opens on each syllable.

Who is speaking shows as a speaker-specific base f0 (even ids female-like, odd male-like), formant
scale, mirror, zoom and colour tint. Everything random comes from a numpy Generator seeded with
(seed, speaker, emotion, sentence), and ffmpeg runs single-threaded with bitexact flags, so the same
arguments give byte-identical files, which is what lets DVC version the corpus.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tasks.sample.face import express, render_face_frames, speaker_canvas
from tasks.sample.mux import mux_clip
from tasks.sample.speech import mouth_opening, plan_utterance, synthesize_speech
from tasks.sample.styles import (
    DEFAULT_SENTENCES,
    EMOTION_STYLES,
    FPS,
    SENTENCE_SYLLABLES,
    SampleError,
    clip_name,
    clip_rng,
    speaker_look,
)


def write_sample_corpus(
    out_dir: Path,
    speakers: Sequence[int],
    emotions: Sequence[str],
    seed: int,
    sentences: Sequence[str] = DEFAULT_SENTENCES,
) -> list[Path]:
    """Write one clip per (speaker, emotion, sentence) to ``out_dir/VideoMP4`` and return their paths.

    Existing clips are overwritten; the output depends on the arguments alone (and the ffmpeg build).
    """
    checks = (("emotion", emotions, EMOTION_STYLES), ("sentence", sentences, SENTENCE_SYLLABLES))
    for kind, codes, known in checks:
        unknown = [code for code in codes if code not in known]
        if unknown:
            raise SampleError(f"unknown {kind} code(s) {unknown}; use CREMA-D codes {sorted(known)}")
    if not (speakers and emotions and sentences):
        raise SampleError("speakers, emotions and sentences must each name at least one entry")
    video_dir = Path(out_dir) / "VideoMP4"
    video_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for speaker in speakers:
        look = speaker_look(speaker, seed)
        canvas = speaker_canvas(look)
        for emotion in emotions:
            style = EMOTION_STYLES[emotion]
            face = express(canvas, look, style)
            for sentence in sentences:
                rng = clip_rng(seed, speaker, emotion, sentence)
                plan = plan_utterance(SENTENCE_SYLLABLES[sentence], style, rng)
                audio = synthesize_speech(plan, style, look, rng)
                n_frames = round(plan.duration_s * FPS)
                frames = render_face_frames(face, look, mouth_opening(plan, style, n_frames), rng)
                path = video_dir / clip_name(speaker, sentence, emotion)
                mux_clip(path, frames, audio)
                written.append(path)
    return written
