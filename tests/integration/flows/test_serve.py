"""Scheduled re-training: the manifest diff, the held-out speakers, the promotion rule, the deployment's
schedule, and three cycles under Prefect's test harness on a tiny EmoDB corpus copied into tmp."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from avemo.config import (
    Params,
    PreprocessParams,
    ServeCorpus,
    ServeParams,
    SplitParams,
    TrainParams,
    load_params,
)
from avemo.provenance import REPO_ROOT
from tasks.corpora.manifest import ManifestRow
from tasks.serve import (
    NOT_A_CLASS,
    ServeError,
    choose_heldout_speakers,
    combine_corpora,
    corpus_digest,
    diff_manifests,
    heldout_scores,
    promotion_decision,
)


def test_diff_finds_added_changed_and_removed_clips() -> None:
    previous = {"a": "1", "b": "2", "c": "3"}
    changes = diff_manifests(previous, {"a": "1", "b": "20", "d": "4"})
    assert (changes.added, changes.changed, changes.removed) == (("d",), ("b",), ("c",))
    assert changes.any and changes.counts() == {"added": 1, "changed": 1, "removed": 1}
    assert not diff_manifests(previous, dict(previous)).any
    assert diff_manifests(None, previous).added == ("a", "b", "c")


def test_corpus_digest_depends_on_content_not_order() -> None:
    assert corpus_digest({"a": "1", "b": "2"}) == corpus_digest({"b": "2", "a": "1"})
    assert corpus_digest({"a": "1", "b": "2"}) != corpus_digest({"a": "1", "b": "3"})


def _row(clip_id: str, path: str) -> ManifestRow:
    return ManifestRow(
        clip_id,
        path,
        "c",
        "s",
        "anger",
        "A",
        None,
        None,
        "0" * 64,
        1,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    )


def test_corpora_are_combined_relative_to_their_common_folder(tmp_path: Path) -> None:
    root, rows = combine_corpora(
        [(tmp_path / "a", [_row("x", "w/x.wav")]), (tmp_path / "b" / "c", [_row("y", "y.wav")])]
    )
    assert root == tmp_path.resolve()
    assert [r.path for r in rows] == ["a/w/x.wav", "b/c/y.wav"]
    with pytest.raises(ServeError, match="repeat across serve.corpora"):
        combine_corpora([(tmp_path / "a", [_row("x", "x.wav")]), (tmp_path / "b", [_row("x", "x.wav")])])


def test_heldout_speakers_are_a_seeded_share_leaving_two_to_train() -> None:
    speakers = [f"s{i}" for i in range(10)]
    chosen = choose_heldout_speakers(speakers, 0.2, seed=0)
    assert len(chosen) == 2 and set(chosen) <= set(speakers)
    assert chosen == choose_heldout_speakers(list(reversed(speakers)), 0.2, seed=0)
    assert len(choose_heldout_speakers(speakers[:3], 0.1, seed=0)) == 1  # at least one
    with pytest.raises(ServeError, match="2 or more to train on"):
        choose_heldout_speakers(speakers[:2], 0.2, seed=0)


def test_candidate_is_promoted_unless_it_scores_worse() -> None:
    assert promotion_decision(0.3, None).promoted
    assert promotion_decision(0.5, 0.5).promoted
    assert promotion_decision(0.6, 0.5).promoted
    kept = promotion_decision(0.4, 0.5)
    assert not kept.promoted and "0.4000 < current 0.5000" in kept.reason


def test_a_class_the_model_lacks_counts_as_a_miss() -> None:
    scores = heldout_scores(["anger", "anger", "fear"], ["anger", "sadness", None])
    assert scores == {"uar": pytest.approx(0.25), "accuracy": pytest.approx(1 / 3), "clips": 3}
    assert NOT_A_CLASS not in ("anger", "fear")


def test_deployment_has_the_cron_schedule_of_params(tmp_path: Path) -> None:
    from flows.serve import deployment

    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        yaml.safe_dump({"serve": {"cron": "15 4 * * 1", "timezone": "Europe/Berlin", "deployment": "nightly"}})
    )
    built = deployment(load_params(params_file), params_file)
    assert built.name == "nightly" and built.entrypoint == "flows.serve.retrain_cycle"
    [schedule] = built.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("15 4 * * 1", "Europe/Berlin")
    assert built.parameters == {"params_file": str(params_file.resolve())}


def test_a_wrong_cron_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="5 fields"):
        ServeParams(cron="every sunday")


def _emodb_clips(wav_dir: Path, speaker: str, letter: str) -> list[Path]:
    return sorted(wav_dir.glob(f"{speaker}???{letter}?.wav"))


def _decisions(work_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (work_dir / "decisions.jsonl").read_text().splitlines()]


def test_a_cycle_preprocesses_only_the_added_clip_and_records_both_scores(
    prefect_harness, shared_data: Path, tmp_path: Path
) -> None:
    from flows.serve import retrain_cycle

    wavs = shared_data / "emodb" / "wav"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    speakers = ("03", "08", "09", "10")
    for speaker in speakers:  # 2 anger (W) + 2 neutral (N) clips per speaker: 16 clips
        for path in _emodb_clips(wavs, speaker, "W")[:2] + _emodb_clips(wavs, speaker, "N")[:2]:
            shutil.copy(path, corpus)
    work = tmp_path / "serve"
    params = Params(
        preprocess=PreprocessParams(cache_dir=tmp_path / "cache", workers=2),
        train=TrainParams(epochs=2, batch_size=8, patience=2),
        models={"audio": {"audio_channels": [16, 32, 48, 48, 32]}},  # narrow: proves the path, not accuracy
        serve=ServeParams(
            corpora=[ServeCorpus(dir=corpus, format="emodb")],
            system="audio",
            work_dir=work,
            heldout_share=0.25,
            split=SplitParams(scheme="fixed"),
        ),
    )
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))

    first = retrain_cycle(params_file=params_file)
    assert first.changes == {"added": 16, "changed": 0, "removed": 0} and len(first.computed_clips) == 16
    assert first.promoted and first.current_uar is None and first.candidate_uar is not None
    [heldout] = json.loads((work / "heldout.json").read_text())["speakers"]
    assert heldout in speakers

    added = next(p for p in _emodb_clips(wavs, next(s for s in speakers if s != heldout), "W")[2:])
    shutil.copy(added, corpus)
    second = retrain_cycle(params_file=params_file)
    assert second.changes == {"added": 1, "changed": 0, "removed": 0}
    assert second.computed_clips == (added.stem,)  # the 16 others came from the cache
    decision = _decisions(work)[-1]
    assert decision["added"] == [added.stem] and decision["computed_clips"] == [added.stem]
    assert decision["candidate"]["heldout"]["uar"] == pytest.approx(second.candidate_uar)
    assert decision["current"]["heldout"]["uar"] == pytest.approx(second.current_uar)
    assert decision["current"]["cycle"] == first.cycle and decision["heldout_clips"] == 4
    assert decision["promoted"] == (second.candidate_uar >= second.current_uar)
    assert decision["corpora"][0]["sha256"] != _decisions(work)[0]["corpora"][0]["sha256"]
    assert decision["git"] and decision["params"]["system"] == "audio"
    current = json.loads((work / "current.json").read_text())
    assert current["cycle"] == (second.cycle if second.promoted else first.cycle)
    for cycle in (first.cycle, second.cycle):  # no model ever trained or stopped early on the held-out speaker
        folds = pq.read_table(work / "candidates" / cycle / "models" / "folds.parquet").to_pylist()
        assert heldout not in {row["speaker"] for row in folds}

    third = retrain_cycle(params_file=params_file)
    assert third.changes == {"added": 0, "changed": 0, "removed": 0} and third.computed_clips == ()
    assert not third.promoted and len(_decisions(work)) == 3
    assert sorted(p.name for p in (work / "candidates").iterdir()) == sorted([first.cycle, second.cycle])


def _run(args: list[str], cwd: Path) -> str:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed in {cwd}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_project_has_a_default_remote_outside_the_repository() -> None:
    repo = REPO_ROOT
    name = _run(["dvc", "config", "--project", "core.remote"], repo).strip()
    url = _run(["dvc", "config", "--project", f"remote.{name}.url"], repo).strip()
    if "://" not in url:  # a local folder; DVC resolves a relative url from .dvc/
        assert not (repo / ".dvc" / url).resolve().is_relative_to(repo), f"the remote {url} lies inside the repository"


def test_push_then_pull_in_a_fresh_clone_leaves_no_stage_to_run(tmp_path: Path) -> None:
    """The workflow docs/scaling.md documents, on a one-stage pipeline: repro, push, clone, pull, status."""
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "params.yaml").write_text(
        yaml.safe_dump({"sample": {"out_dir": "corpus", "speakers": [1001], "emotions": ["ANG"], "sentences": ["DFA"]}})
    )
    (origin / "dvc.yaml").write_text(
        yaml.safe_dump({"stages": {"sample": {"cmd": "avemo sample", "params": ["sample"], "outs": ["corpus"]}}})
    )
    _run(["git", "init", "-q"], origin)
    _run(["dvc", "init", "-q"], origin)
    _run(["dvc", "remote", "add", "-d", "local", "../remote"], origin)  # relative, like the project's remote
    _run(["dvc", "repro", "-q"], origin)
    _run(["git", "add", "-A"], origin)
    _run(["git", "commit", "-qm", "sample"], origin)
    assert "2 files pushed" in _run(["dvc", "push"], origin)  # the clip and the folder's listing

    _run(["git", "clone", "-q", str(origin), "clone"], tmp_path)  # a sibling: the relative remote is shared
    clone = tmp_path / "clone"
    _run(["dvc", "pull", "-q"], clone)
    [clip] = [path.relative_to(origin) for path in (origin / "corpus").rglob("*") if path.is_file()]
    assert (clone / clip).read_bytes() == (origin / clip).read_bytes()
    assert "up to date" in _run(["dvc", "status"], clone)
    assert "Running stage" not in _run(["dvc", "repro", "--dry"], clone)
