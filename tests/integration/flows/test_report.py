"""``avemo report``: the figure data, and a report of a small real run opened in a headless browser.

The browser test trains tiny G-FBP and AG-FBP models on the session's sample features, evaluates them,
writes the report with the CLI and opens it in Debian's chromium with name resolution disabled, so a
page that needed the network would lose its images.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from avemo.cli import app
from avemo.config import TrainParams
from flows.evaluate import evaluate_flow
from flows.report import build_report
from flows.train import run_train
from models.fbp import AudioEncoder
from models.registry import InputShapes, build_model
from tasks.report.analysis import (
    MIN_TSNE_CLIPS,
    ReportError,
    audio_step_times,
    clip_model_outputs,
    fitted_perplexity,
    mean_by_class,
    pick_examples,
    spectrogram_on_time_grid,
    tsne_coordinates,
)
from tasks.report.html import CONTENT_SECURITY_POLICY

CHROMIUM = Path("/usr/bin/chromium")
SYSTEMS = ["gfbp", "agfbp"]
# Narrow networks: the test proves the report's path, not the papers' capacity.
SMALL = {"audio_channels": (8, 16, 16, 16, 16), "O": 16, "K": 2}


# --- figure data ----------------------------------------------------------------------------------


def test_mean_by_class_averages_each_class_and_marks_absent_ones() -> None:
    values = [0.2, 0.4, 0.9, 0.5, 0.7]
    labels = ["anger", "anger", "sadness", "sadness", "sadness"]
    means = {m.label: m for m in mean_by_class(values, labels, ["anger", "sadness", "fear"])}
    assert means["anger"].mean == pytest.approx(np.mean([0.2, 0.4])) and means["anger"].n == 2
    assert means["sadness"].mean == pytest.approx(np.mean([0.9, 0.5, 0.7]))
    assert means["sadness"].std == pytest.approx(np.std([0.9, 0.5, 0.7]))
    assert means["fear"].n == 0 and np.isnan(means["fear"].mean)
    with pytest.raises(ReportError):
        mean_by_class([0.1], ["anger", "sadness"], ["anger"])


def _clip_items(rng: np.random.Generator, audio_frames: list[int], video_frames: list[int]):
    """(spectrogram, face embeddings, label, clip id) items, as ClipDataset gives them."""
    return [
        (rng.normal(size=(t, 200)).astype(np.float32), rng.normal(size=(v, 64)).astype(np.float32), 0, f"clip{i}")
        for i, (t, v) in enumerate(zip(audio_frames, video_frames, strict=True))
    ]


def test_attention_curves_sum_to_one_over_each_clips_own_frames() -> None:
    """Clips of different lengths share a padded batch; each curve must cover its clip's frames only,
    sum to one there, and equal what the clip gives alone (no padding leaks in)."""
    torch.manual_seed(0)
    model = build_model("agfbp", 2, InputShapes(embedding_dim=64), audio_channels=(4, 8, 8, 8, 8), O=8, K=2).eval()
    items = _clip_items(np.random.default_rng(0), [120, 260, 90], [20, 41, 9])
    batched = clip_model_outputs(model, items, batch_size=3)
    encoder = next(m for m in model.modules() if isinstance(m, AudioEncoder))
    assert batched.clip_ids == ("clip0", "clip1", "clip2")
    for row, (audio, video, _, _) in enumerate(items):
        steps = encoder.output_lengths(torch.tensor([len(audio)])).item()
        assert len(batched.audio_weights[row]) == steps and batched.audio_frames[row] == len(audio)
        assert len(batched.video_weights[row]) == len(video)
        assert batched.audio_weights[row].sum() == pytest.approx(1.0, abs=1e-5)
        assert batched.video_weights[row].sum() == pytest.approx(1.0, abs=1e-5)
        alone = clip_model_outputs(model, [items[row]], batch_size=1)
        np.testing.assert_allclose(alone.video_weights[0], batched.video_weights[row], atol=1e-5)
        np.testing.assert_allclose(alone.audio_weights[0], batched.audio_weights[row], atol=1e-5)
    assert batched.embeddings.shape == (3, 8)
    assert batched.mu.shape == (3,) and np.all((batched.mu > 0) & (batched.mu < 1))


def test_gfbp_has_no_audio_factor() -> None:
    model = build_model("gfbp", 2, InputShapes(embedding_dim=64), audio_channels=(4, 8, 8, 8, 8), O=8, K=2).eval()
    assert clip_model_outputs(model, _clip_items(np.random.default_rng(1), [100], [5])).mu is None


def test_tsne_gives_one_point_per_clip_reproducibly_with_a_perplexity_fitted_to_few_clips() -> None:
    embeddings = np.random.default_rng(0).normal(size=(12, 16))
    first = tsne_coordinates(embeddings, perplexity=30.0, seed=0)
    assert first.shape == (12, 2) and np.isfinite(first).all()
    np.testing.assert_allclose(tsne_coordinates(embeddings, perplexity=30.0, seed=0), first)
    assert fitted_perplexity(30.0, 12) == pytest.approx(11 / 3) and fitted_perplexity(5.0, 1000) == 5.0
    with pytest.raises(ReportError, match="t-SNE needs"):
        tsne_coordinates(embeddings[: MIN_TSNE_CLIPS - 1], 30.0, 0)


def test_spectrogram_grid_leaves_dropped_silence_blank_and_audio_steps_stay_in_the_clip() -> None:
    times = np.concatenate([np.arange(0.02, 0.5, 0.01), np.arange(1.0, 1.4, 0.01)])  # a 0.5 s pause
    spectrogram = np.random.default_rng(0).normal(size=(len(times), 200))
    image, start, hop = spectrogram_on_time_grid(spectrogram, times)
    assert image.shape[0] == 200 and hop == pytest.approx(0.01)

    def column(t: float) -> int:
        return round((t - start) / hop - 0.5)

    assert np.isnan(image[:, column(0.75)]).all()
    np.testing.assert_allclose(image[:, column(1.2)], spectrogram[np.argmin(abs(times - 1.2))].astype(np.float32))
    steps = audio_step_times(5, len(times), times)
    assert np.all(np.diff(steps) > 0) and times[0] <= steps[0] and steps[-1] <= times[-1]


def test_example_clips_are_one_per_class_in_turn_and_fixed_by_the_seed() -> None:
    labels = {f"a{i}": "anger" for i in range(4)} | {f"s{i}": "sadness" for i in range(4)}
    picked = pick_examples(sorted(labels), labels, ["anger", "sadness"], 3, seed=0)
    assert [labels[c] for c in picked] == ["anger", "sadness", "anger"] and len(set(picked)) == 3
    assert pick_examples(sorted(labels), labels, ["anger", "sadness"], 3, seed=0) == picked
    assert len(pick_examples(sorted(labels), labels, ["anger", "sadness"], 20, seed=0)) == 8


# --- a report of a real run -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(sample_features: Path, tmp_path_factory) -> Path:
    """Tiny G-FBP and AG-FBP trained for 2 epochs per fold and evaluated; a params.yaml pointing at them."""
    root = tmp_path_factory.mktemp("report_run")
    params = TrainParams(
        features_dir=sample_features, out_dir=root / "models", epochs=2, patience=2, batch_size=8, systems=SYSTEMS
    )
    for system in SYSTEMS:
        run_train(system, params, SMALL, root / "models" / system)
        evaluate_flow(
            system=system,
            model_dir=root / "models" / system,
            features_dir=sample_features,
            out_dir=root / "eval" / system,
        )
    document = {
        "train": {"features_dir": str(sample_features), "out_dir": str(root / "models"), "systems": SYSTEMS},
        "evaluate": {"out_dir": str(root / "eval")},
        "report": {"out_dir": str(root / "report"), "example_clips": 2, "tsne_perplexity": 30.0},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(document))
    return root


@pytest.fixture(scope="module")
def report_dir(evaluated: Path) -> Path:
    out = evaluated / "cli_report"
    result = CliRunner().invoke(app, ["report", "--params", str(evaluated / "params.yaml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "figures" in result.output and "gfbp" in result.output  # the note on gfbp's missing mu
    return out


def test_report_holds_every_figure_as_embedded_png_with_copies_beside_it(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    figures = sorted(p.stem for p in (report_dir / "figures").glob("*.png"))
    assert figures == sorted(
        [
            "confusion",
            "recall",
            "learning_curves_uar",
            "learning_curves_loss",
            "attention_1",
            "attention_2",
            "audio_factor",
            "tsne",
        ]
    )
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == len(figures) and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"https?://|<script|<link|url\(", page), "the report must load nothing from elsewhere"
    for name in ("gfbp", "agfbp", "loso-1001", "loso-1002", "loso-1003", "anger", "sadness"):
        assert name in page
    assert "Not in the audio-factor figure: gfbp" in page


def test_report_command_names_an_unknown_system_and_a_missing_evaluation(evaluated: Path, tmp_path: Path) -> None:
    params = ["--params", str(evaluated / "params.yaml"), "--out", str(tmp_path)]
    unknown = CliRunner().invoke(app, ["report", "--systems", "gfbp,nosuch", *params])
    assert unknown.exit_code == 1 and "nosuch" in unknown.output
    missing = CliRunner().invoke(app, ["report", "--systems", "mfbp", *params])
    assert missing.exit_code == 1 and "avemo evaluate --system mfbp" in missing.output
    assert not (tmp_path / "report.html").exists()


def _chromium() -> Path:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found: install Debian's chromium (`apt-get install -y chromium`, or `make setup`)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


def _headless(chromium: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        str(chromium),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: a page needing the network shows it
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


# Marks, once the page has loaded, how many images it has and how many decoded to a real picture.
IMAGE_PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  document.body.dataset.images = images.length;
  document.body.dataset.decoded = images.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0).length;
  document.body.dataset.widths = images.map(i => i.naturalWidth).join(",");
});
</script>"""


def test_report_renders_with_its_figures_in_headless_chromium(report_dir: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    page = (report_dir / "report.html").read_text()
    n_images = page.count("<img ")
    # A copy with a probe script; its policy differs from the report's only by allowing that script.
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.replace(CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY + "; script-src 'unsafe-inline'").replace(
            "</body>", IMAGE_PROBE + "</body>"
        )
    )
    dumped = _headless(chromium, tmp_path / "profile-dom", "--dump-dom", probe.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dumped.stdout)
    assert body, dumped.stdout[:500]
    marks = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    assert int(marks["images"]) == n_images == 8
    assert int(marks["decoded"]) == n_images, marks
    assert all(int(w) >= 300 for w in marks["widths"].split(",")), marks

    shot = tmp_path / "shot.png"
    shown = _headless(
        chromium,
        tmp_path / "profile-shot",
        f"--screenshot={shot}",
        "--window-size=1280,2400",
        (report_dir / "report.html").as_uri(),
    )
    assert shown.returncode == 0 and shot.exists(), shown.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert pixels.shape[:2] == (2400, 1280)
    colourful = (pixels.max(axis=2) - pixels.min(axis=2)) > 60  # figures are in colour, text and tables grey
    assert colourful.sum() > 20_000, f"only {colourful.sum()} coloured pixels: the figures did not render"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200


def test_a_pooled_system_is_analysed_beside_the_others(evaluated: Path, sample_features: Path) -> None:
    """The classical systems read one clip vector per clip: their embeddings come through their own batches."""
    params = TrainParams(features_dir=sample_features, out_dir=evaluated / "models", systems=["logreg"])
    run_train("logreg", params, {"C": 0.1}, evaluated / "models" / "logreg", "egemaps")
    evaluate_flow(
        system="logreg",
        model_dir=evaluated / "models" / "logreg",
        features_dir=sample_features,
        out_dir=evaluated / "eval" / "logreg",
    )
    summary = build_report(
        ["gfbp", "logreg"],
        eval_dir=evaluated / "eval",
        models_dir=evaluated / "models",
        features_dir=sample_features,
        out_dir=evaluated / "pooled_report",
    )
    page = summary.html.read_text()
    assert "logreg" in page and (evaluated / "pooled_report" / "figures" / "tsne.png").is_file()
