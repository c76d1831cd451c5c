"""The per-clip stage cache: keys follow what produced a result; entries appear whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from avemo.cache import StageCache, stage_key


def test_key_changes_with_source_params_and_code() -> None:
    base = stage_key("audio", "abc", {"vad": {"aggressiveness": 2}}, "code1")
    assert base == stage_key("audio", "abc", {"vad": {"aggressiveness": 2}}, "code1")
    assert base != stage_key("audio", "abd", {"vad": {"aggressiveness": 2}}, "code1")
    assert base != stage_key("audio", "abc", {"vad": {"aggressiveness": 3}}, "code1")
    assert base != stage_key("audio", "abc", {"vad": {"aggressiveness": 2}}, "code2")
    assert base != stage_key("faces", "abc", {"vad": {"aggressiveness": 2}}, "code1")


def test_store_and_load_named_tables(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    assert cache.load("audio", "k" * 32) is None
    tables = {"segments": pa.table({"x": [1, 2]}), "clip": pa.table({"y": [0.5]})}
    cache.store("audio", "k" * 32, tables)
    loaded = cache.load("audio", "k" * 32)
    assert set(loaded) == {"segments", "clip"} and loaded["segments"].equals(tables["segments"])
    cache.store("audio", "k" * 32, tables)  # a second worker storing the same key is harmless
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temporary leftovers
