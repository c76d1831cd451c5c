"""An audio-visual train/evaluate run on real CREMA-D clips, end to end.

The shared CREMA-D slice has one audio-visual actor (1001), and a speaker-independent split needs at
least three speakers. So the real clips are joined by two synthetic speakers of the built-in sample
corpus, and leave-one-speaker-out makes actor 1001's real clips the test set of their own fold: the
model that scores them never saw that actor. Six clips per speaker cannot give a meaningful score;
this proves the path (real FLV/VP6/MP3 in, faces found, folds, checkpoints, predictions, metrics).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from avemo import schemas
from avemo.config import PreprocessParams, TrainParams
from avemo.parquet_io import write_table
from avemo.provenance import provenance
from flows.evaluate import evaluate_flow
from flows.preprocess import run_preprocess
from flows.train import run_train
from tasks.corpora.manifest import build_manifest, manifest_table
from tasks.sample import write_sample_corpus

EMOTIONS = ["ANG", "HAP", "NEU", "SAD"]  # the emotions both the sample corpus and actor 1001 have


def test_audio_visual_run_on_real_cremad_clips(shared_data: Path, prefect_harness, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "VideoFlash").mkdir(parents=True)
    for emotion in EMOTIONS:  # copied into the test's temporary folder only, never into the repository
        shutil.copy(shared_data / "cremad" / "VideoFlash" / f"1001_DFA_{emotion}_XX.flv", corpus / "VideoFlash")
    write_sample_corpus(corpus, [2001, 2002], EMOTIONS, seed=0, sentences=("DFA",))

    rows, _ = build_manifest(corpus, "cremad", workers=2)
    manifest = tmp_path / "manifest.parquet"
    write_table(manifest_table(rows), manifest, schemas.MANIFEST, provenance("ingest", {}, corpus_dir=str(corpus)))
    features = tmp_path / "features"
    summary = run_preprocess(manifest, features, PreprocessParams(cache_dir=tmp_path / "cache"))
    assert (summary.succeeded, summary.failed) == (12, 0)

    real = [f"1001_DFA_{e}_XX" for e in EMOTIONS]
    segments = pq.read_table(features / "segments.parquet", columns=["clip_id", "n_no_face"]).to_pylist()
    real_segments = [s for s in segments if s["clip_id"] in real]
    assert {s["clip_id"] for s in real_segments} == set(real)
    assert all(s["n_no_face"] == 0 for s in real_segments), "MTCNN finds the actor's face in every frame used"

    models = tmp_path / "models"
    params = TrainParams(features_dir=features, epochs=3, patience=3, batch_size=4)
    runs = run_train("gfbp", params, {}, models)
    assert sorted(r.fold for r in runs) == ["loso-1001", "loso-2001", "loso-2002"]

    metrics = evaluate_flow(system="gfbp", model_dir=models, features_dir=features, out_dir=tmp_path / "eval")
    predictions = pq.read_table(tmp_path / "eval" / "predictions.parquet").to_pylist()
    real_predictions = [p for p in predictions if p["clip_id"] in real]
    assert {p["fold"] for p in real_predictions} == {"loso-1001"}
    assert sorted(p["true"] for p in real_predictions) == ["anger", "happiness", "neutral", "sadness"]
    assert metrics["clips"] == 12 and 0.0 <= metrics["uar"] <= 1.0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["fold_uar"].keys() == {
        "loso-1001",
        "loso-2001",
        "loso-2002",
    }
