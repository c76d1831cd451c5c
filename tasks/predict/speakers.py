"""Which speaker each file is, and the statistics a speaker-normalised model standardises it with.

Evaluation standardises a test speaker over all of that speaker's clips. Prediction does the same when
it knows the speakers: ``--speaker NAME`` (every file given is that speaker) or ``--speakers FILE`` (a
CSV with ``path`` and ``speaker`` columns, or an avemo manifest). A speaker's files have their
features made first, the speaker's statistics are fitted over all of them, and then each is scored. A
file whose speaker is not known is standardised with the checkpoint's typical training speaker (the
training speakers' means and variances averaged) and says so (``standardisation`` in the output).
"""

from __future__ import annotations

import csv
import functools
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from avemo.errors import AvemoError
from tasks.clip import read_sources
from tasks.predict.compatibility import PredictError, Predictor
from tasks.predict.windows import ExtractedFile, FileFailure, FilePrediction, extract_file, file_statistics, score_file
from tasks.probe import MediaInfo

SPEAKER_COLUMNS = ("path", "speaker")


def read_speaker_table(path: Path) -> dict[Path, str]:
    """Resolved file path -> speaker, from a CSV (relative paths from the CSV's folder) or an avemo
    manifest (``.parquet``, its paths from its corpus folder)."""
    if not path.is_file():
        raise PredictError(f"speaker table {path} not found; pass a CSV with columns path,speaker or an avemo manifest")
    if path.suffix == ".parquet":
        try:
            sources, _, _ = read_sources(path)
        except AvemoError as err:
            raise PredictError(f"{path} is not an avemo manifest ({err}); pass one written by avemo ingest") from err
        return {source.file.resolve(): source.speaker for source in sources}
    table: dict[Path, str] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in SPEAKER_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise PredictError(
                f"{path} has no {' or '.join(missing)} column; its first line must name the columns path,speaker"
            )
        for line, row in enumerate(reader, start=2):
            file, speaker = (row["path"] or "").strip(), (row["speaker"] or "").strip()
            if not file or not speaker:
                raise PredictError(f"{path}, line {line}: every row needs a path and a speaker")
            table[(path.parent / file).resolve()] = speaker
    return table


def speakers_of(files: Sequence[Path], speaker: str | None, table: dict[Path, str] | None) -> list[str | None]:
    """Each file's speaker (None: not known)."""
    if speaker is not None and table is not None:
        raise PredictError("pass --speaker NAME for all the files or --speakers FILE, not both")
    if speaker is not None:
        return [speaker] * len(files)
    if table is None:
        return [None] * len(files)
    missing = [str(file) for file in files if Path(file).resolve() not in table]
    if missing:
        listed = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise PredictError(f"the speaker table has no row for {listed}; add a path,speaker row for each file")
    return [table[Path(file).resolve()] for file in files]


def speaker_groups(speakers: Sequence[str | None]) -> list[tuple[str | None, list[int]]]:
    """The files (their indices) of each known speaker together, in order of first appearance; each file
    of an unknown speaker on its own."""
    groups: dict[str, list[int]] = {}
    out: list[tuple[str | None, list[int]]] = []
    for index, speaker in enumerate(speakers):
        if speaker is None:
            out.append((None, [index]))
        elif speaker in groups:
            groups[speaker].append(index)
        else:
            groups[speaker] = [index]
            out.append((speaker, groups[speaker]))
    return out


def _extract(
    predictor: Predictor,
    file: Path,
    info: MediaInfo,
    folder: Path,
    *,
    window_s: float,
    on_window: Callable[[], None],
) -> ExtractedFile | FileFailure:
    try:
        return extract_file(predictor, file, info, folder, window_s=window_s, on_window=on_window)
    except PredictError as err:  # a window ffmpeg could not cut
        return FileFailure(file, "window", str(err))


def predict_group(
    predictor: Predictor,
    files: Sequence[tuple[Path, MediaInfo]],
    speaker: str | None,
    folder: Path,
    *,
    window_s: float,
    batch_size: int,
    on_window: Callable[[], None],
) -> list[FilePrediction | FileFailure]:
    """The files of one speaker (or one file of an unknown speaker), each predicted; their features live
    in ``folder`` until scored. A model with training-clip statistics scores each file as soon as its
    features are made, so disk holds one file's at a time."""
    extract = functools.partial(_extract, predictor, window_s=window_s, on_window=on_window)
    if not predictor.speaker_normalised:
        results: list[FilePrediction | FileFailure] = []
        for k, (file, info) in enumerate(files):
            made = extract(file, info, folder / f"file-{k}")
            results.append(
                score_file(
                    predictor, made, None, speaker=speaker, standardisation="training_clips", batch_size=batch_size
                )
                if isinstance(made, ExtractedFile)
                else made
            )
            shutil.rmtree(folder / f"file-{k}", ignore_errors=True)
        return results
    extracted = [extract(file, info, folder / f"file-{k}") for k, (file, info) in enumerate(files)]
    ready = [e for e in extracted if isinstance(e, ExtractedFile)]
    how = "speaker" if speaker is not None else "typical_speaker" if predictor.knows_typical_speaker else "own_file"
    stats = file_statistics(predictor, ready) if ready and how != "typical_speaker" else None
    results = [
        score_file(predictor, e, stats, speaker=speaker, standardisation=how, batch_size=batch_size)
        if isinstance(e, ExtractedFile)
        else e
        for e in extracted
    ]
    shutil.rmtree(folder, ignore_errors=True)
    return results
