"""Does a fresh ``make demo`` print the committed figures? Each system's metrics.json as the run left it
beside the one committed in git, within a tolerance; exit 1 when one differs by more.

    .venv/bin/python benchmarks/check_demo.py [--tolerance 0.0] [--tolerance-for avef=0.125] [--ref HEAD]

CI runs it after ``make demo`` (``.ci/run``). The tolerances are what a different CPU type can move a
system's metrics by (docs/training.md, "Figures across CPU types", measured by
benchmarks/cpu_divergence.py): ``--tolerance`` for every system, ``--tolerance-for SYSTEM=T`` for one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
METRICS = ("uar", "accuracy", "macro_f1")


def committed(path: Path, ref: str) -> dict[str, float] | None:
    shown = subprocess.run(
        ["git", "show", f"{ref}:{path.relative_to(REPO)}"], cwd=REPO, capture_output=True, text=True, check=False
    )
    return json.loads(shown.stdout) if shown.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tolerance", type=float, default=0.0, help="largest accepted absolute difference")
    parser.add_argument("--tolerance-for", nargs="*", default=[], metavar="SYSTEM=T", help="one system's tolerance")
    parser.add_argument("--ref", default="HEAD", help="the git revision holding the expected metrics")
    args = parser.parse_args()
    tolerances = {name: float(value) for name, value in (item.split("=") for item in args.tolerance_for)}
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    evaluations = REPO / params["evaluate"]["out_dir"]
    worst, failed = 0.0, []
    print(f"{'system':<12} {'metric':<9} {'committed':>9} {'this run':>9}")
    for system in params["train"]["systems"]:
        path = evaluations / system / "metrics.json"
        expected = committed(path, args.ref)
        if expected is None or not path.exists():
            failed.append(f"{system}: {'no committed metrics' if expected is None else 'the run wrote none'}")
            continue
        got = json.loads(path.read_text())
        tolerance = tolerances.get(system, args.tolerance)
        for metric in METRICS:
            difference = abs(got[metric] - expected[metric])
            worst = max(worst, difference)
            mark = "" if difference <= tolerance else f"  <- differs by more than {tolerance}"
            print(f"{system:<12} {metric:<9} {expected[metric]:9.3f} {got[metric]:9.3f}{mark}")
            if difference > tolerance:
                failed.append(f"{system} {metric}: {got[metric]:.3f}, committed {expected[metric]:.3f}")
    print(f"largest difference {worst:.3f} (tolerance {args.tolerance}, {tolerances or 'no other'})")
    if failed:
        sys.exit("the demo's metrics differ from the committed ones:\n  " + "\n  ".join(failed))


if __name__ == "__main__":
    main()
