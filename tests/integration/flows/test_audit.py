"""`avemo audit` on a tiny real pipeline: the record names the right sources, and verify catches drift."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from avemo import schemas
from avemo.cli import app
from avemo.config import PreprocessParams
from avemo.ffmpeg import decoder, ffmpeg_exe
from avemo.parquet_io import read_provenance, write_table
from avemo.provenance import provenance
from flows.audit import describe, verify
from flows.preprocess import run_preprocess
from tasks.audit.lineage import AuditError, dvc_origin, md5_file
from tasks.audit.verify import compare_values
from tasks.corpora.manifest import build_manifest, manifest_table
from tasks.probe import sha256_file
from tasks.sample import write_sample_corpus

CLIPS = ["1001_DFA_ANG_XX", "1001_IEO_ANG_XX", "1002_DFA_ANG_XX"]


@pytest.fixture(scope="module")
def pipeline(prefect_harness, tmp_path_factory) -> Path:
    """Three audio-only clips of the sample corpus, ingested and preprocessed (no MTCNN: seconds, not minutes)."""
    root = tmp_path_factory.mktemp("audit")
    videos = write_sample_corpus(root / "videos", [1001], ["ANG"], seed=0, sentences=("DFA", "IEO"))
    videos += write_sample_corpus(root / "videos", [1002], ["ANG"], seed=0, sentences=("DFA",))
    corpus = root / "corpus"
    corpus.mkdir()
    for video in videos:
        subprocess.run(
            [
                ffmpeg_exe(),
                "-nostdin",
                "-loglevel",
                "error",
                "-i",
                str(video),
                "-vn",
                str(corpus / f"{video.stem}.wav"),
            ],
            check=True,
        )
    rows, _ = build_manifest(corpus, "cremad", workers=2)
    manifest = root / "manifest.parquet"
    write_table(manifest_table(rows), manifest, schemas.MANIFEST, provenance("ingest", {}, corpus_dir=str(corpus)))
    run_preprocess(manifest, root / "features", PreprocessParams(cache_dir=root / "cache", workers=1))
    return root


def _segments(pipeline: Path) -> Path:
    return pipeline / "features" / "segments.parquet"


def test_describe_names_the_sources_their_sha256_and_the_params(pipeline: Path) -> None:
    record = describe(_segments(pipeline))
    assert (record.kind, record.stage) == ("segments", "preprocess")
    assert {s.clip_id: s.sha256 for s in record.sources} == {
        c: sha256_file(pipeline / "corpus" / f"{c}.wav") for c in CLIPS
    }
    assert all(Path(s.file).resolve() == (pipeline / "corpus" / f"{s.clip_id}.wav").resolve() for s in record.sources)
    assert record.params == PreprocessParams(cache_dir=pipeline / "cache", workers=1).model_dump(mode="json")
    assert record.avemo_version and "torch" in record.tools and record.seconds > 0
    assert [step.stage for step in record.lineage] == ["ingest"]

    one = describe(_segments(pipeline), clip=CLIPS[1])
    assert [s.clip_id for s in one.sources] == [CLIPS[1]]
    stored = pq.read_table(_segments(pipeline), columns=["clip_id"])["clip_id"].to_pylist()
    assert one.details["clip_rows"] == stored.count(CLIPS[1]) > 0
    with pytest.raises(AuditError, match="not in"):
        describe(_segments(pipeline), clip="9999_XXX_ANG_XX")


def test_verify_is_clean_on_untouched_inputs(pipeline: Path) -> None:
    result = verify(_segments(pipeline), sample=2)
    assert result.clean, result.findings
    assert result.sources_checked == 3 and len(result.recomputed) == 2
    assert {"log_mel", "t_begin", "voiced_share"} <= set(result.recomputed_columns)
    assert verify(pipeline / "manifest.parquet", sample=3).clean

    cli = CliRunner().invoke(app, ["audit", str(pipeline / "features" / "clips.parquet"), "--verify", "--sample", "1"])
    assert cli.exit_code == 0, cli.output
    assert "clean" in cli.output


def test_a_tampered_feature_value_is_caught_by_recomputation(pipeline: Path, tmp_path: Path) -> None:
    """A copy of segments.parquet, metadata kept, with one log-mel value changed in one clip's first row."""
    original = pq.read_table(_segments(pipeline))
    rows = original.to_pylist()
    target = next(i for i, r in enumerate(rows) if r["clip_id"] == CLIPS[0])
    log_mel = original["log_mel"].combine_chunks()
    values = log_mel.storage.flatten().to_numpy().copy()
    width = len(values) // len(rows)
    values[target * width + 100] += 0.5
    storage = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), width)
    tampered = original.set_column(
        original.schema.get_field_index("log_mel"),
        original.schema.field("log_mel"),
        pa.ExtensionArray.from_storage(log_mel.type, storage),
    )
    footer = {k: v for k, v in pq.ParquetFile(_segments(pipeline)).metadata.metadata.items() if k != b"ARROW:schema"}
    copy = tmp_path / "segments.parquet"
    pq.write_table(tampered.replace_schema_metadata(footer), copy)
    assert read_provenance(copy) == read_provenance(_segments(pipeline))

    result = verify(copy, clip=CLIPS[0])
    assert result.recomputed == [CLIPS[0]]
    assert [(f.kind, f.clip_id) for f in result.findings] == [("recomputed_differs", CLIPS[0])]
    assert "log_mel" in result.findings[0].detail and "stored" in result.findings[0].detail
    assert verify(copy, clip=CLIPS[2]).clean  # --clip restricts the check to the untouched clip


def test_a_decoder_change_is_named_as_the_cause(pipeline: Path, tmp_path: Path, volume_ffmpeg) -> None:
    """Features decoded by one build of an ffmpeg path, audited after that binary was replaced by another."""
    binary = volume_ffmpeg(tmp_path / "bin" / "ffmpeg", "0.0-before", volume=0.5)
    params = PreprocessParams(cache_dir=tmp_path / "cache", workers=1, frontends=[], audio={"ffmpeg": str(binary)})
    run_preprocess(pipeline / "manifest.parquet", tmp_path / "features", params)
    volume_ffmpeg(binary, "0.1-after", volume=1.0)
    decoder.cache_clear()
    try:
        result = verify(tmp_path / "features" / "segments.parquet", clip=CLIPS[0])
    finally:
        decoder.cache_clear()
    assert {(f.kind, f.clip_id) for f in result.findings} == {("recomputed_differs", CLIPS[0])}
    assert any("log_mel" in f.detail for f in result.findings)
    cause = next(n for n in result.notes if n.startswith("the decoder changed"))
    assert "recorded ffmpeg 0.0-before" in cause and "ffmpeg 0.1-after (path" in cause


def test_a_changed_source_file_is_drift_with_exit_code_1(pipeline: Path) -> None:
    source = pipeline / "corpus" / f"{CLIPS[1]}.wav"
    original = source.read_bytes()
    changed = bytearray(original)
    changed[-100] ^= 0xFF  # one sample of the audio data
    source.write_bytes(bytes(changed))
    try:
        cli = CliRunner().invoke(app, ["audit", str(_segments(pipeline)), "--verify", "--sample", "1"])
        assert cli.exit_code == 1, cli.output
        assert "source_changed" in cli.output and CLIPS[1] in cli.output and str(source) in cli.output
        assert "what to do" in cli.output

        result = verify(pipeline / "manifest.parquet", sample=3)
        assert [(f.kind, f.clip_id) for f in result.findings] == [("source_changed", CLIPS[1])]
        assert CLIPS[1] not in result.recomputed  # a changed source is reported once, not re-computed

        narrowed = CliRunner().invoke(app, ["audit", str(_segments(pipeline)), "--verify", "--clip", CLIPS[0]])
        assert narrowed.exit_code == 0, narrowed.output
    finally:
        source.write_bytes(original)
    assert verify(_segments(pipeline), clip=CLIPS[1]).clean


def test_dvc_origin_finds_the_stage_and_compares_its_md5(pipeline: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "data" / "manifest.parquet"
    manifest.parent.mkdir()
    manifest.write_bytes((pipeline / "manifest.parquet").read_bytes())
    lock = {
        "schema": "2.0",
        "stages": {
            "ingest": {"cmd": "avemo ingest", "outs": [{"path": "data/manifest.parquet", "md5": md5_file(manifest)}]},
            "preprocess": {"cmd": "avemo preprocess", "outs": [{"path": "data/features", "md5": "0" * 32 + ".dir"}]},
        },
    }
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    origin = dvc_origin(manifest)
    assert (origin.stage, origin.matches) == ("ingest", True)

    inside = tmp_path / "data" / "features" / "clips.parquet"
    inside.parent.mkdir()
    inside.write_bytes(b"not in the DVC cache")
    assert (dvc_origin(inside).stage, dvc_origin(inside).matches) == ("preprocess", None)

    manifest.write_bytes(manifest.read_bytes() + b"\0")
    assert dvc_origin(manifest).matches is False


def test_compare_values_tolerates_rounding_but_not_change() -> None:
    assert compare_values([[1.0, 2.0]], [[1.0, 2.0 + 1e-9]]) is None
    assert "re-computed 2.1" in compare_values([[1.0, 2.0]], [[1.0, 2.1]])
    assert compare_values([None], [[1.0]]) is not None
    assert compare_values(["a", "b"], ["a", "c"]).startswith("row 1")
