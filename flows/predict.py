"""``avemo predict``: media files -> emotions and segment timelines, as a JSON document or CSV.

Every file is checked before any long work starts (a file the model cannot use is refused at once);
progress is counted in windows, the unit of work of a long file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from avemo.config import PreprocessParams
from avemo.progress import Progress
from tasks.predict.compatibility import PredictError, Predictor, check_feature_params, check_media, load_predictor
from tasks.predict.documents import csv_columns, csv_rows, predictions_document
from tasks.predict.windows import FileFailure, FilePrediction, plan_windows, predict_file


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
    compare_with: tuple[PreprocessParams, Path] | None = None,
) -> PredictRun:
    """Predict every file with the checkpoint or model folder ``model``.

    ``compare_with`` (preprocess settings and the file they came from) refuses, with every differing key
    named, settings whose features would differ from the checkpoint's. Raises :class:`PredictError`
    before any work for an unusable model or file; a file failing later becomes a ``FileFailure``.
    """
    predictor = load_predictor(model, device)
    if compare_with is not None:
        check_feature_params(predictor, *compare_with)
    infos = [check_media(predictor, file) for file in files]
    windows = [len(plan_windows(info.duration_s, predictor.params, window_s)) for info in infos]
    progress = Progress(sum(windows), "windows", logger)
    results: list[FilePrediction | FileFailure] = []
    for file, info, n_windows in zip(files, infos, windows, strict=True):
        before = progress.done
        try:
            result = predict_file(
                predictor, file, window_s=window_s, batch_size=batch_size, info=info, on_window=progress.advance
            )
        except PredictError as err:
            result = FileFailure(file, "window", str(err))
        results.append(result)
        unreached = n_windows - (progress.done - before)  # windows after a failed file's failure
        if unreached:
            progress.advance(unreached)
    return PredictRun(predictor, results)


def render(run: PredictRun, output_format: str) -> str:
    """The run as the JSON document or the CSV text."""
    if output_format == "json":
        return json.dumps(predictions_document(run.predictor, run.results), indent=2) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, csv_columns(run.predictor.classes), lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(run.predictor, run.results))
    return buffer.getvalue()
