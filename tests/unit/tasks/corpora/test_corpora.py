"""Corpus adapters on fake folder trees, validation, probing, and the real CREMA-D and EmoDB samples."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
from pathlib import Path

import pytest

from avemo.ffmpeg import ffmpeg_exe
from avemo.labels import EMOTIONS
from avemo.schemas import MANIFEST
from tasks.corpora.cremad import prepare_cremad
from tasks.corpora.csv_labels import prepare_csv
from tasks.corpora.emodb import prepare_emodb
from tasks.corpora.enterface import prepare_enterface
from tasks.corpora.manifest import ManifestRow, build_manifest, manifest_table, probe_clips, validate_clips
from tasks.corpora.mead import prepare_mead
from tasks.corpora.ravdess import prepare_ravdess
from tasks.corpora.scheme import Clip, ManifestError, canonical_label


def touch(root: Path, *names: str) -> None:
    """Empty files: adapters read names only, so parse tests need no media."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()


def make_wav(path: Path, seconds: float = 0.3, sample_rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            ffmpeg_exe(),
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}:sample_rate={sample_rate}",
            "-ac",
            "1",
            str(path),
        ],
        check=True,
    )


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def clip(clip_id: str, path: str, label: str = "anger") -> Clip:
    return Clip(clip_id=clip_id, path=path, corpus="csv", speaker="s1", label=label, corpus_label=label)


def test_canonical_label_accepts_names_and_aliases_in_any_case():
    assert canonical_label("anger") == "anger"
    assert canonical_label(" Angry ") == "anger"
    assert canonical_label("HAPPY") == "happiness"
    assert canonical_label("sad") == "sadness"
    assert canonical_label("fearful") == "fear"
    assert canonical_label("surprised") == "surprise"
    assert canonical_label("disgusted") == "disgust"
    assert canonical_label("excited") is None


def test_cremad_keeps_one_format_per_clip_by_preference(tmp_path):
    touch(
        tmp_path,
        "VideoMP4/1001_DFA_ANG_XX.mp4",
        "VideoFlash/1001_DFA_ANG_XX.flv",
        "AudioWAV/1001_DFA_ANG_XX.wav",
        "AudioMP3/1001_DFA_ANG_XX.mp3",
        "AudioWAV/1001_IEO_HAP_HI.wav",
        "AudioMP3/1001_IEO_HAP_HI.mp3",
        "AudioMP3/1002_DFA_SAD_XX.mp3",
        "README.txt",
        "AudioWAV/1001_DFA_XYZ_XX.wav",
        "AudioWAV/1001_DFA_ANG_ZZ.wav",
        "AudioWAV/1001-DFA-ANG-XX.wav",
    )
    clips, skipped = prepare_cremad(tmp_path)

    assert [c.path for c in clips] == [
        "AudioMP3/1002_DFA_SAD_XX.mp3",
        "AudioWAV/1001_IEO_HAP_HI.wav",
        "VideoMP4/1001_DFA_ANG_XX.mp4",
    ]
    assert clips[1] == Clip(
        clip_id="1001_IEO_HAP_HI",
        path="AudioWAV/1001_IEO_HAP_HI.wav",
        corpus="cremad",
        speaker="1001",
        label="happiness",
        corpus_label="HAP",
        sentence="IEO",
        intensity="HI",
    )
    assert clips[2].intensity is None  # XX: unspecified
    reasons = {s.path: s.reason for s in skipped}
    duplicates = {path for path, reason in reasons.items() if reason.startswith("another format")}
    assert duplicates == {
        "VideoFlash/1001_DFA_ANG_XX.flv",
        "AudioWAV/1001_DFA_ANG_XX.wav",
        "AudioMP3/1001_DFA_ANG_XX.mp3",
        "AudioMP3/1001_IEO_HAP_HI.mp3",
    }
    assert reasons["README.txt"].startswith("extension is not")
    assert reasons["AudioWAV/1001_DFA_XYZ_XX.wav"] == "unknown CREMA-D emotion 'XYZ'"
    assert reasons["AudioWAV/1001_DFA_ANG_ZZ.wav"] == "unknown CREMA-D level 'ZZ'"
    assert reasons["AudioWAV/1001-DFA-ANG-XX.wav"].startswith("name is not ActorID_Sentence_Emotion_Level")
    assert len(skipped) == 8


def test_ravdess_prefers_audio_video_then_audio_only_over_video_only(tmp_path):
    touch(
        tmp_path,
        # one recording in all three modalities: the audio-video file is kept
        "Actor_01/01-01-05-02-01-01-01.mp4",
        "Actor_01/02-01-05-02-01-01-01.mp4",
        "Actor_01/03-01-05-02-01-01-01.wav",
        # song without its audio-video file: audio-only beats video-only
        "Actor_02/02-02-02-01-02-02-02.mp4",
        "Actor_02/03-02-02-01-02-02-02.wav",
        # video-only alone is kept
        "Actor_02/02-01-08-01-01-01-02.mp4",
        "Actor_01/01-01-09-01-01-01-01.mp4",
        "Actor_01/04-01-01-01-01-01-01.mp4",
        "Actor_01/01-01-01-01-01-01.mp4",
    )
    clips, skipped = prepare_ravdess(tmp_path)

    assert [c.clip_id for c in clips] == [
        "01-01-05-02-01-01-01",
        "02-01-08-01-01-01-02",
        "03-02-02-01-02-02-02",
    ]
    angry, surprised, calm = clips
    assert (angry.speaker, angry.label, angry.corpus_label, angry.intensity, angry.sentence) == (
        "01",
        "anger",
        "angry",
        "strong",
        "01",
    )
    assert (surprised.speaker, surprised.label, surprised.intensity) == ("02", "surprise", "normal")
    assert (calm.label, calm.sentence) == ("calm", "02")
    reasons = {s.path: s.reason for s in skipped}
    assert {p for p, r in reasons.items() if r.startswith("another modality")} == {
        "Actor_01/02-01-05-02-01-01-01.mp4",
        "Actor_01/03-01-05-02-01-01-01.wav",
        "Actor_02/02-02-02-01-02-02-02.mp4",
    }
    assert reasons["Actor_01/01-01-09-01-01-01-01.mp4"] == "unknown RAVDESS emotion '09'"
    assert reasons["Actor_01/04-01-01-01-01-01-01.mp4"] == "unknown RAVDESS modality '04'"
    assert reasons["Actor_01/01-01-01-01-01-01.mp4"].startswith("name is not MM-VV-EE-II-SS-RR-AA")


def test_enterface_reads_subject_emotion_and_optional_sentence_folders(tmp_path):
    touch(
        tmp_path,
        "subject 1/anger/sentence 2/s1_an_2.avi",
        "subject 6/happiness/s6_ha_1.avi",
        "subject 12/surprise/sentence 5/s12_su_5.avi",
        "subject 2/joy/sentence 1/s2_jo_1.avi",
        "subject 1/anger/take 2/s1_an_2b.avi",
        "subject 1/anger/sentence 2/notes.txt",
        "s3_an_1.avi",
    )
    clips, skipped = prepare_enterface(tmp_path)

    assert [(c.clip_id, c.speaker, c.label, c.corpus_label, c.sentence) for c in clips] == [
        ("s1_an_2", "1", "anger", "anger", "2"),
        ("s12_su_5", "12", "surprise", "surprise", "5"),
        ("s6_ha_1", "6", "happiness", "happiness", None),
    ]
    reasons = {s.path: s.reason for s in skipped}
    assert reasons == {
        "subject 2/joy/sentence 1/s2_jo_1.avi": "unknown eNTERFACE emotion folder 'joy'",
        "subject 1/anger/take 2/s1_an_2b.avi": "folder 'take 2' is not 'sentence M'",
        "subject 1/anger/sentence 2/notes.txt": "extension is not .avi",
        "s3_an_1.avi": "path is not subject N/<emotion>/[sentence M/]<file>.avi",
    }


def test_mead_keeps_the_selected_view_and_maps_adjectives_to_labels(tmp_path):
    touch(
        tmp_path,
        "M003/video/front/angry/level_1/001.mp4",
        "M003/video/front/contempt/level_2/014.mp4",
        "W009/video/front/happy/level_3/012.mp4",
        "M003/video/left_30/angry/level_1/001.mp4",
        "M003/audio/angry/level_1/001.m4a",
        "M003/video/front/bored/level_1/001.mp4",
    )
    clips, skipped = prepare_mead(tmp_path)

    assert [(c.clip_id, c.speaker, c.label, c.corpus_label, c.intensity, c.sentence) for c in clips] == [
        ("M003_front_angry_level_1_001", "M003", "anger", "angry", "1", "001"),
        ("M003_front_contempt_level_2_014", "M003", "contempt", "contempt", "2", "014"),
        ("W009_front_happy_level_3_012", "W009", "happiness", "happy", "3", "012"),
    ]
    reasons = {s.path: s.reason for s in skipped}
    left = "M003/video/left_30/angry/level_1/001.mp4"
    assert reasons[left] == "view 'left_30' is not the selected view 'front'"
    assert reasons["M003/audio/angry/level_1/001.m4a"].startswith("path is not <speaker>/video/")
    assert reasons["M003/video/front/bored/level_1/001.mp4"] == "unknown MEAD emotion folder 'bored'"

    side, _ = prepare_mead(tmp_path, view="left_30")
    assert [c.path for c in side] == ["M003/video/left_30/angry/level_1/001.mp4"]


def test_emodb_maps_every_german_letter(tmp_path):
    letters = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness"}
    letters["N"] = "neutral"
    touch(tmp_path, *(f"wav/03a01{letter}a.wav" for letter in letters), "wav/16b10Xb.wav", "wav/3a01Fa.wav")
    clips, skipped = prepare_emodb(tmp_path)

    assert {c.corpus_label: c.label for c in clips} == letters
    first = next(c for c in clips if c.corpus_label == "F")
    assert (first.clip_id, first.path, first.speaker, first.sentence) == (
        "03a01Fa",
        "wav/03a01Fa.wav",
        "03",
        "a01",
    )
    assert {s.path: s.reason for s in skipped} == {
        "wav/16b10Xb.wav": "unknown EmoDB emotion letter 'X'",
        "wav/3a01Fa.wav": "name is not speaker(2) text(3) emotion(1) version(1) (e.g. 03a01Fa)",
    }


def test_csv_reads_aliases_optional_columns_and_absolute_paths_inside(tmp_path):
    touch(tmp_path, "clips/a.wav", "clips/b.wav", "c.mp4")
    write_csv(
        tmp_path / "labels.csv",
        "path,speaker,label,clip_id,sentence\n"
        "clips/a.wav,s1,Angry,,\n"
        "./clips/b.wav, s2 ,neutral,my_b,hello\n"
        f"{tmp_path / 'c.mp4'},s1,surprised,,\n",
    )
    clips, skipped = prepare_csv(tmp_path)

    assert skipped == []
    assert clips == [
        Clip("a", "clips/a.wav", "csv", "s1", "anger", "Angry"),
        Clip("my_b", "clips/b.wav", "csv", "s2", "neutral", "neutral", sentence="hello"),
        Clip("c", "c.mp4", "csv", "s1", "surprise", "surprised"),
    ]


def test_csv_elsewhere_still_names_paths_relative_to_the_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    touch(corpus, "x/a.wav")
    labels = write_csv(tmp_path / "meta" / "my.csv", "path,speaker,label,intensity\nx/a.wav,7,sad,high\n")
    clips, _ = prepare_csv(corpus, labels)
    assert clips == [Clip("a", "x/a.wav", "csv", "7", "sadness", "sad", intensity="high")]
    validate_clips(corpus, clips)


@pytest.mark.parametrize(
    ("header", "complaint"),
    [("path,speaker\n", "missing ['label']"), ("path,speaker,label,setence\n", "unknown ['setence']")],
)
def test_csv_header_problems_are_refused(tmp_path, header, complaint):
    write_csv(tmp_path / "labels.csv", header)
    with pytest.raises(ManifestError, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        prepare_csv(tmp_path)


def test_csv_missing_file_is_refused_with_advice(tmp_path):
    with pytest.raises(ManifestError, match="labels.csv not found"):
        prepare_csv(tmp_path)


def test_unknown_csv_label_stops_ingest_naming_the_row(tmp_path):
    touch(tmp_path, "a.wav", "b.wav")
    write_csv(tmp_path / "labels.csv", "path,speaker,label\na.wav,s1,happy\nb.wav,s1,excited\n")
    with pytest.raises(ManifestError, match=r"1 labels outside .*\n  b.wav: 'excited'"):
        build_manifest(tmp_path, "csv")


@pytest.mark.parametrize("path", ["../outside.wav", "clips/../../outside.wav", "ABSOLUTE"])
def test_csv_path_outside_the_corpus_stops_ingest(tmp_path, path):
    corpus = tmp_path / "corpus"
    touch(corpus, "in.wav")
    touch(tmp_path, "outside.wav")
    path = str(tmp_path / "outside.wav") if path == "ABSOLUTE" else path
    write_csv(corpus / "labels.csv", f"path,speaker,label\nin.wav,s1,anger\n{path},s1,anger\n")
    with pytest.raises(ManifestError, match="1 files missing or outside the corpus folder") as err:
        build_manifest(corpus, "csv")
    assert "outside.wav: resolves to" in str(err.value)
    assert "in.wav" not in str(err.value)


def test_symlink_escaping_the_corpus_stops_ingest(tmp_path):
    corpus = tmp_path / "corpus"
    touch(tmp_path, "elsewhere/03a01Fa.wav")
    corpus.mkdir()
    (corpus / "03a01Fa.wav").symlink_to(tmp_path / "elsewhere" / "03a01Fa.wav")
    with pytest.raises(ManifestError, match="03a01Fa.wav: resolves to .*elsewhere"):
        build_manifest(corpus, "emodb")


def test_symlink_inside_the_corpus_is_accepted(tmp_path):
    touch(tmp_path, "store/x.wav")
    (tmp_path / "03a01Fa.wav").symlink_to(tmp_path / "store" / "x.wav")
    validate_clips(tmp_path, prepare_emodb(tmp_path)[0])


def test_duplicate_clip_ids_stop_ingest_listing_both_files(tmp_path):
    touch(tmp_path, "AudioWAV/1001_DFA_ANG_XX.wav", "AudioWAV/1001_DFA_SAD_XX.wav")
    touch(tmp_path, "backup/1001_DFA_ANG_XX.wav")
    with pytest.raises(ManifestError) as err:
        build_manifest(tmp_path, "cremad")
    message = str(err.value)
    assert "1 duplicate clip ids" in message
    assert "'1001_DFA_ANG_XX': AudioWAV/1001_DFA_ANG_XX.wav, backup/1001_DFA_ANG_XX.wav" in message
    assert "SAD" not in message


def test_validation_lists_the_first_ten_problems_and_the_count(tmp_path):
    touch(tmp_path, *(f"{n:02d}.wav" for n in range(15)))
    clips = [clip(f"c{n}", f"{n:02d}.wav", label="excited") for n in range(15)]
    with pytest.raises(ManifestError) as err:
        no_speaker = dataclasses.replace(clip("c98", "00.wav"), speaker="")
        validate_clips(tmp_path, [*clips, clip("c99", "gone.wav"), no_speaker])
    message = str(err.value)
    assert "15 labels outside" in message
    assert message.count("'excited'") == 10
    assert "... and 5 more" in message
    assert "1 files missing or outside the corpus folder:\n  gone.wav: no such file" in message
    assert "1 clips without a speaker:\n  00.wav" in message


def test_empty_corpus_is_an_error(tmp_path):
    with pytest.raises(ManifestError, match="no emodb clips found .*: it holds no files"):
        build_manifest(tmp_path, "emodb")
    touch(tmp_path, "notes.txt")
    with pytest.raises(ManifestError, match=r"1 files skipped: extension is not .wav"):
        build_manifest(tmp_path, "emodb")


def test_wrong_arguments_are_refused_clearly(tmp_path):
    with pytest.raises(ManifestError, match="unknown corpus format 'iemocap'; choose one of cremad, ravdess"):
        build_manifest(tmp_path, "iemocap")
    with pytest.raises(ManifestError, match="applies to --format csv only"):
        build_manifest(tmp_path, "emodb", csv_path=tmp_path / "labels.csv")
    with pytest.raises(ManifestError, match="does not exist or is not a folder"):
        build_manifest(tmp_path / "absent", "emodb")
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        probe_clips(tmp_path, [], workers=0)


def test_unprobeable_files_stay_in_the_manifest_with_probe_error(tmp_path):
    make_wav(tmp_path / "03a01Fa.wav")
    (tmp_path / "03a01Wa.wav").write_bytes(b"")
    (tmp_path / "03a01Ta.wav").write_bytes(b"not audio at all " * 64)
    calls = []
    rows, skipped = build_manifest(
        tmp_path, "emodb", workers=2, progress=lambda done, total: calls.append((done, total))
    )

    assert skipped == []
    assert calls == [(1, 3), (2, 3), (3, 3)]
    by_id = {row.clip_id: row for row in rows}
    good, empty, corrupt = by_id["03a01Fa"], by_id["03a01Wa"], by_id["03a01Ta"]
    assert good.probe_error is None
    assert (good.audio_sample_rate, good.audio_channels, good.audio_codec) == (16000, 1, "pcm_s16le")
    assert good.duration_s == pytest.approx(0.3, abs=0.01)
    assert good.video_width is None and good.video_fps is None
    assert good.sha256 == hashlib.sha256((tmp_path / "03a01Fa.wav").read_bytes()).hexdigest()
    assert good.size_bytes == (tmp_path / "03a01Fa.wav").stat().st_size
    assert empty.probe_error == "the file is empty (0 bytes)"
    assert (empty.size_bytes, empty.sha256) == (0, hashlib.sha256(b"").hexdigest())
    assert corrupt.probe_error.startswith("ffmpeg cannot read it")
    assert corrupt.duration_s is None and corrupt.audio_sample_rate is None
    assert corrupt.size_bytes == 17 * 64

    table = manifest_table(rows)
    assert table.column("probe_error").null_count == 1


def test_manifest_table_has_the_manifest_schema_and_refuses_nulls_where_forbidden():
    assert [f.name for f in dataclasses.fields(ManifestRow)] == MANIFEST.names
    row = ManifestRow(
        clip_id="a",
        path="a.wav",
        corpus="csv",
        speaker="s1",
        label="anger",
        corpus_label="angry",
        sentence=None,
        intensity=None,
        sha256="0" * 64,
        size_bytes=10,
        duration_s=1.5,
        audio_sample_rate=16000,
        audio_channels=1,
        audio_codec="pcm_s16le",
        video_fps=None,
        video_width=None,
        video_height=None,
        video_codec=None,
        probe_error=None,
    )
    table = manifest_table([row])
    assert table.schema.equals(MANIFEST, check_metadata=True)
    assert table.to_pylist() == [dataclasses.asdict(row)]
    assert manifest_table([]).num_rows == 0
    with pytest.raises(ManifestError, match="column speaker must not be null"):
        manifest_table([dataclasses.replace(row, speaker=None)])


def test_real_cremad_sample(shared_data):
    corpus = shared_data / "cremad"
    rows, skipped = build_manifest(corpus, "cremad", workers=2)

    assert len(rows) == 12
    assert {s.path for s in skipped} == {"LICENSE.txt", "VideoDemographics.csv"}
    assert {row.speaker for row in rows} == {"1001", "1002"}
    assert {row.label for row in rows} == {"anger", "disgust", "fear", "happiness", "neutral", "sadness"}
    videos = [row for row in rows if row.path.endswith(".flv")]
    audios = [row for row in rows if row.path.endswith(".mp3")]
    assert len(videos) == len(audios) == 6
    for row in videos:
        assert row.speaker == "1001" and row.probe_error is None
        assert (row.video_fps, row.video_width, row.video_height) == (29.97, 480, 360)
        assert (row.audio_sample_rate, row.audio_channels) == (44100, 1)
    # the container durations ffmpeg prints
    assert sorted(row.duration_s for row in videos) == [1.87, 2.0, 2.04, 2.17, 2.24, 2.34]
    for row in audios:
        assert row.speaker == "1002" and row.probe_error is None
        assert (row.audio_sample_rate, row.audio_channels, row.audio_codec) == (44100, 1, "mp3")
        assert (row.video_fps, row.video_width, row.video_height, row.video_codec) == (None, None, None, None)
    for row in rows:
        assert row.sha256 == hashlib.sha256((corpus / row.path).read_bytes()).hexdigest()
        assert row.size_bytes == (corpus / row.path).stat().st_size
    assert manifest_table(rows).num_rows == 12


def test_real_emodb_sample(shared_data):
    rows, skipped = build_manifest(shared_data / "emodb", "emodb", workers=2)

    assert skipped == []
    assert len(rows) == 278
    assert {row.speaker for row in rows} == {"03", "08", "09", "10", "11", "12"}
    assert {row.label for row in rows} == set(EMOTIONS) - {"calm", "contempt", "surprise"}
    assert all(row.probe_error is None and row.audio_sample_rate == 22050 for row in rows)
    assert all(row.duration_s == pytest.approx(2.0, abs=0.01) for row in rows)
