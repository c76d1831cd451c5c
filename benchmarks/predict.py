"""Wall time, real-time factor and peak memory of `avemo predict` on a 10-minute talking-face video.

    .venv/bin/python benchmarks/predict.py [--minutes 10] [--model data/models/gfbp] [--window-s 60 ...]
                                           [--video PATH]

The video is the talking clips of AVEMO_SHARED_DATA (default ../shared/data) concatenated in a loop up
to the length asked, at 512 x 512 and 25 fps, written with the imageio-ffmpeg binary (to --video, kept
for re-runs, or to a temporary folder). Each --window-s runs in a fresh process, so its peak RSS is its
own: the baseline after loading the models, after each window the peak so far and the resident size
then (which tells a leak, growing window after window, from one heavier window raising the peak), and
the overall peak. RTF = wall time / media duration.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIDE, FPS = 512, 25


def build_video(clips_dir: Path, minutes: float, out: Path) -> Path:
    """The talking clips one after another, looped until ``minutes`` of media, with their own audio."""
    import imageio_ffmpeg

    from tasks.probe import probe

    clips = sorted(clips_dir.glob("*.mp4"))
    if not clips:
        sys.exit(f"no talking clips in {clips_dir}; set AVEMO_SHARED_DATA to the folder holding talking/")
    chosen, total = [], 0.0
    for clip in itertools.cycle(clips):
        if total >= minutes * 60:
            break
        chosen.append(clip)
        total += probe(clip).duration_s or 0.0
    inputs = [arg for clip in chosen for arg in ("-i", str(clip))]
    graph = "".join(
        f"[{i}:v]scale={SIDE}:{SIDE},fps={FPS},setsar=1,format=yuv420p[v{i}];"
        f"[{i}:a]aresample=16000,aformat=sample_fmts=fltp:channel_layouts=mono[a{i}];"
        for i in range(len(chosen))
    )
    graph += "".join(f"[v{i}][a{i}]" for i in range(len(chosen))) + f"concat=n={len(chosen)}:v=1:a=1[v][a]"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        *inputs,
        "-filter_complex",
        graph,
        "-map",
        "[v]",
        "-map",
        "[a]",
        "-t",
        f"{minutes * 60:.3f}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "23",
        "-c:a",
        "aac",
        "-b:a",
        "96k",
        str(out),
    ]
    subprocess.run(command, check=True)
    return out


def measure(video: Path, model: Path, window_s: float) -> dict:
    """Run in a fresh process: predict ``video`` and report time and memory."""
    from tasks.clip import face_models
    from tasks.predict.compatibility import check_media, load_predictor
    from tasks.predict.speakers import predict_group
    from tasks.predict.windows import FileFailure

    started = time.perf_counter()
    predictor = load_predictor(model)
    info = check_media(predictor, video)
    if "video" in predictor.needs:
        face_models(predictor.params)  # loaded once per process, before the clock of the file starts
    loading = time.perf_counter() - started
    baseline = _peak_rss_mb()
    peaks: list[float] = []
    resident: list[float] = []

    def after_window() -> None:
        peaks.append(_peak_rss_mb())
        resident.append(_current_rss_mb())

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        (result,) = predict_group(
            predictor, [(video, info)], None, Path(tmp), window_s=window_s, batch_size=32, on_window=after_window
        )
    wall = time.perf_counter() - started
    if isinstance(result, FileFailure):
        sys.exit(f"prediction failed: {result.stage}: {result.reason}")
    return {
        "window_s": window_s,
        "media_s": result.duration_s,
        "windows": result.windows,
        "segments": len(result.segments),
        "emotion": result.emotion,
        "model_loading_s": loading,
        "wall_s": wall,
        "rtf": wall / result.duration_s,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_rss_after_window_mb": peaks,
        "rss_after_window_mb": resident,
    }


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    """Resident size now (Linux /proc), not the peak so far."""
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model", type=Path, default=REPO / "data" / "models" / "gfbp")
    parser.add_argument("--window-s", type=float, nargs="+", default=[60.0])
    parser.add_argument("--video", type=Path, help="where to keep the long video (reused when it exists)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process's entry
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.model, args.window_s[0])))
        return

    data = Path(os.environ.get("AVEMO_SHARED_DATA", REPO.parent / "shared" / "data"))
    with tempfile.TemporaryDirectory(prefix="avemo-bench-predict-") as tmp:
        video = args.video or Path(tmp) / "long.mp4"
        if not video.exists():
            started = time.perf_counter()
            build_video(data / "talking", args.minutes, video)
            print(f"built {video} ({video.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s")
        for window_s in args.window_s:
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--measure",
                    str(video),
                    "--model",
                    str(args.model),
                    "--window-s",
                    str(window_s),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            print(
                f"window {figures['window_s']:g} s: {figures['media_s']:.0f} s of media, {figures['windows']} windows, "
                f"{figures['segments']} segments -> {figures['emotion']}; wall {figures['wall_s']:.0f} s, "
                f"RTF {figures['rtf']:.3f} (models loaded in {figures['model_loading_s']:.1f} s); peak RSS "
                f"{figures['peak_rss_mb']:.0f} MB (after loading the models {figures['baseline_rss_mb']:.0f} MB; "
                f"peak after each window: {' '.join(f'{mb:.0f}' for mb in figures['peak_rss_after_window_mb'])}; "
                f"resident after each window: {' '.join(f'{mb:.0f}' for mb in figures['rss_after_window_mb'])})"
            )


if __name__ == "__main__":
    main()
