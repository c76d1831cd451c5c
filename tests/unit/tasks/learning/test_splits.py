"""Speaker-independent splits: no speaker in two roles, every clip tested once, balance, determinism, errors."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pyarrow.compute as pc
import pytest

from avemo.config import SplitParams
from tasks.learning.splits import (
    ROLES,
    Fold,
    SplitError,
    fixed_split,
    folds_table,
    make_folds,
)

# 8 speakers with unequal clip counts (6, 5, 4, 3, 2, 2, 1, 1 = 24 clips), clips interleaved across speakers.
CLIP_COUNTS = {"s1": 6, "s2": 5, "s3": 4, "s4": 3, "s5": 2, "s6": 2, "s7": 1, "s8": 1}
SPEAKERS = [speaker for i in range(6) for speaker, count in CLIP_COUNTS.items() if i < count]
CLIPS = [f"clip{i:02d}" for i in range(len(SPEAKERS))]
SPEAKER_OF = dict(zip(CLIPS, SPEAKERS, strict=True))


def _assert_speaker_independent(fold: Fold, val_count: int | None = None) -> None:
    train, val, test = set(fold.train_speakers), set(fold.val_speakers), set(fold.test_speakers)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(CLIP_COUNTS)
    assert train and test
    if val_count is not None:
        assert len(val) == val_count
    for clips, speakers in ((fold.train_clips, train), (fold.val_clips, val), (fold.test_clips, test)):
        assert {SPEAKER_OF[clip] for clip in clips} <= speakers
    assert sorted(fold.train_clips + fold.val_clips + fold.test_clips) == CLIPS


@pytest.mark.parametrize(("scheme", "k", "n_folds"), [("loso", 5, 8), ("losgo", 3, 3), ("losgo", 8, 8)])
def test_cross_validation_tests_every_clip_exactly_once_and_never_mixes_speakers(scheme, k, n_folds):
    folds = make_folds(SPEAKERS, CLIPS, SplitParams(scheme=scheme, k=k, seed=3, val_speakers=2))
    assert len(folds) == n_folds
    for fold in folds:
        _assert_speaker_independent(fold, val_count=2)
    tested = Counter(clip for fold in folds for clip in fold.test_clips)
    assert sorted(tested) == CLIPS
    assert set(tested.values()) == {1}


def test_loso_folds_are_named_and_ordered_by_speaker():
    folds = make_folds(SPEAKERS, CLIPS, SplitParams(scheme="loso", seed=0))
    assert [fold.name for fold in folds] == [f"loso-s{i}" for i in range(1, 9)]
    assert [fold.test_speakers for fold in folds] == [(f"s{i}",) for i in range(1, 9)]
    assert folds[0].test_clips == tuple(clip for clip in CLIPS if SPEAKER_OF[clip] == "s1")


@pytest.mark.parametrize(
    ("k", "loads"),
    [
        # by hand, each speaker into the lightest group (ties: fewer speakers, then first group):
        # 6->A 5->B 4->B=9 3->A=9 2->A=11 2->B=11 1->A=12 1->B=12
        (2, [12, 12]),
        # 6->A 5->B 4->C 3->C=7 2->B=7 2->A=8 1->B=8 1->C=8
        (3, [8, 8, 8]),
    ],
)
def test_losgo_groups_are_balanced_by_clip_count(k, loads):
    for seed in (0, 1, 2):
        folds = make_folds(SPEAKERS, CLIPS, SplitParams(scheme="losgo", k=k, seed=seed))
        assert sorted(len(fold.test_clips) for fold in folds) == loads


def test_same_seed_gives_same_folds_and_another_seed_other_validation_speakers():
    for scheme in ("loso", "losgo", "fixed"):
        first = make_folds(SPEAKERS, CLIPS, SplitParams(scheme=scheme, k=4, seed=7))
        assert first == make_folds(SPEAKERS, CLIPS, SplitParams(scheme=scheme, k=4, seed=7))
    val_by_seed = {
        seed: [fold.val_speakers for fold in make_folds(SPEAKERS, CLIPS, SplitParams(scheme="loso", seed=seed))]
        for seed in range(4)
    }
    assert len({tuple(v) for v in val_by_seed.values()}) > 1


def test_validation_can_be_left_out():
    for fold in make_folds(SPEAKERS, CLIPS, SplitParams(scheme="losgo", k=4, val_speakers=0)):
        assert fold.val_speakers == () and fold.val_clips == ()
        _assert_speaker_independent(fold)


def test_fixed_split_by_speaker_shares():
    speakers = [f"spk{i:02d}" for i in range(20) for _ in range(3)]
    clips = [f"c{i}" for i in range(60)]
    (fold,) = make_folds(speakers, clips, SplitParams(scheme="fixed", shares=(0.7, 0.15, 0.15), seed=1))
    assert fold.name == "fixed"
    assert (len(fold.train_speakers), len(fold.val_speakers), len(fold.test_speakers)) == (14, 3, 3)
    assert (len(fold.train_clips), len(fold.val_clips), len(fold.test_clips)) == (42, 9, 9)
    assert not set(fold.train_speakers) & set(fold.test_speakers)
    # three speakers still give one per role: a positive share never rounds to no speaker
    (small,) = make_folds(["a", "b", "c"], ["1", "2", "3"], SplitParams(scheme="fixed"))
    assert (len(small.train_speakers), len(small.val_speakers), len(small.test_speakers)) == (1, 1, 1)


def test_fixed_split_from_explicit_speaker_lists_accepts_integer_ids():
    speakers, clips = [1001, 1001, 1002, 1003], ["a", "b", "c", "d"]
    fold = fixed_split(speakers, clips, train=[1001], validation=[1002], test=[1003])
    assert fold.train_clips == ("a", "b") and fold.val_clips == ("c",) and fold.test_clips == ("d",)
    assert fold.test_speakers == ("1003",)


def test_folds_table_has_one_row_per_clip_per_fold_with_its_speaker_and_role():
    folds = make_folds(SPEAKERS, CLIPS, SplitParams(scheme="losgo", k=3, seed=0))
    table = folds_table(folds)
    assert table.column_names == ["fold", "clip_id", "speaker", "role"]
    assert table.num_rows == 3 * len(CLIPS)
    rows = table.to_pylist()
    assert all(SPEAKER_OF[row["clip_id"]] == row["speaker"] for row in rows)
    assert {row["role"] for row in rows} == set(ROLES)
    for fold in folds:
        in_fold = table.filter(pc.equal(table["fold"], fold.name))
        assert in_fold.num_rows == len(CLIPS)
        tested = in_fold.filter(pc.equal(in_fold["role"], "test"))
        assert tuple(tested["clip_id"].to_pylist()) == fold.test_clips
    assert folds_table([]).num_rows == 0


@pytest.mark.parametrize(
    ("speakers", "clips", "scheme", "options", "message"),
    [
        (["a", "a"], ["1", "2"], "loso", {}, "at least 2 speakers"),
        (["a", "b", "c"], ["1", "2", "3"], "losgo", {"k": 4}, "k=4"),
        (["a", "b"], ["1", "2", "3"], "loso", {}, "2 speakers for 3 clips"),
        (["a", "b", "c"], ["1", "2", "1"], "loso", {}, "repeated: ['1']"),
        (["a", "b"], ["1", "2"], "loso", {"val_speakers": 1}, "lower val_speakers"),
        (["a", "b", "c"], ["1", "2", "3"], "speakers", {}, "needs train.split.test_speakers"),
        (["a", "b", "c"], ["1", "2", "3"], "speakers", {"test_speakers": ["z"]}, "test speakers ['z'] have no clips"),
        (["a", "b", "c"], ["1", "2", "3"], "fixed", {"shares": (0.5, 0.2, 0.2)}, "summing to 1"),
        (["a", "b", "c"], ["1", "2", "3"], "fixed", {"shares": (0.9, 0.1, 0.0)}, "test share above 0"),
        (["a", "b"], ["1", "2"], "fixed", {}, "at least 1 training speaker"),
    ],
)
def test_impossible_splits_raise_a_clear_error(speakers, clips, scheme, options, message):
    with pytest.raises(SplitError, match=re.escape(message)):
        make_folds(speakers, clips, SplitParams(scheme=scheme, **options))


def test_settings_no_split_can_use_are_refused_when_read():
    with pytest.raises(ValueError, match="'loso', 'losgo', 'fixed' or 'speakers'"):
        SplitParams(scheme="kfold")
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        SplitParams(val_speakers=-1)
    with pytest.raises(ValueError, match="greater than or equal to 2"):
        SplitParams(scheme="losgo", k=1)


def test_named_test_speakers_give_one_fold_validated_on_named_or_drawn_speakers():
    (drawn,) = make_folds(SPEAKERS, CLIPS, SplitParams(scheme="speakers", test_speakers=["s2", "s7"], val_speakers=1))
    assert drawn.name == "speakers" and drawn.test_speakers == ("s2", "s7")
    _assert_speaker_independent(drawn, val_count=1)
    split = SplitParams(scheme="speakers", test_speakers=["s2"], validation_speakers=["s1", "s8"])
    (named,) = make_folds(SPEAKERS, CLIPS, split)
    assert named.val_speakers == ("s1", "s8") and named.test_speakers == ("s2",)
    _assert_speaker_independent(named)


def test_explicit_speaker_lists_must_cover_each_speaker_once():
    speakers, clips = ["a", "b", "c", "d"], ["1", "2", "3", "4"]
    with pytest.raises(SplitError, match=r"in several lists \['a'\]"):
        fixed_split(speakers, clips, train=["a", "b"], validation=["a"], test=["c", "d"])
    with pytest.raises(SplitError, match=r"in no list \['d'\]"):
        fixed_split(speakers, clips, train=["a", "b"], validation=[], test=["c"])
    with pytest.raises(SplitError, match=r"without clips \['z'\]"):
        fixed_split(speakers, clips, train=["a", "b", "z"], validation=["d"], test=["c"])


def test_losgo_on_emodb_speakers(shared_data: Path):
    """EmoDB sample: 6 speakers with 58, 55, 49, 43, 38 and 35 clips; 3 groups of 93, 93 and 92 clips."""
    files = sorted((shared_data / "emodb" / "wav").glob("*.wav"))
    speakers = [path.name[:2] for path in files]
    assert Counter(speakers) == {"08": 58, "11": 55, "03": 49, "09": 43, "10": 38, "12": 35}
    folds = make_folds(speakers, [path.stem for path in files], SplitParams(scheme="losgo", k=3, seed=0))
    assert sorted(len(fold.test_clips) for fold in folds) == [92, 93, 93]
    assert sorted(clip for fold in folds for clip in fold.test_clips) == [path.stem for path in files]
    for fold in folds:
        assert len(fold.val_speakers) == 1
        assert not set(fold.test_speakers) & (set(fold.train_speakers) | set(fold.val_speakers))
