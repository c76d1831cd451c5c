"""The preprocess flow under Prefect's test harness: bad input, caching, and real corpora end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from skimage import data as skimage_data
from skimage.transform import resize
from typer.testing import CliRunner

from avemo import schemas
from avemo.cli import app
from avemo.cli.common import read_params
from avemo.config import PreprocessParams
from avemo.ffmpeg import decoder, ffmpeg_exe
from avemo.freshness import outputs, up_to_date
from avemo.parquet_io import read_provenance, read_table, write_table
from avemo.provenance import provenance
from flows.preprocess import run_preprocess
from tasks.corpora.manifest import build_manifest, manifest_table
from tasks.demux import load_audio
from tasks.sample import write_sample_corpus
from tasks.sample.mux import mux_clip

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def _ingest(corpus: Path, fmt: str, out: Path) -> Path:
    rows, _ = build_manifest(corpus, fmt, workers=2)
    manifest = out / "manifest.parquet"
    write_table(manifest_table(rows), manifest, schemas.MANIFEST, provenance("ingest", {}, corpus_dir=str(corpus)))
    return manifest


def _params(tmp: Path, **updates) -> PreprocessParams:
    return PreprocessParams(cache_dir=tmp / "cache", workers=2).model_copy(update=updates)


@pytest.fixture(scope="module")
def good_clip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sample")
    (path,) = write_sample_corpus(folder, [1001], ["HAP"], seed=0, sentences=("DFA",))
    return path


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory, good_clip: Path) -> Path:
    """One clip per kind of trouble a real corpus holds, labelled through a CSV."""
    corpus = tmp_path_factory.mktemp("bad corpus")
    speech = load_audio(good_clip, 16000).signal
    shutil.copy(good_clip, corpus / "good.mp4")
    shutil.copy(good_clip, corpus / "naïve name with spaces.mp4")
    data = good_clip.read_bytes()
    (corpus / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (corpus / "empty.mp4").write_bytes(b"")
    (corpus / "not_media.mp4").write_bytes(b"this is not a video" * 100)
    _ffmpeg("-i", str(good_clip), "-an", "-c:v", "copy", str(corpus / "no_audio.mp4"))
    _ffmpeg("-i", str(good_clip), "-vn", "-ac", "2", "-ar", "48000", str(corpus / "stereo_48k.wav"))
    _ffmpeg("-i", str(good_clip), "-vn", "-ar", "8000", str(corpus / "mono_8k.wav"))
    _ffmpeg("-i", str(good_clip), "-ac", "2", "-ar", "44100", "-c:v", "copy", str(corpus / "stereo_44k.mp4"))
    _ffmpeg("-i", str(good_clip), "-filter:v", "fps=12.5", "-c:a", "copy", str(corpus / "fps_12_5.mp4"))
    _ffmpeg("-i", str(good_clip), "-t", "0.4", str(corpus / "short.mp4"))
    _ffmpeg(
        "-i",
        str(good_clip),
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=16000:cl=mono",
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-shortest",
        "-c:v",
        "copy",
        str(corpus / "silent.mp4"),
    )
    n_frames = int(len(speech) / 16000 * 25)
    grey = np.full((n_frames, 128, 128, 3), 128, np.uint8)
    mux_clip(corpus / "no_face.mp4", grey, speech)
    face = (resize(skimage_data.astronaut()[:256, 96:352], (128, 128)) * 255).astype(np.uint8)
    small = (resize(face, (64, 64)) * 255).astype(np.uint8)
    two = np.full((160, 256, 3), 200, np.uint8)
    two[16:144, 8:136] = face
    two[48:112, 170:234] = small
    mux_clip(corpus / "two_faces.mp4", np.repeat(two[None], n_frames, axis=0), speech)
    names = sorted(p.name for p in corpus.iterdir() if p.is_file())
    lines = ["path,speaker,label"] + [f'"{name}",s{i % 3},happiness' for i, name in enumerate(names)]
    (corpus / "labels.csv").write_text("\n".join(lines) + "\n")
    return corpus


@pytest.fixture(scope="module")
def bad_run(bad_corpus: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("bad_out")
    manifest = _ingest(bad_corpus, "csv", out)
    summary = run_preprocess(manifest, out / "features", _params(out))
    return summary, out / "features"


def _by_clip(table, key="clip_id"):
    return {row[key]: row for row in table.to_pylist()}


def test_every_bad_clip_gets_features_or_a_failure_row(bad_run) -> None:
    summary, features = bad_run
    clips = _by_clip(read_table(features / "clips.parquet", schemas.clips_schema(200)))
    failures = _by_clip(read_table(features / "failures.parquet", schemas.FAILURES))
    assert set(clips).isdisjoint(failures)
    assert summary.succeeded == len(clips) and summary.failed == len(failures)
    assert summary.clips == len(clips) + len(failures) == 14

    assert failures["empty"]["stage"] == "probe" and "empty" in failures["empty"]["reason"]
    assert failures["not_media"]["stage"] == "probe"
    assert failures["no_audio"]["stage"] == "demux" and "no audio stream" in failures["no_audio"]["reason"]
    assert failures["silent"]["stage"] == "segment" and "voiced" in failures["silent"]["reason"]
    assert failures["short"]["stage"] == "segment" and "shorter than one 655 ms" in failures["short"]["reason"]
    # a truncated mp4 loses its index: ffmpeg cannot open it, which must be a clear probe failure
    assert "truncated" in failures and failures["truncated"]["reason"]

    for name in ("good", "naïve name with spaces", "stereo_44k", "fps_12_5", "no_face", "two_faces"):
        assert clips[name]["has_video"] and clips[name]["n_segments"] >= 1, name
    for name in ("stereo_48k", "mono_8k"):
        assert not clips[name]["has_video"] and clips[name]["n_face_frames"] == 0, name
    assert clips["no_face"]["n_no_face_frames"] == clips["no_face"]["n_face_frames"] > 0
    assert clips["good"]["n_no_face_frames"] == 0 and clips["good"]["n_multiple_face_frames"] == 0
    assert clips["two_faces"]["n_multiple_face_frames"] == clips["two_faces"]["n_face_frames"]
    # resampling and down-mixing leave the speech where it was: same segments as the original
    assert clips["stereo_44k"]["n_segments"] == clips["good"]["n_segments"]
    assert clips["stereo_48k"]["n_segments"] == clips["good"]["n_segments"]


def test_segments_reference_sixteen_face_frames_of_their_own_time(bad_run) -> None:
    _, features = bad_run
    segments = read_table(features / "segments.parquet", schemas.segments_schema(64, 64, 16))
    frames = read_table(features / "frames.parquet", schemas.frames_schema(64, 304))
    times = {
        (r["clip_id"], r["frame_index"]): r["t"] for r in frames.select(["clip_id", "frame_index", "t"]).to_pylist()
    }
    rows = segments.select(["clip_id", "t_begin", "t_end", "face_frames"]).to_pylist()
    for row in rows:
        if row["face_frames"] is None:
            continue
        assert len(row["face_frames"]) == 16
        stamps = [times[(row["clip_id"], i)] for i in row["face_frames"]]
        assert stamps == sorted(stamps)
        assert row["t_begin"] - 0.1 <= stamps[0] and stamps[-1] <= row["t_end"] + 0.1
    two = frames.filter(pq.ParquetFile(features / "frames.parquet").read().column("clip_id").to_numpy() == "two_faces")
    boxes = np.array(two["box"].to_pylist())
    # the documented rule picks the speaker: the larger, left face (x from 8 to 136 of 256)
    assert np.all(boxes[:, 2] < 160)
    mel = segments["log_mel"].combine_chunks().to_numpy_ndarray()
    assert mel.shape[1:] == (64, 64, 3) and np.isfinite(mel).all()


def test_outputs_carry_provenance(bad_run, bad_corpus: Path) -> None:
    _, features = bad_run
    for name in ("clips", "segments", "frames", "failures"):
        prov = read_provenance(features / f"{name}.parquet")
        assert prov["stage"] == "preprocess" and prov["avemo_version"]
        assert set(prov["tools"]) >= {"ffmpeg", "webrtcvad-wheels", "librosa", "facenet-pytorch", "torch", "pyarrow"}
        assert prov["params"]["audio"]["pre_emphasis"] == 0.97
    prov = read_provenance(features / "clips.parquet")
    assert prov["face_embedder"]["name"] == "fer2013" and prov["face_embedder"]["dim"] == 304
    import hashlib

    assert prov["sources"]["good"] == hashlib.sha256((bad_corpus / "good.mp4").read_bytes()).hexdigest()


def test_cache_reruns_only_what_changed(good_clip: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus" / "VideoMP4"
    corpus.mkdir(parents=True)
    shutil.copy(good_clip, corpus / good_clip.name)
    params = _params(tmp_path)
    per_clip = 3 + len(params.frontends)  # audio, faces, face_features and each front-end

    first = run_preprocess(_ingest(corpus.parent, "cremad", tmp_path), tmp_path / "f1", params)
    assert first.succeeded == 1 and first.cached_stages == 0
    again = run_preprocess(_ingest(corpus.parent, "cremad", tmp_path), tmp_path / "f2", params)
    assert again.cached_stages == per_clip  # every stage reused
    assert pq.read_table(tmp_path / "f1" / "segments.parquet").equals(
        pq.read_table(tmp_path / "f2" / "segments.parquet")
    )

    (other,) = write_sample_corpus(tmp_path / "more", [1002], ["SAD"], seed=0, sentences=("DFA",))
    shutil.copy(other, corpus / other.name)
    added = run_preprocess(_ingest(corpus.parent, "cremad", tmp_path), tmp_path / "f3", params)
    assert added.succeeded == 2 and added.cached_stages == per_clip  # only the new clip computed

    crops = params.model_copy(update={"faces": params.faces.model_copy(update={"crop_size": 32})})
    changed = run_preprocess(_ingest(corpus.parent, "cremad", tmp_path), tmp_path / "f4", crops)
    # both clips' audio and front-ends reused; faces and embeddings recomputed
    assert changed.cached_stages == 2 * (per_clip - 2)
    frames = pq.read_table(tmp_path / "f4" / "frames.parquet")
    assert frames.schema.field("crop").type.shape == [32, 32, 3]


def _with_decoder(params: PreprocessParams, setting: str) -> PreprocessParams:
    return params.model_copy(update={"audio": params.audio.model_copy(update={"ffmpeg": setting})})


def _feature_tables(folder: Path) -> dict[str, pa.Table]:
    return {name: pq.read_table(folder / f"{name}.parquet") for name in ("clips", "segments", "frames")}


def test_the_default_decoder_ignores_an_ffmpeg_on_path(
    good_clip: Path, tmp_path: Path, monkeypatch, volume_ffmpeg
) -> None:
    corpus = tmp_path / "corpus" / "VideoMP4"
    corpus.mkdir(parents=True)
    shutil.copy(good_clip, corpus / good_clip.name)
    manifest = _ingest(corpus.parent, "cremad", tmp_path)
    params = _params(tmp_path, frontends=[])
    run_preprocess(manifest, tmp_path / "plain", params.model_copy(update={"cache_dir": tmp_path / "c1"}))

    other = volume_ffmpeg(tmp_path / "bin" / "ffmpeg", "0.0-system")
    monkeypatch.setenv("PATH", f"{other.parent}:{os.environ['PATH']}")
    decoder.cache_clear()
    try:
        run_preprocess(manifest, tmp_path / "with_path", params.model_copy(update={"cache_dir": tmp_path / "c2"}))
        run_preprocess(manifest, tmp_path / "system", _with_decoder(params, "system"))
    finally:
        decoder.cache_clear()
    plain, with_path = _feature_tables(tmp_path / "plain"), _feature_tables(tmp_path / "with_path")
    assert all(plain[name].equals(with_path[name]) for name in plain)
    system = _feature_tables(tmp_path / "system")  # asked for, the system's ffmpeg is used: other samples
    assert not plain["segments"]["log_mel"].equals(system["segments"]["log_mel"])
    assert read_provenance(tmp_path / "system" / "clips.parquet")["decoder"]["version"] == "0.0-system"
    assert read_provenance(tmp_path / "plain" / "clips.parquet")["decoder"]["kind"] == "bundled"


def test_a_change_of_decoder_recomputes_every_stage(good_clip: Path, tmp_path: Path, volume_ffmpeg) -> None:
    corpus = tmp_path / "corpus" / "VideoMP4"
    corpus.mkdir(parents=True)
    shutil.copy(good_clip, corpus / good_clip.name)
    manifest = _ingest(corpus.parent, "cremad", tmp_path)
    params = _params(tmp_path, frontends=["egemaps"], speed_perturbation=[])
    custom = _with_decoder(params, str(volume_ffmpeg(tmp_path / "bin" / "ffmpeg", "0.0-custom")))

    assert run_preprocess(manifest, tmp_path / "f1", params).cached_stages == 0
    assert run_preprocess(manifest, tmp_path / "f2", custom).cached_stages == 0  # nothing mixed in
    assert run_preprocess(manifest, tmp_path / "f3", custom).cached_stages == 4
    bundled, wrapped = _feature_tables(tmp_path / "f1"), _feature_tables(tmp_path / "f3")
    assert not bundled["segments"]["log_mel"].equals(wrapped["segments"]["log_mel"])


def test_a_clip_with_a_corrupt_middle_is_kept_and_flagged(shared_data: Path, tmp_path: Path) -> None:
    clean = shared_data / "cremad" / "VideoFlash" / "1001_DFA_ANG_XX.flv"
    corpus = tmp_path / "corpus" / "VideoFlash"
    corpus.mkdir(parents=True)
    shutil.copy(clean, corpus / clean.name)
    data = clean.read_bytes()
    middle = len(data) // 2 - 20_000
    noise = np.random.default_rng(0).integers(0, 256, 40_000, dtype=np.uint8).tobytes()
    (corpus / "1001_DFA_DIS_XX.flv").write_bytes(data[:middle] + noise + data[middle + 40_000 :])
    summary = run_preprocess(
        _ingest(corpus.parent, "cremad", tmp_path), tmp_path / "f", _params(tmp_path, frontends=[])
    )
    assert summary.succeeded == 2
    clips = _by_clip(pq.read_table(tmp_path / "f" / "clips.parquet"))
    assert clips["1001_DFA_ANG_XX"]["decode_errors"] == 0
    assert clips["1001_DFA_DIS_XX"]["decode_errors"] > 0
    assert clips["1001_DFA_DIS_XX"]["n_segments"] > 0


def test_an_unchanged_corpus_is_up_to_date_without_running_anything(
    good_clip: Path, tmp_path: Path, volume_ffmpeg
) -> None:
    corpus = tmp_path / "corpus" / "VideoMP4"
    corpus.mkdir(parents=True)
    shutil.copy(good_clip, corpus / good_clip.name)
    manifest = _ingest(corpus.parent, "cremad", tmp_path)
    params_file = tmp_path / "params.yaml"
    preprocess = {"out_dir": str(tmp_path / "f"), "cache_dir": str(tmp_path / "cache"), "frontends": ["egemaps"]}
    params_file.write_text(yaml.safe_dump({"ingest": {"manifest": str(manifest)}, "preprocess": preprocess}))
    params = read_params(params_file).preprocess
    assert not up_to_date(manifest, tmp_path / "f", params)

    first = CliRunner().invoke(app, ["preprocess", "--params", str(params_file)])
    assert first.exit_code == 0 and "1 of 1 clips succeeded" in first.output, first.output
    written = {p: p.stat().st_mtime_ns for p in outputs(tmp_path / "f", params)}
    again = CliRunner().invoke(app, ["preprocess", "--params", str(params_file), "--workers", "1"])
    assert again.exit_code == 0 and "up to date" in again.output, again.output
    assert {p: p.stat().st_mtime_ns for p in written} == written  # nothing rewritten
    forced = CliRunner().invoke(app, ["preprocess", "--params", str(params_file), "--force"])
    assert "clips succeeded" in forced.output and "stages reused" in forced.output, forced.output

    assert not up_to_date(manifest, tmp_path / "f", params.model_copy(update={"frontends": []}))
    other = volume_ffmpeg(tmp_path / "bin" / "ffmpeg", "0.0-other")
    assert not up_to_date(manifest, tmp_path / "f", _with_decoder(params, str(other)))
    (tmp_path / "f" / "frontend_egemaps.parquet").unlink()
    assert not up_to_date(manifest, tmp_path / "f", params)


def test_end_to_end_on_real_cremad_and_emodb(shared_data: Path, tmp_path: Path) -> None:
    params = _params(tmp_path)
    cremad = run_preprocess(_ingest(shared_data / "cremad", "cremad", tmp_path / "c"), tmp_path / "c" / "f", params)
    assert cremad.clips == 12 and cremad.failed == 0
    clips = _by_clip(pq.read_table(tmp_path / "c" / "f" / "clips.parquet"))
    for clip_id, row in clips.items():
        if clip_id.startswith("1001"):  # the audio-visual actor: a face on every referenced frame
            assert row["has_video"] and row["n_face_frames"] > 0 and row["n_no_face_frames"] == 0
        else:
            assert not row["has_video"]
        assert row["n_segments"] >= 1

    emodb = tmp_path / "emodb"
    emodb.mkdir()
    for path in sorted((shared_data / "emodb" / "wav").glob("*.wav"))[:24]:
        shutil.copy(path, emodb / path.name)
    summary = run_preprocess(_ingest(emodb, "emodb", tmp_path / "e"), tmp_path / "e" / "f", params)
    assert summary.clips == 24 and summary.succeeded >= 22
    segments = pq.read_table(tmp_path / "e" / "f" / "segments.parquet")
    assert segments.num_rows >= 2 * summary.succeeded  # 2.0 s clips: up to 4 segments each
