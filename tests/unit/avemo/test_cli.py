"""The ``avemo`` command: its subcommands, and the clear refusals that come before any long work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from avemo import schemas
from avemo.cli import app
from avemo.parquet_io import write_table
from avemo.provenance import REPO_ROOT, provenance
from models import MODELS
from tasks.corpora.manifest import manifest_table

runner = CliRunner()
SUBCOMMANDS = ("sample", "ingest", "preprocess", "train", "evaluate", "compare", "report", "serve", "audit", "predict")


def test_help_lists_every_stage_and_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert all(name in result.output for name in SUBCOMMANDS)


def test_a_misspelt_setting_is_refused_naming_the_key(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("preprocess:\n  vad:\n    agressiveness: 3\n")
    result = runner.invoke(app, ["preprocess", str(tmp_path / "m.parquet"), "--params", str(params)])
    assert result.exit_code == 2 and "agressiveness" in result.output


def test_a_missing_manifest_says_how_to_write_it(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["preprocess", str(tmp_path / "absent.parquet"), "--params", str(tmp_path / "none.yaml")]
    )
    assert result.exit_code == 1 and "avemo ingest" in result.output


def test_an_unknown_system_is_refused_with_the_choices(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--system", "fbp", "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1 and "unknown model 'fbp'; choose one of: avef, gfbp" in result.output


def test_an_unusable_corpus_folder_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "manifest.parquet"
    result = runner.invoke(app, ["ingest", str(tmp_path / "nowhere"), "--format", "cremad", "--out", str(out)])
    assert result.exit_code == 1 and "does not exist" in result.output and not out.exists()


HEAVY = ("torch", "prefect", "librosa", "sklearn")
_LOADED = (
    "import sys\nfrom typer.testing import CliRunner\nfrom avemo.cli import app\n"
    "result = CliRunner().invoke(app, sys.argv[1:])\nassert result.exit_code == 0, result.output\n"
    f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
)


def _heavy_modules_loaded(*args: str) -> str:
    """The heavy libraries a fresh interpreter has imported after running ``avemo ARGS``."""
    out = subprocess.run([sys.executable, "-c", _LOADED, *args], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_help_and_audit_start_without_torch_or_prefect(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.parquet"
    write_table(manifest_table([]), manifest, schemas.MANIFEST, provenance("ingest", {}, corpus_dir=str(tmp_path)))
    assert _heavy_modules_loaded("--help") == ""
    assert _heavy_modules_loaded("audit", str(manifest)) == ""


def test_make_demo_all_trains_every_registered_system() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    (line,) = [line for line in makefile.splitlines() if line.startswith("ALL_SYSTEMS :=")]
    assert sorted(line.split(":=")[1].strip().split(",")) == sorted(MODELS)


_PREDICT_CHAIN = (
    "import sys\nimport numpy as np\nimport flows.predict\n"
    "from tasks.video.faces import FaceDetector\nfrom tasks.audio.spectrograms import mel_filterbank\n"
    "FaceDetector().find_faces([np.zeros((120, 160, 3), np.uint8)], 0.9, 0.1)\n"
    "mel_filterbank(16000, 512, 64, 0.0, 8000.0)\n"
    "print(','.join(m for m in ('torchvision', 'torch._dynamo', 'facenet_pytorch', 'scipy.signal', 'numba') "
    "if m in sys.modules))\n"
)


def test_predict_and_its_face_and_mel_stages_load_no_compiler_or_signal_library() -> None:
    """~4 s of imports a one-clip predict does not need: torchvision (and through it torch._dynamo),
    facenet-pytorch's package, and librosa.filters' scipy.signal and numba."""
    out = subprocess.run([sys.executable, "-c", _PREDICT_CHAIN], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _console(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys\nfrom avemo.cli import main\nsys.argv = ['avemo', *sys.argv[1:]]\nmain()\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)


def test_the_console_entry_keeps_exit_codes_and_output_when_it_skips_teardown(tmp_path: Path) -> None:
    """predict loads torch and not Prefect, so the process ends without Python's teardown: its output,
    its error message and its exit code must all still arrive."""
    missing = _console("predict", str(tmp_path / "missing.mp4"), "--model", str(tmp_path))
    assert missing.returncode == 1 and "holds no fold-*-seed*.pt checkpoints" in missing.stderr
    helped = _console("predict", "--help")
    assert helped.returncode == 0 and "Usage: avemo predict" in helped.stdout
