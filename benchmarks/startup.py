"""What a command costs before it works: the wall time of ``avemo --help``, a no-op ``avemo preprocess``,
a preprocess whose every clip stage is cached (``--force``), and ``avemo predict`` of one clip, each split
into imports, Prefect's server start and the work itself.

    .venv/bin/python benchmarks/startup.py [--features data/features] [--model data/models/amfbp]
                                           [--clip data/sample_corpus/VideoMP4/1001_DFA_ANG_XX.mp4] [--repeat 3]

Run it after ``make demo`` (it reads the demo's manifest, features and model; it writes nothing there:
the cached preprocess writes to a temporary folder). Each figure is the median of ``--repeat`` runs, on
an otherwise idle machine. Imports are timed by a fresh interpreter importing exactly what the command
imports; the server start by a fresh interpreter running an empty Prefect flow, less Prefect's import;
the work is the rest of the command's wall time.

For predict the clip's own compute is measured apart: a fresh interpreter predicts the clip twice
(``flows.predict.predict_files``), and the second call, with everything loaded, is its compute; the
first call's extra is loading the models. The overhead, wall time less that compute, is split into
torch's own import, pandas (which pyarrow imports on its first array), the rest of the imports, model
loading and the remainder (the interpreter, the command line, writing the output).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AVEMO = Path(sys.executable).with_name("avemo")
EMPTY_FLOW = "from prefect import flow\n@flow\ndef empty():\n    pass\nempty()\n"
PREDICT_TWICE = """
import json, logging, sys, time
from pathlib import Path
from flows.predict import predict_files
log = logging.getLogger("startup"); log.disabled = True
started = time.perf_counter()
import pandas  # what pyarrow's first array would import during the first call
seconds = [time.perf_counter() - started]
for _ in range(2):
    started = time.perf_counter()
    predict_files([Path(sys.argv[1])], Path(sys.argv[2]), device="cpu", window_s=60.0, batch_size=32, logger=log)
    seconds.append(time.perf_counter() - started)
print(json.dumps(seconds))
"""


def wall(command: list[str], repeat: int, env: dict[str, str] | None = None) -> float:
    """The median wall time of ``command`` (which must succeed), in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, check=False)
        times.append(time.perf_counter() - started)
        if result.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-1500:]}\n{result.stderr[-3000:]}")
    return statistics.median(times)


def imports(modules: list[str], repeat: int) -> float:
    """A fresh interpreter importing ``modules``, less the interpreter's own start, both ended without
    Python's teardown (with torch loaded that takes ~0.7 s, which the command's work then includes)."""
    end = "import os\nos._exit(0)\n"  # not Python's teardown of the modules: that is the command's to pay
    code = "".join(f"import {m}\n" for m in modules) + end
    return max(0.0, wall([sys.executable, "-c", code], repeat) - wall([sys.executable, "-c", end], repeat))


def predict_compute(clip: Path, model: Path, repeat: int) -> tuple[float, float, float]:
    """(the clip's own compute, model loading, pandas' import): medians of the second call, of the first
    less the second, and of importing pandas before them."""
    runs = []
    for _ in range(repeat):
        result = subprocess.run(
            [sys.executable, "-c", PREDICT_TWICE, str(clip), str(model)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return (
        statistics.median(r[2] for r in runs),
        statistics.median(r[1] - r[2] for r in runs),
        statistics.median(r[0] for r in runs),
    )


def measure(
    label: str, command: list[str], modules: list[str], server: float, repeat: int, env: dict[str, str] | None = None
) -> dict[str, float | str]:
    total = wall(command, repeat, env)
    imported = imports(modules, repeat)
    row = {"command": label, "wall_s": total, "imports_s": imported, "server_s": server}
    row["work_s"] = max(0.0, total - imported - server)
    print(f"{label:<44} {total:6.2f} s   imports {imported:5.2f}   server {server:5.2f}   work {row['work_s']:5.2f}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=REPO / "data" / "manifest.parquet")
    parser.add_argument("--features", type=Path, default=REPO / "data" / "features")
    parser.add_argument("--model", type=Path, default=REPO / "data" / "models" / "amfbp")
    parser.add_argument(
        "--clip", type=Path, default=REPO / "data" / "sample_corpus" / "VideoMP4" / "1001_DFA_ANG_XX.mp4"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "startup.json")
    args = parser.parse_args()
    for needed in (args.manifest, args.features / "clips.parquet", args.model, args.clip):
        if not needed.exists():
            sys.exit(f"{needed} not found: run `make demo` first (or pass --manifest/--features/--model/--clip)")
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)  # the temporary server, as a newcomer has it
    prefect = imports(["prefect"], args.repeat)
    server = max(0.0, wall([sys.executable, "-c", EMPTY_FLOW], args.repeat, env) - prefect)
    print(f"Prefect: import {prefect:.2f} s, a temporary server started and stopped for one flow {server:.2f} s\n")
    rows = [
        measure("avemo --help", [str(AVEMO), "--help"], ["avemo.cli"], 0.0, args.repeat, env),
        measure(
            "avemo preprocess (unchanged corpus: no-op)",
            [str(AVEMO), "preprocess", str(args.manifest), "--out", str(args.features)],
            ["avemo.cli", "avemo.freshness"],
            0.0,
            args.repeat,
            env,
        ),
    ]
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copytree(args.features, Path(scratch) / "features")
        rows.append(
            measure(
                "avemo preprocess --force (every stage cached)",
                [str(AVEMO), "preprocess", str(args.manifest), "--out", str(Path(scratch) / "features"), "--force"],
                ["avemo.cli", "flows.preprocess"],
                server,
                args.repeat,
                env,
            )
        )
    predict = [str(AVEMO), "predict", str(args.clip), "--model", str(args.model)]
    row = measure(
        f"avemo predict (one {args.clip.suffix} clip)", predict, ["avemo.cli", "flows.predict"], 0.0, args.repeat
    )
    compute, loading, pandas_import = predict_compute(args.clip, args.model, args.repeat)
    torch_import = imports(["torch"], args.repeat)
    overhead = {
        "torch_import_s": torch_import,
        "pandas_import_s": pandas_import,
        "other_imports_s": max(0.0, float(row["imports_s"]) - torch_import),
        "model_loading_s": loading,
    }
    overhead["remainder_s"] = max(0.0, float(row["wall_s"]) - compute - sum(overhead.values()))
    row.update(compute_s=compute, overhead_s=float(row["wall_s"]) - compute, overhead=overhead)
    print(
        f"  its own compute {compute:.2f} s; overhead {row['overhead_s']:.2f} s: "
        + ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in overhead.items())
    )
    rows.append(row)
    result = {
        "command": " ".join(["benchmarks/startup.py", *sys.argv[1:]]),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "prefect_import_s": prefect,
        "prefect_server_s": server,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
