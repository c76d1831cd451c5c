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

import functools
import os
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np
from scipy import ndimage, signal
from skimage import data as skimage_data
from skimage import transform

from avemo.errors import AvemoError
from avemo.ffmpeg import ffmpeg_exe

FPS = 25
FRAME_SIZE = 256
SAMPLE_RATE = 16000
DEFAULT_SENTENCES: tuple[str, ...] = ("DFA", "IEO")

# CREMA-D's twelve sentences and their syllable counts: the count sets how long a clip speaks.
SENTENCE_SYLLABLES: dict[str, int] = {
    "IEO": 6,  # It's eleven o'clock
    "TIE": 8,  # That is exactly what happened
    "IOM": 8,  # I'm on my way to the meeting
    "IWW": 8,  # I wonder what this is about
    "TAI": 7,  # The airplane is almost full
    "MTI": 9,  # Maybe tomorrow it will be cold
    "IWL": 8,  # I would like a new alarm clock
    "ITH": 10,  # I think I have a doctor's appointment
    "DFA": 6,  # Don't forget a jacket
    "ITS": 7,  # I think I've seen this before
    "TSI": 5,  # The surface is slick
    "WSI": 9,  # We'll stop in a couple of minutes
}

# Landmarks of the astronaut's face in the 512 x 512 source image, as MTCNN reports them.
_SOURCE_SIZE = 512
_FACE_CENTRE = (225.0, 117.0)  # x, y
_MOUTH_CENTRE = (223.5, 140.5)
_MOUTH_WIDTH = 43.0
_BROW_Y = 88.0
_FACE_IN_FRAME = (128, 120)  # where the face centre sits in a still frame
_CANVAS_MARGIN = 32  # padding that keeps head motion inside the picture
_HEAD_MOTION_PX = 4.0
_MOUTH_MAX_OPEN_PX = 7.0
_MOUTH_COLOUR = np.array([70.0, 25.0, 30.0], dtype=np.float32)
_NOISE_FLOOR = 3e-4  # about -70 dBFS: silent to VAD, yet not digital zero

# Vowel formants (F1, F2, F3) in Hz of an adult male voice; female-like voices scale them up.
_VOWELS = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]],
    dtype=np.float64,
)
_FORMANT_BANDWIDTHS = (90.0, 110.0, 170.0)


class SampleError(AvemoError):
    """The sample corpus cannot be made with these arguments."""


@dataclass(frozen=True)
class EmotionStyle:
    """How one emotion sounds and looks in the sample corpus."""

    f0_factor: float  # times the speaker's base f0
    f0_range_st: float  # spread of syllable pitch accents, semitones
    tempo: float  # utterance duration factor: < 1 speaks faster
    peak: float  # peak amplitude of the clip, full scale = 1
    pause_s: float  # the mid-sentence pause
    mouth_open: float  # share of the widest mouth opening reached on a loud syllable
    smile_px: float  # mouth corners moved up (+) or down (-), source pixels
    brow_px: float  # brows moved down (+, frown) or up (-), source pixels


EMOTION_STYLES: dict[str, EmotionStyle] = {
    "ANG": EmotionStyle(1.25, 5.0, 0.85, 0.85, 0.40, 1.00, -3.0, 8.0),
    "DIS": EmotionStyle(0.90, 3.0, 1.10, 0.45, 0.50, 0.50, -9.0, 5.0),
    "FEA": EmotionStyle(1.45, 6.0, 0.90, 0.50, 0.45, 0.90, -4.0, -8.0),
    "HAP": EmotionStyle(1.35, 9.0, 0.95, 0.60, 0.40, 0.80, 13.0, -2.0),
    "NEU": EmotionStyle(1.00, 2.0, 1.00, 0.40, 0.45, 0.60, 0.0, 0.0),
    "SAD": EmotionStyle(0.85, 2.0, 1.20, 0.22, 0.60, 0.35, -12.0, -5.0),
}


@dataclass(frozen=True)
class SpeakerLook:
    """What tells one sample speaker from another, in voice and in picture."""

    base_f0: float  # Hz
    formant_scale: float  # vocal tract: 1.0 male-like, ~1.15 female-like
    mirror: bool
    zoom: float  # face size relative to the source image
    tint: tuple[float, float, float]  # RGB gains


def speaker_look(speaker: int, seed: int) -> SpeakerLook:
    """Draw a speaker's voice and appearance; even ids are female-like, odd ones male-like."""
    rng = np.random.default_rng([seed, speaker])
    female = speaker % 2 == 0
    return SpeakerLook(
        base_f0=float((210.0 if female else 115.0) * rng.uniform(0.92, 1.08)),
        formant_scale=1.15 if female else 1.0,
        mirror=bool(rng.integers(2)),
        zoom=float(rng.uniform(0.85, 1.15)),
        tint=tuple(float(g) for g in rng.uniform(0.75, 1.25, size=3)),
    )


def clip_rng(seed: int, speaker: int, emotion: str, sentence: str) -> np.random.Generator:
    """One Generator per clip, so a clip does not change when others are added or dropped."""
    codes = [int.from_bytes(code.encode(), "big") for code in (emotion, sentence)]
    return np.random.default_rng([seed, speaker, *codes])


def clip_name(speaker: int, sentence: str, emotion: str) -> str:
    """CREMA-D's file name; intensity XX means "unspecified", as CREMA-D uses for most sentences."""
    return f"{speaker}_{sentence}_{emotion}_XX.mp4"


@dataclass(frozen=True)
class UtterancePlan:
    duration_s: float  # a whole number of video frames
    syllables: tuple[tuple[float, float], ...]  # (start, end) seconds


def plan_utterance(n_syllables: int, style: EmotionStyle, rng: np.random.Generator) -> UtterancePlan:
    """Lay syllables out in two phrases split by one long pause, inside a 2-4 s clip.

    The pause is at least 400 ms so a VAD with a 150 ms smoothing window still drops it.
    """
    frame_s = 1.0 / FPS
    wanted = (0.9 + 0.3 * n_syllables) * style.tempo + rng.uniform(-0.2, 0.2)
    duration = round(float(np.clip(wanted, 2.0, 4.0)) / frame_s) * frame_s
    lead, trail = rng.uniform(0.12, 0.25, size=2)
    pause = style.pause_s + rng.uniform(0.0, 0.08)
    gaps = rng.uniform(0.03, 0.07, size=n_syllables - 1)
    split = n_syllables // 2 + int(rng.integers(-1, 2))
    gaps[split - 1] = pause
    speaking = duration - lead - trail - gaps.sum()
    if speaking < 0.1 * n_syllables:
        raise SampleError(
            f"{n_syllables} syllables do not fit in {duration:.2f} s; "
            "use a sentence with fewer syllables"
        )
    lengths = rng.uniform(0.8, 1.2, size=n_syllables)
    lengths *= speaking / lengths.sum()
    starts = lead + np.concatenate([[0.0], np.cumsum(lengths[:-1] + gaps)])
    return UtterancePlan(duration, tuple(zip(starts.tolist(), (starts + lengths).tolist(), strict=True)))


def _resonator(frequency: float, bandwidth: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-pole formant resonance with unit gain at DC."""
    radius = np.exp(-np.pi * bandwidth / sample_rate)
    a = np.array([1.0, -2.0 * radius * np.cos(2.0 * np.pi * frequency / sample_rate), radius**2])
    return np.array([a.sum()]), a


def _syllable(
    f0_start: float,
    f0_peak: float,
    n_samples: int,
    vowel: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """One voiced syllable: harmonics of a rising-falling f0 (1/k tilt) through three formants."""
    t = np.arange(n_samples) / n_samples
    f0 = f0_start + (f0_peak - f0_start) * np.sin(np.pi * t) ** 2
    # slow pitch wander of a few tenths of a percent, so no two periods are exactly alike
    f0 *= 1.0 + 0.004 * rng.standard_normal(n_samples).cumsum() / np.sqrt(np.arange(1, n_samples + 1))
    phase = np.cumsum(f0) / sample_rate
    harmonics = np.arange(1, int(0.45 * sample_rate / f0.max()) + 1)
    voiced = (np.sin(2.0 * np.pi * np.outer(phase, harmonics)) / harmonics).sum(axis=1)
    for frequency, bandwidth in zip(vowel, _FORMANT_BANDWIDTHS, strict=True):
        voiced = signal.lfilter(*_resonator(frequency, bandwidth, sample_rate), voiced)
    ramp = min(int(0.04 * sample_rate), n_samples // 3)
    envelope = np.ones(n_samples)
    envelope[:ramp] = np.sin(0.5 * np.pi * np.arange(ramp) / ramp) ** 2
    envelope[n_samples - ramp :] = envelope[:ramp][::-1]
    return voiced * envelope


def synthesize_speech(
    plan: UtterancePlan,
    style: EmotionStyle,
    look: SpeakerLook,
    rng: np.random.Generator,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Source-filter "vowel" speech for ``plan``: float32 mono, peak at ``style.peak``, light noise.

    Pitch accents are drawn within the emotion's f0 range around a declining phrase line, so the
    label shows in f0 level, f0 range, rate and energy, as in acted emotional speech.
    """
    audio = np.zeros(round(plan.duration_s * sample_rate))
    centre = look.base_f0 * style.f0_factor
    declination = np.linspace(style.f0_range_st / 4, -style.f0_range_st / 4, len(plan.syllables))
    for (start, end), drift in zip(plan.syllables, declination, strict=True):
        accent = drift + rng.uniform(-0.5, 0.5) * style.f0_range_st
        f0_start = centre * 2.0 ** ((accent - style.f0_range_st / 6) / 12)
        f0_peak = centre * 2.0 ** ((accent + style.f0_range_st / 6) / 12)
        vowel = _VOWELS[rng.integers(len(_VOWELS))] * look.formant_scale
        first, last = round(start * sample_rate), round(end * sample_rate)
        syllable = _syllable(f0_start, f0_peak, last - first, vowel, sample_rate, rng)
        audio[first:last] += rng.uniform(0.7, 1.0) * syllable
    audio *= style.peak / np.abs(audio).max()
    audio += _NOISE_FLOOR * rng.standard_normal(audio.size)
    return audio.astype(np.float32)


def mouth_opening(plan: UtterancePlan, style: EmotionStyle, n_frames: int) -> np.ndarray:
    """Per video frame, how far the mouth is open (0..1): open mid-syllable, shut in pauses."""
    times = (np.arange(n_frames) + 0.5) / FPS
    opening = np.zeros(n_frames)
    for start, end in plan.syllables:
        inside = (times >= start) & (times < end)
        opening[inside] = np.sin(np.pi * (times[inside] - start) / (end - start))
    return opening * style.mouth_open


@functools.cache
def _astronaut() -> np.ndarray:
    return skimage_data.astronaut()


def _to_canvas(point: tuple[float, float], look: SpeakerLook) -> tuple[float, float]:
    """Map a source-image (x, y) into the speaker's mirrored, zoomed, padded canvas."""
    x, y = point
    if look.mirror:
        x = _SOURCE_SIZE - 1 - x
    return x * look.zoom + _CANVAS_MARGIN, y * look.zoom + _CANVAS_MARGIN


def speaker_canvas(look: SpeakerLook) -> np.ndarray:
    """The astronaut as this speaker looks: mirrored, zoomed, tinted, padded (float32 RGB, 0..255)."""
    image = _astronaut()[:, ::-1] if look.mirror else _astronaut()
    zoomed = transform.rescale(image, look.zoom, channel_axis=-1, order=1, preserve_range=True)
    tinted = np.clip(zoomed * np.asarray(look.tint), 0.0, 255.0)
    pad = ((_CANVAS_MARGIN, _CANVAS_MARGIN), (_CANVAS_MARGIN, _CANVAS_MARGIN), (0, 0))
    return np.pad(tinted, pad, mode="reflect").astype(np.float32)


def express(canvas: np.ndarray, look: SpeakerLook, style: EmotionStyle) -> np.ndarray:
    """Warp the face on ``canvas`` into the emotion's expression: mouth-corner curve and brow height.

    Only vertical displacements, smooth and local, so the face stays a face MTCNN detects.
    """
    zoom = look.zoom
    mouth_x, mouth_y = _to_canvas(_MOUTH_CENTRE, look)
    face_x, brow_y = _to_canvas((_FACE_CENTRE[0], _BROW_Y), look)
    top, bottom = int(brow_y - 40 * zoom), int(mouth_y + 40 * zoom)
    left, right = int(face_x - 80 * zoom), int(face_x + 80 * zoom)
    rows, cols = np.mgrid[top:bottom, left:right].astype(np.float64)
    across = (cols - mouth_x) / (0.5 * _MOUTH_WIDTH * zoom)
    corners = across**2 * np.exp(-(across**2) / 1.5) * np.exp(-(((rows - mouth_y) / (12 * zoom)) ** 2))
    brows = np.exp(-(((rows - brow_y) / (10 * zoom)) ** 2) - ((cols - face_x) / (35 * zoom)) ** 2)
    shift = zoom * (-style.smile_px * corners + style.brow_px * brows)
    warped = canvas.copy()
    for channel in range(3):
        warped[top:bottom, left:right, channel] = ndimage.map_coordinates(
            canvas[..., channel], [rows - shift, cols], order=1, mode="nearest"
        )
    return warped


def _draw_open_mouth(
    frame: np.ndarray, centre: tuple[float, float], half_width: float, half_height: float
) -> None:
    """Blend the dark gap between parted lips, a soft-edged ellipse, into ``frame`` in place."""
    centre_x, centre_y = centre
    top, left = int(centre_y - half_height), int(centre_x - half_width)
    rows, cols = np.mgrid[top : int(centre_y + half_height) + 2, left : int(centre_x + half_width) + 2]
    radius = ((cols - centre_x) / half_width) ** 2 + ((rows - centre_y) / half_height) ** 2
    alpha = np.clip(3.0 * (1.0 - radius), 0.0, 1.0)[..., None]
    window = frame[top : top + rows.shape[0], left : left + rows.shape[1]]
    window[:] = np.round(window * (1.0 - alpha) + _MOUTH_COLOUR * alpha)


def render_face_frames(
    canvas: np.ndarray, look: SpeakerLook, opening: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Frames (n, FRAME_SIZE, FRAME_SIZE, 3) uint8: slow head sway, mouth opening per ``opening``."""
    n_frames = opening.size
    times = np.arange(n_frames) / FPS
    rates, phases = rng.uniform(0.3, 0.7, size=2), rng.uniform(0.0, 2.0 * np.pi, size=2)
    sway_x = _HEAD_MOTION_PX * np.sin(2.0 * np.pi * rates[0] * times + phases[0])
    sway_y = 0.5 * _HEAD_MOTION_PX * np.sin(2.0 * np.pi * rates[1] * times + phases[1])
    face_x, face_y = _to_canvas(_FACE_CENTRE, look)
    mouth_x, mouth_y = _to_canvas(_MOUTH_CENTRE, look)
    frames = np.empty((n_frames, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.uint8)
    for index, (open_share, dx, dy) in enumerate(zip(opening, sway_x, sway_y, strict=True)):
        left = round(face_x - _FACE_IN_FRAME[0] + dx)
        top = round(face_y - _FACE_IN_FRAME[1] + dy)
        frames[index] = np.round(canvas[top : top + FRAME_SIZE, left : left + FRAME_SIZE])
        half_height = open_share * _MOUTH_MAX_OPEN_PX * look.zoom
        if half_height > 0.5:
            half_width = 0.35 * _MOUTH_WIDTH * look.zoom * (1.0 + 0.3 * open_share)
            _draw_open_mouth(frames[index], (mouth_x - left, mouth_y + 1 - top), half_width, half_height)
    return frames


@functools.cache
def video_encoder_options() -> dict[str, str | int]:
    """libx264 where the ffmpeg binary has it (H.264, what real corpora ship), else MPEG-4 part 2."""
    listing = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True, check=False
    ).stdout
    if " libx264 " in listing:
        return {"vcodec": "libx264", "preset": "veryfast", "crf": 20}
    return {"vcodec": "mpeg4", "q:v": 3}


def mux_clip(path: Path, frames: np.ndarray, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Encode RGB ``frames`` and float ``audio`` into an mp4 at ``path``, atomically and bit-exactly.

    Frames go through ffmpeg's stdin and audio through a second pipe, fed by a thread so neither
    pipe can stall the other; nothing but the finished clip touches the disk. The clip is written
    under a temporary name and renamed at the end, so an interrupted run never leaves a truncated
    clip behind.
    """
    n_frames, height, width, _ = frames.shape
    audio_read, audio_write = os.pipe()
    partial = path.with_name(f".{path.stem}.partial.mp4")
    video_in = ffmpeg.input("pipe:0", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", r=FPS)
    audio_in = ffmpeg.input(f"pipe:{audio_read}", format="f32le", ar=sample_rate, ac=1)
    command = (
        ffmpeg.output(
            video_in.video,
            audio_in.audio,
            str(partial),
            pix_fmt="yuv420p",
            acodec="aac",
            ar=sample_rate,
            ac=1,
            audio_bitrate="64k",
            threads=1,
            map_metadata=-1,
            **video_encoder_options(),
            **{"flags:v": "+bitexact", "flags:a": "+bitexact", "fflags": "+bitexact"},
        )
        .global_args("-hide_banner", "-loglevel", "error", "-y")
        .compile(cmd=ffmpeg_exe())
    )
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(audio_read,)
        )
    except OSError:
        os.close(audio_write)
        raise
    finally:
        os.close(audio_read)

    def feed_audio() -> None:
        try:
            with os.fdopen(audio_write, "wb") as pipe:
                pipe.write(audio.astype("<f4").tobytes())
        except BrokenPipeError:
            pass  # ffmpeg stopped early; its stderr says why

    feeder = threading.Thread(target=feed_audio, daemon=True)
    feeder.start()
    try:
        process.stdin.write(np.ascontiguousarray(frames).tobytes())
        process.stdin.close()
    except BrokenPipeError:
        pass  # ffmpeg stopped early; its stderr below says why
    messages = process.stderr.read().decode("utf-8", "replace").strip().splitlines()
    process.wait()
    feeder.join()
    if process.returncode != 0:
        partial.unlink(missing_ok=True)
        reason = messages[0] if messages else "no message"  # the first line names the cause
        raise SampleError(f"ffmpeg could not write {path.name} ({n_frames} frames): {reason}")
    partial.replace(path)


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
