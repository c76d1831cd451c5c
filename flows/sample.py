"""``avemo sample``: the built-in synthetic corpus, so every stage has something to chew on offline."""

from __future__ import annotations

from pathlib import Path

from avemo.config import SampleParams
from tasks.sample import write_sample_corpus


def run_sample(out_dir: Path, params: SampleParams) -> list[Path]:
    """Write the corpus of ``params`` (speakers x emotions x sentences, seeded) into ``out_dir``."""
    return write_sample_corpus(out_dir, params.speakers, params.emotions, params.seed, params.sentences)
