"""Which speaker each predicted file is: the CSV table, its refusals, and the grouping by speaker."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.predict.compatibility import PredictError
from tasks.predict.speakers import read_speaker_table, speaker_groups, speakers_of


def test_a_csv_names_each_files_speaker_with_paths_from_its_own_folder(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    table = tmp_path / "lists" / "speakers.csv"
    table.write_text("path,speaker,notes\n../a.wav,anna,\n/abs/b.mp4, ben ,x\n")
    assert read_speaker_table(table) == {(tmp_path / "a.wav").resolve(): "anna", Path("/abs/b.mp4"): "ben"}
    files = [tmp_path / "a.wav", Path("/abs/b.mp4")]
    assert speakers_of(files, None, read_speaker_table(table)) == ["anna", "ben"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,speaker\na.wav,anna\n", "has no path column; its first line must name the columns path,speaker"),
        ("path\na.wav\n", "has no speaker column"),
        ("path,speaker\na.wav,\n", "line 2: every row needs a path and a speaker"),
    ],
)
def test_a_malformed_csv_is_refused_with_the_line(tmp_path: Path, text: str, message: str) -> None:
    table = tmp_path / "speakers.csv"
    table.write_text(text)
    with pytest.raises(PredictError, match=message):
        read_speaker_table(table)


def test_files_without_a_row_and_two_speaker_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PredictError, match="speaker table .*nope.csv not found"):
        read_speaker_table(tmp_path / "nope.csv")
    table = {(tmp_path / "a.wav").resolve(): "anna"}
    files = [tmp_path / name for name in ("a.wav", "b.wav", "c.wav", "d.wav", "e.wav")]
    with pytest.raises(PredictError, match=r"no row for .*b.wav, .*c.wav, .*d.wav and 1 more; add a path,speaker"):
        speakers_of(files, None, table)
    with pytest.raises(PredictError, match="not both"):
        speakers_of(files, "anna", table)
    assert speakers_of(files[:2], "anna", None) == ["anna", "anna"]
    assert speakers_of(files[:2], None, None) == [None, None]


def test_files_are_grouped_by_known_speaker_and_unknown_ones_stay_alone() -> None:
    groups = speaker_groups(["anna", None, "ben", "anna", None])
    assert groups == [("anna", [0, 3]), (None, [1]), ("ben", [2]), (None, [4])]
