"""What batching buys MTCNN's networks on this CPU: forward time per input against the batch size.

    .venv/bin/python benchmarks/mtcnn_batch.py [--batches 1,4,16,64] [--threads 1] [--repeats 20]

Issue 13 asks whether batching key frames (of one clip or of several) in one forward would speed the face
stage up. The cascade's inputs have fixed shapes per network: PNet reads a search region's pyramid
levels (here the levels of a 3 x 180 px face region: 120, 85, 60, 43 and 30 px squares), RNet 24 x 24 and
ONet 48 x 48 candidates. Each is run with ``--batches`` inputs per forward, in the channels-last layout
the pipeline uses, ``--repeats`` times after a warm-up; the figure is the median time per input, and the
speed-up is batch 1's over the largest batch's; the PNet row sums one search's five levels.
Writes ``benchmarks/results/mtcnn_batch.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from models.mtcnn import MTCNNNets

REPO = Path(__file__).resolve().parents[1]
PNET_LEVELS = (120, 85, 60, 43, 30)  # px: a 180 px face's search region on the levels it is searched at


def per_input_ms(net: torch.nn.Module, shape: tuple[int, int, int], batch: int, repeats: int) -> float:
    inputs = torch.rand(batch, *shape).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        net(inputs)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            net(inputs)
            times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times) / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,4,16,64", help="inputs per forward")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the pipeline: 1 per clip worker)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "mtcnn_batch.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    nets = MTCNNNets().to(memory_format=torch.channels_last)
    inputs = {f"pnet {side}x{side}": (nets.pnet, (3, side, side)) for side in PNET_LEVELS}
    inputs |= {"rnet 24x24": (nets.rnet, (3, 24, 24)), "onet 48x48": (nets.onet, (3, 48, 48))}
    rows = []
    print(f"{'input':14s} " + " ".join(f"{'batch ' + str(b):>10s}" for b in batches) + f" {'speed-up':>9s}  (ms/input)")
    for name, (net, shape) in inputs.items():
        times = [per_input_ms(net, shape, batch, args.repeats) for batch in batches]
        rows.append({"input": name, "ms_per_input": dict(zip(map(str, batches), times, strict=True))})
        rows[-1]["speedup"] = times[0] / times[-1]
        print(f"{name:14s} " + " ".join(f"{t:10.3f}" for t in times) + f" {times[0] / times[-1]:8.2f}x", flush=True)
    levels = [sum(row["ms_per_input"][str(b)] for row in rows if row["input"].startswith("pnet")) for b in batches]
    print(f"{'pnet, 5 levels':14s} " + " ".join(f"{t:10.3f}" for t in levels) + f" {levels[0] / levels[-1]:8.2f}x")
    result = {
        "command": " ".join(["benchmarks/mtcnn_batch.py", *sys.argv[1:]]),
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "torch_threads": args.threads,
        "rows": rows,
        "pnet_search_ms": dict(zip(map(str, batches), levels, strict=True)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
