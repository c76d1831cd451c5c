"""Where results differ across CPU types: the same clips preprocessed and one system trained under each
library's instruction-set override, compared with this CPU's native run, stage by stage.

    .venv/bin/python benchmarks/cpu_divergence.py [--manifest data/manifest.parquet] [--clips 8]
                                                  [--system amfbp] [--epochs 3] [--work DIR]

Another CPU type makes torch, oneDNN, OpenBLAS and CTranslate2 pick other kernels (AVX-512 here, AVX2 on
most laptops and older servers, plain C without SIMD). Each library can be forced to the kernels of
another CPU by an environment variable, which is how this script imitates one: every variant runs
``avemo preprocess`` on the first ``--clips`` clips of the manifest (its own stage cache) and ``avemo
train`` + ``avemo evaluate`` of ``--system`` for ``--epochs`` epochs on its own features. It prints, per
variant, the first feature table and column that differ from the native run and by how much, then the
first epoch's training loss and the pooled UAR, and writes ``benchmarks/results/cpu_divergence.json``.
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
    """Preprocess, train and evaluate under ``overrides``; the variant's folder."""
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
        "models": {args.system: models.get(args.system) or {}},
    }
    params_file = folder / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    env = {**os.environ, **overrides, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    started = time.perf_counter()
    run([str(AVEMO), "preprocess", "--force", "--params", str(params_file)], env, folder)
    run([str(AVEMO), "train", "--system", args.system, "--params", str(params_file)], env, folder)
    run([str(AVEMO), "evaluate", "--system", args.system, "--params", str(params_file)], env, folder)
    print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def first_difference(native: Path, other: Path) -> dict[str, Any] | None:
    """The first table (in pipeline order) and column whose values differ, with the largest difference."""
    for table in TABLES:
        a, b = native / "features" / f"{table}.parquet", other / "features" / f"{table}.parquet"
        if not a.exists():
            continue
        for column in compare_tables(pq.read_table(a), pq.read_table(b)):
            if not column["equal"]:
                return {"table": table, **column}
    return None


def training(folder: Path, system: str) -> dict[str, Any]:
    with (folder / "eval" / system / "learning_curve.csv").open() as f:
        curve = list(csv.DictReader(f))
    metrics = json.loads((folder / "eval" / system / "metrics.json").read_text())
    first = [float(r["train_loss"]) for r in curve if r["epoch"] == "1"]
    return {"first_epoch_train_loss": first, "uar": metrics["uar"], "fold_uar": metrics["fold_uar"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=REPO / "data" / "manifest.parquet")
    parser.add_argument("--clips", type=int, default=8, help="the first N clips of the manifest")
    parser.add_argument("--system", default="amfbp")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work", type=Path, default=REPO / "data" / "benchmarks" / "cpu_divergence")
    parser.add_argument("--variants", nargs="*", help="only these variants (their names' first words)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cpu_divergence.json")
    args = parser.parse_args()
    if not args.manifest.exists():
        sys.exit(f"{args.manifest} not found: run `make demo` first, or pass --manifest")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    manifest = work / "manifest.parquet"
    table = pq.read_table(args.manifest)
    pq.write_table(table.slice(0, args.clips).replace_schema_metadata(table.schema.metadata), manifest)
    chosen = {k: v for k, v in VARIANTS.items() if not args.variants or k == "native" or k.split()[0] in args.variants}
    folders = {name: variant_run(name, overrides, manifest, work, args) for name, overrides in chosen.items()}
    rows = []
    native = training(folders["native"], args.system)
    for name, folder in folders.items():
        row = {"variant": name, "env": chosen[name], **training(folder, args.system)}
        row["first_difference"] = None if name == "native" else first_difference(folders["native"], folder)
        row["loss_difference"] = max(
            (abs(a - b) for a, b in zip(row["first_epoch_train_loss"], native["first_epoch_train_loss"], strict=True)),
            default=0.0,
        )
        rows.append(row)
        diff = row["first_difference"]
        where = "identical features" if diff is None else f"{diff['table']}.{diff['column']}: {diff['detail']}"
        print(f"{name:<52} {where}; first-epoch loss +-{row['loss_difference']:.2e}; UAR {row['uar']:.3f}")
    result = {
        "command": " ".join(["benchmarks/cpu_divergence.py", *sys.argv[1:]]),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": _cpu(),
        "clips": args.clips,
        "system": args.system,
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
