"""Recognition quality on a real corpus: avemo's audio systems through its own CLI, beside an independent
openSMILE + scikit-learn reference on the same leave-one-speaker-out folds, in one run.

    .venv/bin/python benchmarks/quality.py --corpus emodb [--systems fusion logreg ...] [--work DIR]
                                           [--with-slow] [--whisper-pad 0 10 30] [--rtf-files 40] [--out FILE]

1. ``avemo ingest`` and ``avemo preprocess`` (front-ends egemaps, compare and whisper, speed perturbation
   0.9 and 1.1) write the corpus's features to the work folder; the stage cache there makes a second run
   fast.
2. Every run of RUNS whose system is asked for: ``avemo train`` then ``avemo evaluate``, with the recipe
   of the repository's params.yaml (``models.SYSTEM``) and only the run's front-end and switches changed.
3. The reference, written without avemo: ``opensmile.Smile(eGeMAPSv02, Functionals).process_file`` per
   file, each speaker standardised on its own files, ``LogisticRegression(C=0.1, class_weight="balanced")``,
   one fold per speaker, labels and speakers read from the EmoDB file names.
4. Each front-end's real-time factor on one core: its extraction alone (decoding included), wall time in
   this process over the first ``--rtf-files`` files on one thread, with and without the speed-perturbed
   copies; run it on an otherwise idle machine.

Prints one table and writes it to ``benchmarks/results/quality_CORPUS.json`` with ``best_system``, the
system a user should pick (highest pooled UAR), and the issue's targets, met or not. Data come from
AVEMO_SHARED_DATA (default ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
AVEMO = Path(sys.executable).with_name("avemo")
DATA = Path(os.environ.get("AVEMO_SHARED_DATA", REPO.parent / "shared" / "data"))
CORPORA = {"emodb": ("emodb", "emodb")}  # --corpus -> (folder in the shared data, ingest format)
FRONTENDS = ["egemaps", "compare", "whisper"]
SPEEDS = [0.9, 1.1]
# EmoDB's emotion letter (the sixth character of a file name) -> its emotion
EMODB_EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness"}
EMODB_EMOTIONS["N"] = "neutral"


@dataclass(frozen=True)
class Run:
    """One row of the table: a system, its front-end (None: params.yaml's), and switches over its recipe."""

    label: str
    system: str
    frontend: str | list[str] | None = None
    train: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    slow: bool = False  # a from-scratch CNN on spectrograms: tens of minutes; only with --with-slow


RUNS = [
    Run("fusion", "fusion"),
    Run("fusion, no speed perturbation", "fusion", train={"speed_perturbation": False}, note="recipe effect"),
    Run("logreg@compare", "logreg", "compare"),
    Run("logreg@egemaps", "logreg", "egemaps"),
    Run("logreg@whisper", "logreg", "whisper"),
    Run(
        "logreg@egemaps, global standardisation",
        "logreg",
        "egemaps",
        train={"speaker_normalisation": False, "speed_perturbation": False},
        note="recipe effect",
    ),
    Run("svm@egemaps", "svm", "egemaps"),
    Run("svm@compare", "svm", "compare"),
    Run("audio@linear", "audio", "linear", note="the FBP audio stream, its paper's front-end", slow=True),
    Run("audio@compare", "audio", "compare"),
    Run("avef_audio@logmel", "avef_audio", "logmel", note="AVEF's audio path, its paper's front-end", slow=True),
    Run("avef_audio@compare", "avef_audio", "compare"),
]
PAPER_SYSTEMS = ("audio", "avef_audio")


def avemo(*args: str, params: Path) -> float:
    """Run one avemo command with ``params``; its wall time in seconds."""
    started = time.perf_counter()
    command = [str(AVEMO), *args, "--params", str(params)]
    print("$", " ".join(command[1:]), flush=True)
    result = subprocess.run(command, cwd=params.parent, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"avemo {args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return time.perf_counter() - started


def write_params(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def prepare(work: Path, corpus: Path, corpus_format: str, pad_to_s: float | None) -> tuple[Path, dict[str, Any]]:
    """Ingest and preprocess; the features folder and the preprocess section used."""
    suffix = "" if pad_to_s is None else f"_pad{pad_to_s:g}"
    preprocess: dict[str, Any] = {
        "out_dir": str(work / f"features{suffix}"),
        "cache_dir": str(work / "cache"),
        "frontends": FRONTENDS if pad_to_s is None else ["whisper"],
        "speed_perturbation": SPEEDS,
    }
    if pad_to_s is not None:
        preprocess["whisper"] = {"pad_to_s": pad_to_s}
    params = write_params(
        work / f"params_preprocess{suffix}.yaml",
        {
            "ingest": {"corpus_dir": str(corpus), "format": corpus_format, "manifest": str(work / "manifest.parquet")},
            "preprocess": preprocess,
        },
    )
    if not (work / "manifest.parquet").exists():
        avemo("ingest", params=params)
    avemo("preprocess", params=params)
    return Path(preprocess["out_dir"]), preprocess


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def shipped_recipe(system: str) -> dict[str, Any]:
    models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    return dict(models.get(system) or {})


def train_and_evaluate(run: Run, work: Path, features: Path) -> dict[str, Any]:
    recipe = shipped_recipe(run.system)
    if run.frontend is not None:
        recipe["frontend"] = run.frontend
    recipe["train"] = {**(recipe.get("train") or {}), **run.train}
    name = slug(run.label)
    models, evaluation = work / "models" / name, work / "eval" / name
    params = write_params(
        work / f"params_{name}.yaml",
        {
            "train": {"features_dir": str(features), "out_dir": str(models)},
            "evaluate": {"out_dir": str(evaluation)},
            "models": {run.system: recipe},
        },
    )
    train_s = avemo("train", "--system", run.system, params=params)
    avemo("evaluate", "--system", run.system, params=params)
    metrics = json.loads((evaluation / run.system / "metrics.json").read_text())
    fits = json.loads((models / run.system / "train.json").read_text())["runs"]
    frontend = recipe.get("frontend")
    return {
        "label": run.label,
        "system": run.system,
        "frontend": "+".join(frontend) if isinstance(frontend, list) else frontend or "paper",
        "uar": metrics["uar"],
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "fold_uar": metrics["fold_uar"],
        "train_s": train_s,
        "fit_s": sum(r["seconds"] for r in fits),
        "recipe": recipe,
        "note": run.note,
    }


def reference(corpus: Path) -> dict[str, Any]:
    """openSMILE eGeMAPSv02 functionals + logistic regression, per-speaker standardisation, LOSO; no avemo."""
    import opensmile
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, f1_score

    files = sorted((corpus / "wav").glob("*.wav"))
    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
    )
    started = time.perf_counter()
    x = np.stack([smile.process_file(str(f)).to_numpy()[0] for f in files])
    extraction_s = time.perf_counter() - started
    speakers = np.array([f.name[:2] for f in files])
    y = np.array([EMODB_EMOTIONS[f.name[5]] for f in files])
    for speaker in np.unique(speakers):
        rows = speakers == speaker
        std = x[rows].std(axis=0)
        x[rows] = (x[rows] - x[rows].mean(axis=0)) / np.where(std > 0, std, 1.0)
    predicted = np.empty_like(y)
    fold_uar = {}
    for speaker in np.unique(speakers):
        test = speakers == speaker
        model = LogisticRegression(C=0.1, class_weight="balanced", max_iter=5000).fit(x[~test], y[~test])
        predicted[test] = model.predict(x[test])
        fold_uar[f"loso-{speaker}"] = balanced_accuracy_score(y[test], predicted[test])
    return {
        "label": "reference: openSMILE eGeMAPSv02 + logistic regression (no avemo)",
        "uar": balanced_accuracy_score(y, predicted),
        "accuracy": float(np.mean(y == predicted)),
        "macro_f1": f1_score(y, predicted, average="macro"),
        "fold_uar": fold_uar,
        "extraction_s": extraction_s,
        "files": len(files),
    }


def frontend_rtf(work: Path, features: Path, count: int, pad_sweep: list[float]) -> dict[str, Any]:
    """Each front-end's extraction time per second of audio on one thread, over the first ``count`` clips."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import torch

    from avemo.config import PreprocessParams
    from tasks.audio.frontends import compute_frontend
    from tasks.clip import read_sources

    torch.set_num_threads(1)
    sources, _, _ = read_sources(work / "manifest.parquet")
    sources = sources[:count]
    segments = pq.read_table(features / "segments.parquet", columns=["clip_id", "t_begin", "t_end"])
    seconds = sum(s.info.duration_s or 0.0 for s in sources)
    settings = [(name, None) for name in FRONTENDS] + [("whisper", pad) for pad in pad_sweep]
    out: dict[str, Any] = {"clips": len(sources), "audio_s": seconds}
    for name, pad in settings:
        for speeds in ([], SPEEDS):
            whisper = {"threads": 1} if pad is None else {"threads": 1, "pad_to_s": pad}
            params = PreprocessParams(frontends=[name], workers=1, speed_perturbation=speeds, whisper=whisper)
            clip_segments = {s.clip_id: segments.filter(pc.equal(segments["clip_id"], s.clip_id)) for s in sources}
            compute_frontend(name, sources[0].file, sources[0].info, clip_segments[sources[0].clip_id], params)  # load
            started = time.perf_counter()  # wall time: decoding runs in an ffmpeg process
            for source in sources:
                compute_frontend(name, source.file, source.info, clip_segments[source.clip_id], params)
            key = name if pad is None else f"whisper pad {pad:g} s"
            out[key + (", with speed perturbation" if speeds else "")] = (time.perf_counter() - started) / seconds
    return out


def whisper_pad_runs(work: Path, corpus: Path, corpus_format: str, pads: list[float]) -> list[dict[str, Any]]:
    rows = []
    for pad in pads:
        features, _ = prepare(work, corpus, corpus_format, pad)
        row = train_and_evaluate(Run(f"logreg@whisper, pad {pad:g} s", "logreg", "whisper"), work, features)
        rows.append({**row, "note": "whisper padding sweep"})
    return rows


def targets(rows: list[dict[str, Any]], ref: dict[str, Any], rtf: dict[str, Any], best: dict[str, Any]) -> dict:
    paper = {
        system: max((r for r in rows if r["system"] == system), key=lambda r: r["uar"], default=None)
        for system in PAPER_SYSTEMS
    }
    return {
        "best_uar >= 0.75": best["uar"] >= 0.75,
        "best_uar >= reference + 0.05": best["uar"] >= ref["uar"] + 0.05,
        **{
            f"{system} (best front-end {r['frontend']}) >= 0.60": r["uar"] >= 0.60
            for system, r in paper.items()
            if r is not None
        },
        "best system trains in <= 600 s": best["train_s"] <= 600,
        **{f"{name} RTF <= 0.05 per core": rtf[name] <= 0.05 for name in FRONTENDS},
    }


def print_table(rows: list[dict[str, Any]], ref: dict[str, Any]) -> None:
    print(f"\n{'run':<42} {'front-end':<24} {'UAR':>6} {'acc':>6} {'F1':>6} {'train s':>8}  per-fold UAR")
    for r in [*rows, {**ref, "frontend": "egemaps", "train_s": float("nan")}]:
        folds = " ".join(f"{v:.3f}" for v in r["fold_uar"].values())
        print(
            f"{r['label'][:42]:<42} {r['frontend']:<24} {r['uar']:6.3f} {r['accuracy']:6.3f} {r['macro_f1']:6.3f} "
            f"{r['train_s']:8.1f}  {folds}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="emodb")
    parser.add_argument("--systems", nargs="*", help="only the runs of these systems (default: all)")
    parser.add_argument("--work", type=Path, help="work folder (default: data/benchmarks/quality_CORPUS)")
    parser.add_argument("--with-slow", action="store_true", help="also the paper systems on spectrograms")
    parser.add_argument("--whisper-pad", type=float, nargs="*", default=[], help="also logreg@whisper at these pads")
    parser.add_argument("--rtf-files", type=int, default=40, help="clips timed for the front-ends' RTF")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/quality_CORPUS.json")
    args = parser.parse_args()
    folder, corpus_format = CORPORA[args.corpus]
    corpus = DATA / folder
    if not corpus.is_dir():
        sys.exit(f"{corpus} not found: set AVEMO_SHARED_DATA to the folder holding {folder}/")
    work = (args.work or REPO / "data" / "benchmarks" / f"quality_{args.corpus}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    features, _ = prepare(work, corpus, corpus_format, None)
    runs = [r for r in RUNS if (not args.systems or r.system in args.systems) and (args.with_slow or not r.slow)]
    rows = [train_and_evaluate(run, work, features) for run in runs]
    rows += whisper_pad_runs(work, corpus, corpus_format, args.whisper_pad)
    ref = reference(corpus)
    rtf = frontend_rtf(work, features, args.rtf_files, args.whisper_pad)
    best = max((r for r in rows if not r["note"]), key=lambda r: r["uar"])
    print_table(rows, ref)
    print("\nfront-end RTF per core:", json.dumps(rtf, indent=1))
    result = {
        "corpus": args.corpus,
        "command": " ".join(["benchmarks/quality.py", *sys.argv[1:]]),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version()},
        "commit": _commit(),
        "runs": rows,
        "reference": ref,
        "frontend_rtf_per_core": rtf,
        "best_system": {k: best[k] for k in ("label", "system", "frontend", "uar", "train_s")},
        "targets": targets(rows, ref, rtf, best),
        "wall_s": time.perf_counter() - started,
    }
    out = args.out or REPO / "benchmarks" / "results" / f"quality_{args.corpus}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nbest system: {best['label']} (UAR {best['uar']:.3f}); targets: {json.dumps(result['targets'], indent=1)}")
    print(f"wrote {out}")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _commit() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=False)
    return result.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


if __name__ == "__main__":
    main()
