"""Corpus folder -> clip manifest: one adapter per corpus naming scheme, then probing and validation.

Each ``prepare_<corpus>(corpus_dir)`` reads only names and folders (no file is opened), so parsing is
fast and testable on empty files; ``probe_clips`` then hashes and probes the kept files. Every file an
adapter does not take comes back as a ``Skipped`` with the reason, so a misnamed or misplaced file is
reported instead of silently vanishing from the dataset. ``validate_clips`` runs before anything is
written: a manifest with ambiguous ids, labels outside ``avemo.labels.EMOTIONS`` or files outside the
corpus folder would silently poison every later stage, so ingest stops on them instead.
"""

from __future__ import annotations

import csv
import posixpath
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa

from avemo.labels import EMOTIONS
from avemo.schemas import MANIFEST
from tasks.probe import MediaInfo, ProbeError, probe, sha256_file


class ManifestError(ValueError):
    """The corpus cannot become a valid manifest; the message lists the offending files."""


@dataclass(frozen=True)
class Clip:
    """One labelled media file as a corpus's naming scheme describes it, before probing."""

    clip_id: str
    path: str  # posix, relative to the corpus folder
    corpus: str
    speaker: str
    label: str  # one of EMOTIONS once validated
    corpus_label: str
    sentence: str | None = None
    intensity: str | None = None


@dataclass(frozen=True)
class Skipped:
    """A file an adapter did not take, and why (the CLI prints a summary of these)."""

    path: str
    reason: str


@dataclass(frozen=True)
class ManifestRow:
    """One manifest row; the fields are the columns of ``avemo.schemas.MANIFEST``, in order."""

    clip_id: str
    path: str
    corpus: str
    speaker: str
    label: str
    corpus_label: str
    sentence: str | None
    intensity: str | None
    sha256: str
    size_bytes: int
    duration_s: float | None
    audio_sample_rate: int | None
    audio_channels: int | None
    audio_codec: str | None
    video_fps: float | None
    video_width: int | None
    video_height: int | None
    video_codec: str | None
    probe_error: str | None


class _NotInScheme(ValueError):
    """A file's name or place does not follow the corpus's scheme; the message is the skip reason."""


# Common spellings of the canonical labels: CSV files and MEAD's folders use adjectives.
LABEL_ALIASES: dict[str, str] = {
    "angry": "anger",
    "bored": "boredom",
    "contemptuous": "contempt",
    "disgusted": "disgust",
    "fearful": "fear",
    "afraid": "fear",
    "happy": "happiness",
    "sad": "sadness",
    "surprised": "surprise",
}


def canonical_label(text: str) -> str | None:
    """The EMOTIONS name for a canonical name or a common alias (any case), else None."""
    key = text.strip().lower()
    if key in EMOTIONS:
        return key
    return LABEL_ALIASES.get(key)


def _walk(corpus_dir: Path, parse: Callable[[PurePosixPath], Clip]) -> tuple[list[Clip], list[Skipped]]:
    """Parse every file under ``corpus_dir`` (sorted, so manifests are reproducible)."""
    clips: list[Clip] = []
    skipped: list[Skipped] = []
    for path in sorted(corpus_dir.rglob("*")):
        if path.is_dir():
            continue
        rel = PurePosixPath(path.relative_to(corpus_dir).as_posix())
        if not path.is_file():
            skipped.append(Skipped(str(rel), "not a regular file (broken symlink?)"))
            continue
        try:
            clips.append(parse(rel))
        except _NotInScheme as why:
            skipped.append(Skipped(str(rel), str(why)))
    return clips, skipped


def _keep_preferred(
    clips: list[Clip], key: Callable[[Clip], str], rank: Callable[[Clip], int], reason: str
) -> tuple[list[Clip], list[Skipped]]:
    """Keep the best-ranked file of every group of files holding the same recording.

    Files tied at the best rank are all kept, so ``validate_clips`` reports them as duplicates.
    """
    groups: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        groups[key(clip)].append(clip)
    kept: list[Clip] = []
    skipped: list[Skipped] = []
    for group in groups.values():
        best = min(rank(clip) for clip in group)
        for clip in group:
            if rank(clip) == best:
                kept.append(clip)
            else:
                skipped.append(Skipped(clip.path, reason))
    return sorted(kept, key=lambda clip: clip.path), skipped


CREMAD_EMOTIONS = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happiness",
    "NEU": "neutral",
    "SAD": "sadness",
}
CREMAD_LEVELS = {"LO", "MD", "HI", "XX"}
# Video before audio (the video files carry the audio track too), then the lossless audio.
CREMAD_FORMAT_PREFERENCE = (".mp4", ".flv", ".wav", ".mp3")
_CREMAD_NAME = re.compile(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})")


def _parse_cremad(rel: PurePosixPath) -> Clip:
    if rel.suffix.lower() not in CREMAD_FORMAT_PREFERENCE:
        raise _NotInScheme(f"extension is not one of {' '.join(CREMAD_FORMAT_PREFERENCE)}")
    match = _CREMAD_NAME.fullmatch(rel.stem)
    if not match:
        raise _NotInScheme("name is not ActorID_Sentence_Emotion_Level (e.g. 1001_DFA_ANG_XX)")
    actor, sentence, emotion, level = match.groups()
    if emotion not in CREMAD_EMOTIONS:
        raise _NotInScheme(f"unknown CREMA-D emotion {emotion!r}")
    if level not in CREMAD_LEVELS:
        raise _NotInScheme(f"unknown CREMA-D level {level!r}")
    return Clip(
        clip_id=rel.stem,
        path=str(rel),
        corpus="cremad",
        speaker=actor,
        label=CREMAD_EMOTIONS[emotion],
        corpus_label=emotion,
        sentence=sentence,
        intensity=None if level == "XX" else level,
    )


def prepare_cremad(corpus_dir: Path) -> tuple[list[Clip], list[Skipped]]:
    """CREMA-D: ``ActorID_Sentence_Emotion_Level.{mp4,flv,wav,mp3}`` anywhere under the folder.

    E.g. ``VideoFlash/1001_DFA_ANG_XX.flv``. Emotion is ANG DIS FEA HAP NEU SAD; Level LO MD HI, or XX
    (unspecified, stored as a null intensity). The full corpus holds each clip in several formats
    (VideoMP4, VideoFlash, AudioWAV, AudioMP3): one file per clip is kept, preferring video, which
    carries the audio too: mp4 > flv > wav > mp3; the others are skipped duplicates. clip_id is the
    file stem, speaker the actor id.
    """
    clips, skipped = _walk(corpus_dir, _parse_cremad)
    kept, duplicates = _keep_preferred(
        clips,
        key=lambda clip: clip.clip_id,
        rank=lambda clip: CREMAD_FORMAT_PREFERENCE.index(PurePosixPath(clip.path).suffix.lower()),
        reason="another format of this clip is kept (preference mp4 > flv > wav > mp3)",
    )
    return kept, skipped + duplicates


RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happiness",
    "04": "sadness",
    "05": "anger",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
RAVDESS_CORPUS_LABELS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
RAVDESS_INTENSITIES = {"01": "normal", "02": "strong"}
# Audio-video first; then audio-only before video-only, as segments are cut where the voice is active
# and a silent video yields none.
RAVDESS_MODALITY_PREFERENCE = ("01", "03", "02")
_RAVDESS_NAME = re.compile(r"(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})")


def _parse_ravdess(rel: PurePosixPath) -> Clip:
    if rel.suffix.lower() not in (".mp4", ".wav"):
        raise _NotInScheme("extension is not .mp4 or .wav")
    match = _RAVDESS_NAME.fullmatch(rel.stem)
    if not match:
        raise _NotInScheme("name is not MM-VV-EE-II-SS-RR-AA (e.g. 01-01-03-02-01-01-12)")
    modality, channel, emotion, intensity, statement, _repetition, actor = match.groups()
    if modality not in RAVDESS_MODALITY_PREFERENCE:
        raise _NotInScheme(f"unknown RAVDESS modality {modality!r}")
    if channel not in ("01", "02"):
        raise _NotInScheme(f"unknown RAVDESS vocal channel {channel!r}")
    if emotion not in RAVDESS_EMOTIONS:
        raise _NotInScheme(f"unknown RAVDESS emotion {emotion!r}")
    if intensity not in RAVDESS_INTENSITIES:
        raise _NotInScheme(f"unknown RAVDESS intensity {intensity!r}")
    return Clip(
        clip_id=rel.stem,
        path=str(rel),
        corpus="ravdess",
        speaker=actor,
        label=RAVDESS_EMOTIONS[emotion],
        corpus_label=RAVDESS_CORPUS_LABELS[emotion],
        sentence=statement,
        intensity=RAVDESS_INTENSITIES[intensity],
    )


def prepare_ravdess(corpus_dir: Path) -> tuple[list[Clip], list[Skipped]]:
    """RAVDESS: ``Actor_XX/MM-VV-EE-II-SS-RR-AA.{mp4,wav}``, the seven fields all two-digit codes.

    Modality 01 audio-video, 02 video-only, 03 audio-only; vocal channel 01 speech, 02 song (both are
    kept; the channel stays readable in clip_id); emotion 01 neutral 02 calm 03 happy 04 sad 05 angry
    06 fearful 07 disgust 08 surprised; intensity 01 normal 02 strong; statement 01/02 (the sentence);
    repetition; actor (the speaker, read from the name, not the folder). One file per recording is
    kept, by modality audio-video > audio-only > video-only: a video-only file is kept only when
    neither other modality of that recording is present. clip_id is the kept file's stem.
    """
    clips, skipped = _walk(corpus_dir, _parse_ravdess)
    kept, duplicates = _keep_preferred(
        clips,
        key=lambda clip: clip.clip_id[3:],  # every field but the modality
        rank=lambda clip: RAVDESS_MODALITY_PREFERENCE.index(clip.clip_id[:2]),
        reason="another modality of this recording is kept (audio-video > audio-only > video-only)",
    )
    return kept, skipped + duplicates


ENTERFACE_EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
_ENTERFACE_SUBJECT = re.compile(r"subject\s*(\d+)", re.IGNORECASE)
_ENTERFACE_SENTENCE = re.compile(r"sentence\s*(\d+)", re.IGNORECASE)


def _parse_enterface(rel: PurePosixPath) -> Clip:
    if rel.suffix.lower() != ".avi":
        raise _NotInScheme("extension is not .avi")
    parts = rel.parts
    subject = _ENTERFACE_SUBJECT.fullmatch(parts[0]) if len(parts) in (3, 4) else None
    if not subject:
        raise _NotInScheme("path is not subject N/<emotion>/[sentence M/]<file>.avi")
    emotion = parts[1].lower()
    if emotion not in ENTERFACE_EMOTIONS:
        raise _NotInScheme(f"unknown eNTERFACE emotion folder {parts[1]!r}")
    sentence = None
    if len(parts) == 4:
        sentence_match = _ENTERFACE_SENTENCE.fullmatch(parts[2])
        if not sentence_match:
            raise _NotInScheme(f"folder {parts[2]!r} is not 'sentence M'")
        sentence = str(int(sentence_match.group(1)))
    return Clip(
        clip_id=rel.stem,
        path=str(rel),
        corpus="enterface",
        speaker=str(int(subject.group(1))),
        label=emotion,
        corpus_label=parts[1],
        sentence=sentence,
    )


def prepare_enterface(corpus_dir: Path) -> tuple[list[Clip], list[Skipped]]:
    """eNTERFACE'05: ``subject N/<emotion>/sentence M/<file>.avi``.

    Emotion folders are anger disgust fear happiness sadness surprise (the label set's own names).
    Subject 6 of the real corpus lacks the sentence level (``subject 6/<emotion>/<file>.avi``); its
    sentence is null. speaker is N, sentence M; clip_id is the file stem (the corpus names its files
    s<N>_<emotion>_<M>, unique across subjects).
    """
    return _walk(corpus_dir, _parse_enterface)


MEAD_EMOTIONS = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")
_MEAD_SPEAKER = re.compile(r"[MW]\d{3}")
_MEAD_LEVEL = re.compile(r"level_(\d+)")
_MEAD_CLIP = re.compile(r"\d{3}")


def _parse_mead(rel: PurePosixPath, view: str) -> Clip:
    parts = rel.parts
    if (
        len(parts) != 6
        or not _MEAD_SPEAKER.fullmatch(parts[0])
        or parts[1] != "video"
        or not _MEAD_LEVEL.fullmatch(parts[4])
        or not _MEAD_CLIP.fullmatch(rel.stem)
        or rel.suffix.lower() != ".mp4"
    ):
        raise _NotInScheme("path is not <speaker>/video/<view>/<emotion>/level_<n>/<nnn>.mp4")
    speaker, _, file_view, emotion, level_folder, _ = parts
    if file_view != view:
        raise _NotInScheme(f"view {file_view!r} is not the selected view {view!r}")
    if emotion not in MEAD_EMOTIONS:
        raise _NotInScheme(f"unknown MEAD emotion folder {emotion!r}")
    level = _MEAD_LEVEL.fullmatch(level_folder).group(1)
    return Clip(
        clip_id=f"{speaker}_{view}_{emotion}_{level_folder}_{rel.stem}",
        path=str(rel),
        corpus="mead",
        speaker=speaker,
        label=canonical_label(emotion),
        corpus_label=emotion,
        sentence=rel.stem,
        intensity=level,
    )


def prepare_mead(corpus_dir: Path, view: str = "front") -> tuple[list[Clip], list[Skipped]]:
    """MEAD: ``<speaker>/video/<view>/<emotion>/level_<n>/<nnn>.mp4``.

    E.g. ``M003/video/front/angry/level_1/001.mp4``.
    Emotions angry contempt disgusted fear happy neutral sad surprised; the corpus films each take
    from seven views (front, down, top, left_30, left_60, right_30, right_60) and one view is kept,
    ``front`` by default: the others are the same take and are skipped. intensity is the level n,
    sentence the clip number nnn; clip_id is ``<speaker>_<view>_<emotion>_level_<n>_<nnn>``.
    """
    return _walk(corpus_dir, lambda rel: _parse_mead(rel, view))


EMODB_EMOTIONS = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
_EMODB_NAME = re.compile(r"(\d{2})([a-z]\d{2})([A-Z])([a-z])")


def _parse_emodb(rel: PurePosixPath) -> Clip:
    if rel.suffix.lower() != ".wav":
        raise _NotInScheme("extension is not .wav")
    match = _EMODB_NAME.fullmatch(rel.stem)
    if not match:
        raise _NotInScheme("name is not speaker(2) text(3) emotion(1) version(1) (e.g. 03a01Fa)")
    speaker, text, letter, _version = match.groups()
    if letter not in EMODB_EMOTIONS:
        raise _NotInScheme(f"unknown EmoDB emotion letter {letter!r}")
    return Clip(
        clip_id=rel.stem,
        path=str(rel),
        corpus="emodb",
        speaker=speaker,
        label=EMODB_EMOTIONS[letter],
        corpus_label=letter,
        sentence=text,
    )


def prepare_emodb(corpus_dir: Path) -> tuple[list[Clip], list[Skipped]]:
    """EmoDB: ``<speaker:2><text:3><emotion:1><version:1>.wav`` anywhere under the folder.

    E.g. ``03a01Fa.wav``. Emotion letters (German): W anger (Wut), L boredom (Langeweile), E disgust
    (Ekel), A fear (Angst), F happiness (Freude), T sadness (Trauer), N neutral. The text code is the
    sentence; the letter is kept as corpus_label; clip_id is the file stem.
    """
    return _walk(corpus_dir, _parse_emodb)


CSV_REQUIRED_COLUMNS = ("path", "speaker", "label")
CSV_OPTIONAL_COLUMNS = ("clip_id", "sentence", "intensity")


def _relative_to_corpus(corpus_dir: Path, text: str) -> str:
    """A CSV path as a posix path relative to the corpus; one pointing elsewhere stays as written."""
    path = Path(text)
    if path.is_absolute():
        for root in (corpus_dir.absolute(), corpus_dir.resolve()):
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return text
    return posixpath.normpath(path.as_posix())


def prepare_csv(corpus_dir: Path, csv_path: Path | None = None) -> tuple[list[Clip], list[Skipped]]:
    """A user's CSV with header ``path,speaker,label`` and optional ``clip_id,sentence,intensity``.

    The CSV is ``corpus_dir/labels.csv`` unless ``csv_path`` names another. Paths are relative to
    ``corpus_dir`` wherever the CSV lies (the manifest's own convention), or absolute inside it. label is
    a canonical name or a common alias (``LABEL_ALIASES``, any case), the cell kept as corpus_label.
    clip_id defaults to the file stem. Every row is taken: a bad row (unknown label, missing file,
    path outside the corpus) is left for ``validate_clips`` to report with the others, never skipped.
    Unknown columns are refused, so a misspelt optional column cannot silently drop its values.
    """
    csv_path = csv_path or corpus_dir / "labels.csv"
    if not csv_path.is_file():
        raise ManifestError(
            f"label CSV {csv_path} not found: put labels.csv in the corpus folder or pass its path"
        )
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in CSV_REQUIRED_COLUMNS if name not in columns]
        unknown = [name for name in columns if name not in CSV_REQUIRED_COLUMNS + CSV_OPTIONAL_COLUMNS]
        if missing or unknown:
            raise ManifestError(
                f"{csv_path}: header must hold {','.join(CSV_REQUIRED_COLUMNS)} and optionally "
                f"{','.join(CSV_OPTIONAL_COLUMNS)}; missing {missing or 'none'}, unknown {unknown or 'none'}"
            )
        rows = []
        for row in reader:
            if None in row:
                raise ManifestError(f"{csv_path} line {reader.line_num}: more cells than header columns")
            rows.append({key.strip(): (value or "").strip() for key, value in row.items()})
    clips = []
    for row in rows:
        path = _relative_to_corpus(corpus_dir, row["path"])
        clips.append(
            Clip(
                clip_id=row.get("clip_id") or PurePosixPath(path).stem,
                path=path,
                corpus="csv",
                speaker=row["speaker"],
                label=canonical_label(row["label"]) or row["label"],
                corpus_label=row["label"],
                sentence=row.get("sentence") or None,
                intensity=row.get("intensity") or None,
            )
        )
    return clips, []


def _listing(title: str, lines: list[str], limit: int = 10) -> str:
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return f"{len(lines)} {title}:\n" + "\n".join(f"  {line}" for line in lines[:limit]) + more


def validate_clips(corpus_dir: Path, clips: Iterable[Clip]) -> None:
    """Refuse duplicate clip ids, labels outside EMOTIONS, empty speakers and missing or escaping files.

    A file counts as outside the corpus when its resolved path is, so ``../x.mp4``, an absolute path
    elsewhere and a symlink pointing out of the folder are all refused. Raises one ManifestError
    listing every kind of problem (the first 10 of each and their count).
    """
    root = corpus_dir.resolve()
    by_id: dict[str, list[str]] = defaultdict(list)
    bad_labels, bad_paths, no_speaker = [], [], []
    for clip in clips:
        by_id[clip.clip_id].append(clip.path)
        if clip.label not in EMOTIONS:
            bad_labels.append(f"{clip.path}: {clip.corpus_label!r}")
        if not clip.speaker:
            no_speaker.append(clip.path)
        resolved = (corpus_dir / clip.path).resolve()
        if not resolved.is_relative_to(root):
            bad_paths.append(f"{clip.path}: resolves to {resolved}, outside {root}")
        elif not resolved.is_file():
            bad_paths.append(f"{clip.path}: no such file")
    duplicates = [f"{clip_id!r}: {', '.join(paths)}" for clip_id, paths in by_id.items() if len(paths) > 1]
    problems = [
        _listing(title, lines)
        for title, lines in (
            ("duplicate clip ids (give each clip its own id)", duplicates),
            (f"labels outside {', '.join(EMOTIONS)} and their aliases", bad_labels),
            ("files missing or outside the corpus folder", bad_paths),
            ("clips without a speaker", no_speaker),
        )
        if lines
    ]
    if problems:
        raise ManifestError(f"corpus {corpus_dir} cannot be ingested:\n" + "\n".join(problems))


def probe_clip(corpus_dir: Path, clip: Clip) -> ManifestRow:
    """Hash, size and stream facts of one clip; a file ffmpeg cannot read keeps its row with probe_error."""
    path = corpus_dir / clip.path
    try:
        info, error = probe(path), None
    except ProbeError as why:
        info, error = MediaInfo(duration_s=None), str(why)
    return ManifestRow(
        **asdict(clip),
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
        **asdict(info),
        probe_error=error,
    )


def probe_clips(
    corpus_dir: Path,
    clips: list[Clip],
    workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> list[ManifestRow]:
    """Probe clips on a thread pool (each probe waits on an ffmpeg subprocess), rows in clip order.

    ``progress(done, total)`` is called after each clip, from the calling thread.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    rows = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for row in pool.map(lambda clip: probe_clip(corpus_dir, clip), clips):
            rows.append(row)
            if progress:
                progress(len(rows), len(clips))
    return rows


def manifest_table(rows: list[ManifestRow]) -> pa.Table:
    """The rows as an Arrow table of schema MANIFEST (metadata included), nulls checked.

    Arrow does not enforce a field's ``nullable=False`` on construction, so it is checked here.
    """
    table = pa.Table.from_pylist([asdict(row) for row in rows], schema=MANIFEST)
    for field in MANIFEST:
        if not field.nullable and table.column(field.name).null_count:
            raise ManifestError(f"manifest column {field.name} must not be null")
    return table


PREPARERS: dict[str, Callable[[Path], tuple[list[Clip], list[Skipped]]]] = {
    "cremad": prepare_cremad,
    "ravdess": prepare_ravdess,
    "enterface": prepare_enterface,
    "mead": prepare_mead,
    "emodb": prepare_emodb,
    "csv": prepare_csv,
}


def build_manifest(
    corpus_dir: Path,
    corpus_format: str,
    workers: int = 4,
    csv_path: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[ManifestRow], list[Skipped]]:
    """Parse ``corpus_dir`` with the ``corpus_format`` adapter, validate, then probe every kept clip.

    Validation runs before probing, so a corpus that would be refused fails in seconds rather than
    after hashing every file. Raises ManifestError for an unknown format, a missing folder, a corpus
    with no matching file, or any problem ``validate_clips`` finds.
    """
    if corpus_format not in PREPARERS:
        raise ManifestError(f"unknown corpus format {corpus_format!r}; choose one of {', '.join(PREPARERS)}")
    if csv_path is not None and corpus_format != "csv":
        raise ManifestError(f"a label CSV applies to --format csv only, not {corpus_format}")
    if not corpus_dir.is_dir():
        raise ManifestError(f"corpus folder {corpus_dir} does not exist or is not a folder")
    if corpus_format == "csv":
        clips, skipped = prepare_csv(corpus_dir, csv_path)
    else:
        clips, skipped = PREPARERS[corpus_format](corpus_dir)
    if not clips:
        reasons = "; ".join(sorted({item.reason for item in skipped})[:5])
        why = f" ({len(skipped)} files skipped: {reasons})" if skipped else ": it holds no files"
        raise ManifestError(f"no {corpus_format} clips found under {corpus_dir}{why}")
    validate_clips(corpus_dir, clips)
    return probe_clips(corpus_dir, clips, workers, progress), skipped
