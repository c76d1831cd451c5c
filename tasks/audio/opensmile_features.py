"""openSMILE's eGeMAPSv02 and ComParE_2016 (audEERING's ``opensmile`` package): descriptors per 10 ms frame,
functionals per 655 ms segment and per clip.

Three openSMILE runs per clip and feature set: the low-level descriptors (LLDs, every 10 ms), the
functionals over each kept segment's window (openSMILE's own ``frameMode = list``, the windows in time
order), and the functionals over the whole clip. openSMILE reads the signal at the file's own sample
rate, as ``opensmile.process_file`` does, so its features are those of the library's own users. Its
library is under audEERING's research licence; avemo works without it, and a system that needs it says
what to install.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avemo.errors import AvemoError

FEATURE_SETS = {"egemaps": "eGeMAPSv02", "compare": "ComParE_2016"}
LLD_HOP_S = 0.01  # both sets' descriptors are 10 ms apart
# openSMILE fills a window too short for a functional with NaN and says so once per run; kept as NaN
warnings.filterwarnings("ignore", message="Segment too short", category=UserWarning)


class OpenSmileMissing(AvemoError):
    """The ``opensmile`` package is not installed."""


@dataclass(frozen=True)
class SmileOutput:
    frame_times: np.ndarray  # (T,) centre of each descriptor frame, s
    frames: np.ndarray  # (T, D) low-level descriptors
    segments: np.ndarray  # (S, F) functionals of each window asked for
    clip: np.ndarray  # (F,) functionals of the whole clip


def _opensmile() -> Any:
    try:
        import opensmile
    except ImportError as err:
        raise OpenSmileMissing(
            "the opensmile front-ends (egemaps, compare) need audEERING's opensmile package "
            "(research licence): pip install opensmile, or take egemaps and compare out of preprocess.frontends "
            "and choose another front-end (whisper, linear, logmel) for the systems that read them"
        ) from err
    return opensmile


_lock = threading.Lock()


@functools.cache
def _extractors(name: str) -> tuple[Any, Any, Any]:
    """(LLDs, functionals over listed windows, functionals over the whole signal) of one feature set.

    Built once per process: building one parses its configuration (~0.35 s). Each run re-reads the
    options, so the window list of a clip is set on the shared extractor just before it runs.
    """
    opensmile = _opensmile()
    feature_set = getattr(opensmile.FeatureSet, FEATURE_SETS[name])
    windows = Path(opensmile.__file__).parent / "core" / "config" / "shared" / "FrameModeFunctionalsMulti.conf.inc"
    return (
        opensmile.Smile(feature_set=feature_set, feature_level=opensmile.FeatureLevel.LowLevelDescriptors),
        opensmile.Smile(
            feature_set=feature_set,
            feature_level=opensmile.FeatureLevel.Functionals,
            options={"frameModeFunctionalsConf": str(windows), "frameList": "0s-0s"},
        ),
        opensmile.Smile(feature_set=feature_set, feature_level=opensmile.FeatureLevel.Functionals),
    )


def feature_names(name: str) -> tuple[list[str], list[str]]:
    """The names of the set's descriptors and of its functionals, in column order."""
    lld, _, func = _extractors(name)
    return list(lld.feature_names), list(func.feature_names)


def window_list(windows: Sequence[tuple[float, float]]) -> str:
    """openSMILE's frameList: ``start-end`` pairs in seconds, comma-separated, in time order."""
    return ",".join(f"{begin:.4f}s-{end:.4f}s" for begin, end in windows)


def extract(name: str, signal: np.ndarray, sample_rate: int, windows: Sequence[tuple[float, float]]) -> SmileOutput:
    """LLDs of ``signal`` (mono float in [-1, 1]), the functionals of each of ``windows`` (start, end in
    seconds, sorted by start) and of the whole signal."""
    lld, per_window, _ = _extractors(name)
    frames = lld.process_signal(signal, sample_rate)
    with _lock:  # the window list is an option of the shared extractor, read when the run starts
        per_window.options["frameList"] = window_list(windows)
        table = per_window.process_signal(signal, sample_rate)
    segments = table.to_numpy(np.float32)
    per_window_starts = table.index.get_level_values("start").total_seconds().to_numpy()
    clip = clip_functionals(name, signal, sample_rate)
    starts = frames.index.get_level_values("start").total_seconds().to_numpy()
    ends = frames.index.get_level_values("end").total_seconds().to_numpy()
    # ComParE's descriptors repeat their last frame's start (its streams of two frame sizes end apart): once each
    own = np.r_[True, np.diff(starts) > 0] if len(starts) else np.zeros(0, bool)
    # the frame's centre; openSMILE cuts the last frame's end at the signal's end, so the first's width serves
    half = (ends[0] - starts[0]) / 2 if len(starts) else 0.0
    return SmileOutput(
        frame_times=(starts[own] + half).astype(np.float32),
        frames=frames.to_numpy(np.float32)[own],
        segments=_by_window(segments, per_window_starts, windows),
        clip=clip,
    )


def clip_functionals(name: str, signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """(F,) the set's functionals over the whole signal."""
    return _extractors(name)[2].process_signal(signal, sample_rate).to_numpy(np.float32)[0]


def _by_window(rows: np.ndarray, starts: np.ndarray, windows: Sequence[tuple[float, float]]) -> np.ndarray:
    """One row per asked window: the row openSMILE gave for it (its start on openSMILE's frame grid, within
    one 10 ms frame of the asked start), or NaN where it gave none (a window too short for a functional)."""
    out = np.full((len(windows), rows.shape[1]), np.nan, np.float32)
    for k, (begin, _) in enumerate(windows):
        near = np.flatnonzero(np.abs(starts - begin) <= 1.5 * LLD_HOP_S)
        if near.size:
            out[k] = rows[near[0]]
    return out


def version() -> str:
    """The opensmile package's version, for provenance and the stage cache; OpenSmileMissing without it."""
    return str(_opensmile().__version__)
