"""``avemo predict``: media files -> emotions and segment timelines, as a JSON document or CSV.

Every file and the speaker table are checked before any long work starts (a file the model cannot use
is refused at once); files are predicted speaker by speaker (``tasks.predict.speakers``); progress is
counted in windows, the unit of work of a long file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from avemo.config import PreprocessParams
from avemo.progress import Progress
from tasks.predict.compatibility import Predictor, check_feature_params, check_media, load_predictor
from tasks.predict.documents import csv_columns, csv_rows, predictions_document
from tasks.predict.speakers import predict_group, read_speaker_table, speaker_groups, speakers_of
from tasks.predict.windows import FileFailure, FilePrediction, plan_windows


@dataclass(frozen=True)
class PredictRun:
    predictor: Predictor
    results: list[FilePrediction | FileFailure]

    @property
    def failures(self) -> list[FileFailure]:
        return [r for r in self.results if isinstance(r, FileFailure)]


def predict_files(
    files: Sequence[Path],
    model: Path,
    *,
    device: str,
    window_s: float,
    batch_size: int,
    logger: logging.Logger,
    speaker: str | None = None,
    speaker_table: Path | None = None,
    compare_with: tuple[PreprocessParams, Path] | None = None,
) -> PredictRun:
    """Predict every file (default: every file of ``speaker_table``) with the checkpoint or model folder
    ``model``, each speaker standardised over its own files when the model is speaker-normalised.

    ``speaker`` names the speaker of all files; ``speaker_table`` is a CSV (path,speaker) or an avemo
    manifest. ``compare_with`` (preprocess settings and the file they came from) refuses, with every
    differing key named, settings whose features would differ from the checkpoint's. Raises
    :class:`PredictError` before any work for an unusable model, file or speaker table; a file failing
    later becomes a ``FileFailure``.
    """
    table = read_speaker_table(speaker_table) if speaker_table is not None else None
    files = list(files) or list(table or [])
    speakers = speakers_of(files, speaker, table)
    predictor = load_predictor(model, device)
    if compare_with is not None:
        check_feature_params(predictor, *compare_with)
    infos = [check_media(predictor, file) for file in files]
    _warn_about_speakers(predictor, speakers, logger)
    windows = [len(plan_windows(info.duration_s, predictor.params, window_s)) for info in infos]
    progress = Progress(sum(windows), "windows", logger)
    results: dict[int, FilePrediction | FileFailure] = {}
    with tempfile.TemporaryDirectory(prefix="avemo-predict-") as tmp:
        for g, (group_speaker, indices) in enumerate(speaker_groups(speakers)):
            before = progress.done
            outcomes = predict_group(
                predictor,
                [(files[i], infos[i]) for i in indices],
                group_speaker,
                Path(tmp) / f"group-{g}",
                window_s=window_s,
                batch_size=batch_size,
                on_window=progress.advance,
            )
            results.update(zip(indices, outcomes, strict=True))
            unreached = sum(windows[i] for i in indices) - (progress.done - before)  # after a failure
            if unreached:
                progress.advance(unreached)
    return PredictRun(predictor, [results[i] for i in range(len(files))])


def _warn_about_speakers(predictor: Predictor, speakers: Sequence[str | None], logger: logging.Logger) -> None:
    """Say, before the work, where a speaker-normalised model cannot standardise as evaluation does."""
    if not predictor.speaker_normalised:
        return
    unknown = speakers.count(None)
    if unknown:
        instead = (
            "a typical training speaker's statistics"
            if predictor.knows_typical_speaker
            else "each file's own statistics (its checkpoint predates stored training-speaker statistics)"
        )
        logger.warning(
            "%s standardises each speaker over that speaker's files, but %d file(s) have no speaker: they use %s, "
            "which is less accurate; name speakers with --speaker NAME or --speakers FILE (docs/predict.md)",
            predictor.model_path,
            unknown,
            instead,
        )
    counts = Counter(s for s in speakers if s is not None)
    alone = sorted(s for s, n in counts.items() if n == 1)
    if alone:
        logger.warning(
            "speaker(s) %s have one file each: its statistics come from that file alone, which removes part of "
            "its emotion; give more files of the speaker for statistics as evaluation fits them",
            ", ".join(alone),
        )


def render(run: PredictRun, output_format: str) -> str:
    """The run as the JSON document or the CSV text."""
    if output_format == "json":
        return json.dumps(predictions_document(run.predictor, run.results), indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, csv_columns(run.predictor.classes), lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(run.predictor, run.results))
    return buffer.getvalue()
