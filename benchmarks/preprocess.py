"""Real-time factor and peak memory of the whole preprocess, and of each stage, on real videos.

    .venv/bin/python benchmarks/preprocess.py [--corpus cremad|talking|all] [--workers N]

RTF = processing time / media duration (lower is better; 0.05 means 20x faster than real time). The
whole-preprocess figure is the flow's wall time from a cold cache; the per-stage figures are compute
time summed over clips (with several workers they add up to more than the wall time). Prefect's
temporary server start is reported apart: it is paid once per process, not per clip. Data come from
AVEMO_SHARED_DATA (default ../shared/data).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from avemo import schemas
from avemo.config import PreprocessParams
from avemo.parquet_io import read_provenance, write_table
from avemo.provenance import provenance
from flows.preprocess import run_preprocess
from tasks.corpora.manifest import build_manifest, manifest_table

CORPORA = {"cremad": ("cremad", "cremad"), "talking": ("talking", "csv")}


def _placeholder_labels(folder: Path, work: Path) -> Path:
    """The talking videos carry no labels; a CSV beside them with a placeholder label lets ingest read them."""
    lines = ["path,speaker,label"] + [f"{p.name},{p.stem.split('_')[0]},neutral" for p in sorted(folder.glob("*.mp4"))]
    labels = work / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    return labels


def bench(name: str, data: Path, work: Path, workers: int) -> dict:
    folder, fmt = CORPORA[name]
    corpus = data / folder
    labels = _placeholder_labels(corpus, work) if fmt == "csv" else None
    rows, _ = build_manifest(corpus, fmt, workers=workers, csv_path=labels)
    manifest = work / f"{name}.parquet"
    write_table(manifest_table(rows), manifest, schemas.MANIFEST, provenance("ingest", {}, corpus_dir=str(corpus)))
    media_s = sum(r.duration_s or 0.0 for r in rows)
    video_s = sum(r.duration_s or 0.0 for r in rows if r.video_width)
    params = PreprocessParams(cache_dir=work / f"cache-{name}", workers=workers)
    started = time.perf_counter()
    summary = run_preprocess(manifest, work / f"features-{name}", params)
    wall = time.perf_counter() - started
    prov = read_provenance(work / f"features-{name}" / "clips.parquet")
    return {
        "name": name,
        "clips": summary.clips,
        "failed": summary.failed,
        "media_s": media_s,
        "video_s": video_s,
        "flow_s": prov["flow_seconds"],
        "wall_s": wall,
        "stages": prov["stage_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=["cremad", "talking", "all"], default="all")
    parser.add_argument("--workers", type=int, default=PreprocessParams().workers)
    args = parser.parse_args()
    data = Path(os.environ.get("AVEMO_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
    if not (data / "cremad").is_dir():
        sys.exit(f"real data not found at {data}; set AVEMO_SHARED_DATA")
    names = ["cremad", "talking"] if args.corpus == "all" else [args.corpus]
    print(f"machine: {os.cpu_count()} CPU cores; workers: {args.workers}")
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            results.append(bench(name, data, work, args.workers))
    for r in results:
        print(
            f"\n{r['name']}: {r['clips']} clips ({r['failed']} failed), {r['media_s']:.1f} s of media "
            f"({r['video_s']:.1f} s with video)"
        )
        print(f"  whole preprocess (flow): {r['flow_s']:.2f} s  RTF {r['flow_s'] / r['media_s']:.4f}")
        print(f"  with Prefect start-up:   {r['wall_s']:.2f} s  RTF {r['wall_s'] / r['media_s']:.4f}")
        for stage, seconds in r["stages"].items():
            base = r["video_s"] if stage != "audio" else r["media_s"]
            print(f"  stage {stage:<14} {seconds:7.2f} s compute  RTF {seconds / base:.4f}")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\npeak memory: {own:.0f} MB (this process), {children:.0f} MB (largest child: ffmpeg or Prefect's server)")


if __name__ == "__main__":
    main()
