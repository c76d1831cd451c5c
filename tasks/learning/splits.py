"""Train/validation/test splits by speaker, never by clip.

A speaker's clips share voice, face and recording session; a split that puts one speaker on both sides
measures speaker recognition, not emotion recognition. Every fold therefore assigns whole speakers to
one role, and draws its validation speakers (for early stopping) from its training speakers only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from avemo.config import SplitParams
from avemo.errors import AvemoError
from avemo.schemas import FOLDS

ROLES: tuple[str, str, str] = ("train", "validation", "test")


class SplitError(AvemoError):
    """The clips, speakers or split settings cannot give a speaker-independent split."""


@dataclass(frozen=True)
class Fold:
    """One split of the corpus; speakers sorted, each speaker's clips in input order."""

    name: str
    train_speakers: tuple[str, ...]
    val_speakers: tuple[str, ...]
    test_speakers: tuple[str, ...]
    clips_by_speaker: Mapping[str, tuple[str, ...]]

    def _clips(self, speakers: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(clip for speaker in speakers for clip in self.clips_by_speaker[speaker])

    @property
    def train_clips(self) -> tuple[str, ...]:
        return self._clips(self.train_speakers)

    @property
    def val_clips(self) -> tuple[str, ...]:
        return self._clips(self.val_speakers)

    @property
    def test_clips(self) -> tuple[str, ...]:
        return self._clips(self.test_speakers)

    def speakers_in(self, role: str) -> tuple[str, ...]:
        return {
            "train": self.train_speakers,
            "validation": self.val_speakers,
            "test": self.test_speakers,
        }[role]


def _group_clips(speakers_per_clip: Sequence[str], clip_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Clips of each speaker (ids compared as strings, so 1001 and "1001" are one speaker)."""
    if len(speakers_per_clip) != len(clip_ids):
        raise SplitError(f"got {len(speakers_per_clip)} speakers for {len(clip_ids)} clips; pass one speaker per clip")
    repeated = sorted(str(clip) for clip, count in Counter(clip_ids).items() if count > 1)
    if repeated:
        raise SplitError(f"clip ids must be unique, repeated: {repeated[:5]}")
    grouped: dict[str, list[str]] = {}
    for speaker, clip in zip(speakers_per_clip, clip_ids, strict=True):
        grouped.setdefault(str(speaker), []).append(str(clip))
    return {speaker: tuple(grouped[speaker]) for speaker in sorted(grouped)}


def _fold(
    name: str,
    clips_by_speaker: dict[str, tuple[str, ...]],
    test: Sequence[str],
    val_count: int,
    rng: np.random.Generator,
) -> Fold:
    """Test speakers given; ``val_count`` validation speakers drawn at random from the rest."""
    tested = set(test)
    rest = [speaker for speaker in clips_by_speaker if speaker not in tested]
    if len(rest) <= val_count:
        raise SplitError(
            f"fold {name}: {len(rest)} speakers outside the test set cannot give {val_count} validation "
            "speakers and at least 1 training speaker; lower val_speakers or k"
        )
    val = set(rng.choice(rest, size=val_count, replace=False).tolist()) if val_count else set()
    return Fold(
        name=name,
        train_speakers=tuple(speaker for speaker in rest if speaker not in val),
        val_speakers=tuple(sorted(val)),
        test_speakers=tuple(sorted(test)),
        clips_by_speaker=clips_by_speaker,
    )


def _balanced_groups(clips_by_speaker: Mapping[str, tuple[str, ...]], k: int, seed: int) -> list[list[str]]:
    """k speaker groups of near-equal clip counts: largest speaker first into the lightest group.

    The seeded shuffle only orders speakers with equal clip counts, so another seed gives another
    grouping of equal balance.
    """
    speakers = list(clips_by_speaker)
    np.random.default_rng(seed).shuffle(speakers)
    speakers.sort(key=lambda speaker: -len(clips_by_speaker[speaker]))  # stable: keeps shuffled ties
    groups: list[list[str]] = [[] for _ in range(k)]
    loads = [0] * k
    for speaker in speakers:
        lightest = min(range(k), key=lambda g: (loads[g], len(groups[g]), g))
        groups[lightest].append(speaker)
        loads[lightest] += len(clips_by_speaker[speaker])
    return groups


def _share_counts(n_speakers: int, shares: tuple[float, float, float]) -> tuple[int, int, int]:
    """Speakers per role for train/validation/test shares; a positive share gets at least 1 speaker."""
    if len(shares) != 3 or min(shares) < 0 or not np.isclose(sum(shares), 1.0) or shares[2] == 0:
        raise SplitError(
            f"shares must be three non-negative train/validation/test fractions summing to 1 with a test "
            f"share above 0, got {shares}"
        )
    val, test = (max(1, round(share * n_speakers)) if share > 0 else 0 for share in shares[1:])
    if n_speakers - val - test < 1:
        raise SplitError(
            f"{n_speakers} speakers cannot give {val} validation, {test} test and at least 1 training "
            "speaker; use more speakers or smaller shares"
        )
    return n_speakers - val - test, val, test


def _loso(clips_by_speaker: dict[str, tuple[str, ...]], split: SplitParams) -> list[Fold]:
    speakers = list(clips_by_speaker)
    if len(speakers) < 2:
        raise SplitError(f"leave-one-speaker-out needs at least 2 speakers, got {len(speakers)}: {speakers}")
    return [
        _fold(
            f"loso-{speaker}", clips_by_speaker, [speaker], split.val_speakers, np.random.default_rng([split.seed, i])
        )
        for i, speaker in enumerate(speakers)
    ]


def _losgo(clips_by_speaker: dict[str, tuple[str, ...]], split: SplitParams) -> list[Fold]:
    k = split.k
    if not 2 <= k <= len(clips_by_speaker):
        raise SplitError(
            f"leave-one-speaker-group-out needs 2 <= k <= number of speakers ({len(clips_by_speaker)}), got k={k}"
        )
    groups = _balanced_groups(clips_by_speaker, k, split.seed)
    return [
        _fold(
            f"losgo-{i + 1}of{k}", clips_by_speaker, group, split.val_speakers, np.random.default_rng([split.seed, i])
        )
        for i, group in enumerate(groups)
    ]


def _fixed(clips_by_speaker: dict[str, tuple[str, ...]], split: SplitParams) -> list[Fold]:
    speakers = list(clips_by_speaker)
    n_train, n_val, _ = _share_counts(len(speakers), split.shares)
    shuffled = list(np.random.default_rng(split.seed).permutation(speakers))
    roles = {"train": shuffled[:n_train], "validation": shuffled[n_train : n_train + n_val]}
    return [_named_fold("fixed", clips_by_speaker, test=shuffled[n_train + n_val :], **roles)]


def _speakers(clips_by_speaker: dict[str, tuple[str, ...]], split: SplitParams) -> list[Fold]:
    """The test (and validation) speakers named; without named validation speakers, ``val_speakers`` of
    them are drawn from the others, as in the cross-validation schemes."""
    if not split.test_speakers:
        raise SplitError("scheme 'speakers' needs train.split.test_speakers: the speakers to test on")
    test = [str(s) for s in split.test_speakers]
    if split.validation_speakers:
        validation = [str(s) for s in split.validation_speakers]
        train = [s for s in clips_by_speaker if s not in set(test) | set(validation)]
        return [_named_fold("speakers", clips_by_speaker, train=train, validation=validation, test=test)]
    unknown = sorted(set(test) - set(clips_by_speaker))
    if unknown:
        raise SplitError(f"test speakers {unknown} have no clips; the corpus's speakers are {list(clips_by_speaker)}")
    return [_fold("speakers", clips_by_speaker, test, split.val_speakers, np.random.default_rng([split.seed, 0]))]


SCHEMES = {"loso": _loso, "losgo": _losgo, "fixed": _fixed, "speakers": _speakers}


def make_folds(speakers_per_clip: Sequence[str], clip_ids: Sequence[str], split: SplitParams) -> list[Fold]:
    """Speaker-independent folds of a corpus, by ``split.scheme``:

    - ``loso``: one fold per speaker, that speaker tested;
    - ``losgo``: ``k`` folds, each testing one group of speakers balanced by clip count;
    - ``fixed``: one fold with speaker ``shares`` for train/validation/test;
    - ``speakers``: one fold testing ``test_speakers`` (a corpus's official or a held-out set), validating
      on ``validation_speakers`` when named.

    Where validation speakers are not given, each fold draws ``val_speakers`` of them from its own
    training speakers. The result depends only on the inputs and ``seed``.
    """
    return SCHEMES[split.scheme](_group_clips(speakers_per_clip, clip_ids), split)


def _named_fold(
    name: str,
    clips_by_speaker: dict[str, tuple[str, ...]],
    *,
    train: Sequence[str],
    validation: Sequence[str],
    test: Sequence[str],
) -> Fold:
    """One fold from explicit speaker lists; every speaker in one list, train and test non-empty."""
    lists = {role: [str(s) for s in speakers] for role, speakers in zip(ROLES, (train, validation, test), strict=True)}
    named = Counter(speaker for speakers in lists.values() for speaker in speakers)
    repeated = sorted(speaker for speaker, count in named.items() if count > 1)
    unknown = sorted(set(named) - set(clips_by_speaker))
    unassigned = sorted(set(clips_by_speaker) - set(named))
    if repeated or unknown or unassigned or not lists["train"] or not lists["test"]:
        raise SplitError(
            "each speaker must be in exactly one of train/validation/test, with train and test non-empty: "
            f"in several lists {repeated}, without clips {unknown}, in no list {unassigned}, "
            f"train {len(lists['train'])}, test {len(lists['test'])} speakers"
        )
    return Fold(
        name=name,
        train_speakers=tuple(sorted(lists["train"])),
        val_speakers=tuple(sorted(lists["validation"])),
        test_speakers=tuple(sorted(lists["test"])),
        clips_by_speaker=clips_by_speaker,
    )


def fixed_split(
    speakers_per_clip: Sequence[str],
    clip_ids: Sequence[str],
    *,
    train: Sequence[str],
    validation: Sequence[str],
    test: Sequence[str],
) -> Fold:
    """One fold from explicit speaker lists, e.g. a corpus's published split; every speaker in one list."""
    clips_by_speaker = _group_clips(speakers_per_clip, clip_ids)
    return _named_fold("fixed", clips_by_speaker, train=train, validation=validation, test=test)


def folds_table(folds: Sequence[Fold]) -> pa.Table:
    """One row per clip per fold (fold, clip_id, speaker, role), to write the split out and audit it."""
    rows = [
        (fold.name, clip, speaker, role)
        for fold in folds
        for role in ROLES
        for speaker in fold.speakers_in(role)
        for clip in fold.clips_by_speaker[speaker]
    ]
    columns = list(zip(*rows, strict=True)) if rows else [(), (), (), ()]
    return pa.Table.from_arrays([pa.array(c, pa.string()) for c in columns], schema=FOLDS)
