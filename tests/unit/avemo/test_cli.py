"""The ``avemo`` command: its subcommands, and the clear refusals that come before any long work."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from avemo.cli import app

runner = CliRunner()
SUBCOMMANDS = ("sample", "ingest", "preprocess", "train", "evaluate", "compare", "report", "serve", "audit", "predict")


def test_help_lists_every_stage_and_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert all(name in result.output for name in SUBCOMMANDS)


def test_a_misspelt_setting_is_refused_naming_the_key(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("preprocess:\n  vad:\n    agressiveness: 3\n")
    result = runner.invoke(app, ["preprocess", str(tmp_path / "m.parquet"), "--params", str(params)])
    assert result.exit_code == 2 and "agressiveness" in result.output


def test_a_missing_manifest_says_how_to_write_it(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["preprocess", str(tmp_path / "absent.parquet"), "--params", str(tmp_path / "none.yaml")]
    )
    assert result.exit_code == 1 and "avemo ingest" in result.output


def test_an_unknown_system_is_refused_with_the_choices(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--system", "fbp", "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1 and "unknown model 'fbp'; choose one of: avef, gfbp" in result.output


def test_an_unusable_corpus_folder_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "manifest.parquet"
    result = runner.invoke(app, ["ingest", str(tmp_path / "nowhere"), "--format", "cremad", "--out", str(out)])
    assert result.exit_code == 1 and "does not exist" in result.output and not out.exists()
