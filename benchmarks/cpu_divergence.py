"""Where results differ across CPU types: the same clips preprocessed and one system trained under each
library's instruction-set override, compared with this CPU's native run, stage by stage.

    .venv/bin/python benchmarks/cpu_divergence.py [--manifest data/manifest.parquet] [--clips 24]
                                                  [--systems fusion avef amfbp] [--epochs 12] [--work DIR]
                                                  [--variants torch an] [--reuse]

Another CPU type makes torch, oneDNN, OpenBLAS and CTranslate2 pick other kernels (AVX-512 here, AVX2 on
most laptops and older servers, plain C without SIMD). Each library can be forced to the kernels of
another CPU by an environment variable, which is how this script imitates one: every variant runs
``avemo preprocess`` on the first ``--clips`` clips of the manifest (its own stage cache) and ``avemo
train`` + ``avemo evaluate`` of each of ``--systems`` (default: the demo's ``train.systems``) for
``--epochs`` epochs on its own features. It prints, per variant, every feature table and column that
differs from the native run and by how much, then per system the largest difference of the first
epoch's training loss and the pooled UAR, and writes ``benchmarks/results/cpu_divergence.json``.
``--reuse`` keeps the outputs of an earlier run in ``--work`` (only what is missing runs).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from avemo import schemas
from avemo.parquet_io import read_provenance, read_table, write_table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from compare_features import compare_tables

AVEMO = Path(sys.executable).with_name("avemo")
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "CT2_FORCE_CPU_ISA": "AVX2"}
VARIANTS: dict[str, dict[str, str]] = {
    "native": {},
    "torch AVX2 (ATEN_CPU_CAPABILITY=avx2)": {"ATEN_CPU_CAPABILITY": "avx2"},
    "torch without SIMD (ATEN_CPU_CAPABILITY=default)": {"ATEN_CPU_CAPABILITY": "default"},
    "oneDNN AVX2 (ONEDNN_MAX_CPU_ISA=AVX2)": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "OpenBLAS Haswell (OPENBLAS_CORETYPE=Haswell)": {"OPENBLAS_CORETYPE": "Haswell"},
    "CTranslate2 AVX2 (CT2_FORCE_CPU_ISA=AVX2)": {"CT2_FORCE_CPU_ISA": "AVX2"},
    "an AVX2 CPU (all of the above at AVX2)": {**AVX2, "OPENBLAS_CORETYPE": "Haswell"},
}
TABLES = ("clips", "segments", "frames", "frontend_egemaps", "frontend_compare", "frontend_whisper")


def run(command: list[str], env: dict[str, str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-1500:]}\n{result.stderr[-3000:]}")


def variant_run(name: str, overrides: dict[str, str], manifest: Path, work: Path, args: argparse.Namespace) -> Path:
    """Preprocess, train and evaluate under ``overrides`` (with ``--reuse``, what is missing); its folder."""
    folder = work / name.split(" (")[0].replace(" ", "_")
    folder.mkdir(parents=True, exist_ok=True)
    models = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    params = {
        "ingest": {"manifest": str(manifest)},
        "preprocess": {"out_dir": str(folder / "features"), "cache_dir": str(folder / "cache")},
        "train": {
            "features_dir": str(folder / "features"),
            "out_dir": str(folder / "models"),
            "epochs": args.epochs,
        },
        "evaluate": {"out_dir": str(folder / "eval")},
        "models": {system: models.get(system) or {} for system in args.systems},
    }
    params_file = folder / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    env = {**os.environ, **overrides, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    started = time.perf_counter()
    if not (args.reuse and (folder / "features" / "clips.parquet").exists()):
        run([str(AVEMO), "preprocess", "--force", "--params", str(params_file)], env, folder)
    for system in args.systems:
        if args.reuse and (folder / "eval" / system / "metrics.json").exists():
            continue
        run([str(AVEMO), "train", "--system", system, "--params", str(params_file)], env, folder)
        run([str(AVEMO), "evaluate", "--system", system, "--params", str(params_file)], env, folder)
    print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def differences(native: Path, other: Path) -> list[dict[str, Any]]:
    """Every table (in pipeline order) and column whose values differ, with by how much."""
    found = []
    for table in TABLES:
        a, b = native / "features" / f"{table}.parquet", other / "features" / f"{table}.parquet"
        if a.exists():
            columns = compare_tables(pq.read_table(a), pq.read_table(b))
            found += [{"table": table, **c} for c in columns if not c["equal"]]
    return found


def training(folder: Path, system: str) -> dict[str, Any]:
    with (folder / "eval" / system / "learning_curve.csv").open() as f:
        curve = list(csv.DictReader(f))
    metrics = json.loads((folder / "eval" / system / "metrics.json").read_text())
    first = [float(r["train_loss"]) for r in curve if r["epoch"] == "1"]
    return {"first_epoch_train_loss": first, "uar": metrics["uar"], "fold_uar": metrics["fold_uar"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=REPO / "data" / "manifest.parquet")
    parser.add_argument("--clips", type=int, default=24, help="the first N clips of the manifest")
    parser.add_argument("--systems", nargs="*", help="default: the demo's train.systems")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--reuse", action="store_true", help="keep the outputs of an earlier run in --work")
    parser.add_argument("--work", type=Path, default=REPO / "data" / "benchmarks" / "cpu_divergence")
    parser.add_argument("--variants", nargs="*", help="only these variants (their names' first words)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cpu_divergence.json")
    args = parser.parse_args()
    args.systems = args.systems or yaml.safe_load((REPO / "params.yaml").read_text())["train"]["systems"]
    if not args.manifest.exists():
        sys.exit(f"{args.manifest} not found: run `make demo` first, or pass --manifest")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    manifest = work / "manifest.parquet"
    document = read_provenance(args.manifest) or {}
    corpus = Path(document.get("corpus_dir", args.manifest.parent))  # relative: to where the script runs
    document["corpus_dir"] = str(corpus.resolve())
    rows = read_table(args.manifest, schemas.MANIFEST).slice(0, args.clips)
    write_table(rows, manifest, schemas.MANIFEST, document)
    chosen = {k: v for k, v in VARIANTS.items() if not args.variants or k == "native" or k.split()[0] in args.variants}
    folders = {name: variant_run(name, overrides, manifest, work, args) for name, overrides in chosen.items()}
    rows = []
    native = {system: training(folders["native"], system) for system in args.systems}
    for name, folder in folders.items():
        found = [] if name == "native" else differences(folders["native"], folder)
        systems = {}
        for system in args.systems:
            run_of = training(folder, system)
            losses = zip(run_of["first_epoch_train_loss"], native[system]["first_epoch_train_loss"], strict=True)
            run_of["loss_difference"] = max((abs(a - b) for a, b in losses), default=0.0)
            run_of["uar_difference"] = abs(run_of["uar"] - native[system]["uar"])
            systems[system] = run_of
        rows.append({"variant": name, "env": chosen[name], "feature_differences": found, "systems": systems})
        print(f"\n{name}")
        for d in found:
            print(f"  {d['table']}.{d['column']}: {d['detail']}")
        if not found:
            print("  features identical to the native run")
        for system, r in systems.items():
            print(f"  {system}: first-epoch loss +-{r['loss_difference']:.2e}, UAR {r['uar']:.3f}")
    result = {
        "command": " ".join(["benchmarks/cpu_divergence.py", *sys.argv[1:]]),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": _cpu(),
        "clips": args.clips,
        "systems": args.systems,
        "epochs": args.epochs,
        "variants": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
