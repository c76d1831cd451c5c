"""Per-frame face embeddings from a pretrained network, offline.

* ``fer2013`` (default, ships with what-the-face-classification): a small CNN trained on FER2013's
  seven expressions. The embedding is its 304-dim fc2 activation, the penultimate layer: trained to
  separate expressions, so it carries them, while the seven logits after it are too coarse a summary
  (one number per class, no intensity or blend) for a downstream emotion model to learn from.
* ``vggface2``: facenet-pytorch's InceptionResnetV1 (512-dim) from a state dict the user downloaded
  (``weights_path``); it is never fetched at run time. Identity-trained, so it carries less expression.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from what_the_face_classification.model import SimpleConvolutionalNetwork

from avemo.config import FaceFeatureParams
from avemo.device import resolve_device
from avemo.errors import AvemoError
from tasks.probe import sha256_file

FER_INPUT = 48  # FER2013 images are 48 x 48 grayscale
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
VGGFACE2_INPUT = 160  # InceptionResnetV1 was trained on 160 x 160 faces


class FaceFeatureError(AvemoError):
    """The face embedder cannot be built (weights missing or unreadable) or got unusable crops."""


class FaceEmbedder:
    """A face network in eval mode: batches of uint8 RGB crops in, one float32 row per crop out."""

    def __init__(
        self,
        name: str,
        dim: int,
        weights_sha256: str,
        network: torch.nn.Module,
        to_input: Callable[[np.ndarray], torch.Tensor],
        embed: Callable[[torch.Tensor], torch.Tensor],
        batch_size: int,
        device: torch.device,
    ) -> None:
        self.name, self.dim, self.weights_sha256 = name, dim, weights_sha256
        self.network = network.to(device).eval()
        self._to_input, self._embed = to_input, embed
        self.batch_size, self.device = batch_size, device

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 crops -> (N, dim) float32 embeddings."""
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise FaceFeatureError(f"crops must be (N, S, S, 3) uint8 RGB, got {crops.shape} {crops.dtype}")
        rows = [np.zeros((0, self.dim), dtype=np.float32)]
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                batch = self._to_input(crops[start : start + self.batch_size]).to(self.device)
                rows.append(self._embed(batch).float().cpu().numpy())
        return np.concatenate(rows)


def _fer_input(crops: np.ndarray) -> torch.Tensor:
    """The package's own inference transform (resize to 48, grayscale, [0, 1]), vectorised.

    Crops of another size are resized with PIL's bilinear filter, as torchvision's ``Resize`` does; the
    grayscale conversion is PIL's integer formula (ITU-R 601-2 luma, rounded), so the input is the
    package transform's to the bit while costing a numpy pass instead of a PIL round trip per crop.
    """
    if crops.shape[1:3] != (FER_INPUT, FER_INPUT):
        size = (FER_INPUT, FER_INPUT)
        crops = np.stack([np.asarray(Image.fromarray(c).resize(size, Image.Resampling.BILINEAR)) for c in crops])
    rgb = crops.astype(np.uint32)
    luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    gray = torch.from_numpy(luma.astype(np.float32) / 255.0)[:, None]
    return gray.contiguous(memory_format=torch.channels_last)


def _fer_latent_dim(io_list: list[list[int]], kernels: list[int], paddings: list[int]) -> int:
    """Flattened size after the conv + 2x2 max-pool stages for a 48 x 48 input (as inference.py)."""
    side = FER_INPUT
    for kernel, padding in zip(kernels, paddings, strict=True):
        side = (side + 2 * padding - kernel + 1) // 2
    return side * side * io_list[-1][1]


def fer_penultimate(network: SimpleConvolutionalNetwork, x: torch.Tensor) -> torch.Tensor:
    """The 304-dim fc2 activation: the network's forward pass stopped before its 7-class layer.

    Max-pooling runs before tanh, not after as in the package: tanh is increasing, so the result is
    the same while tanh sees a quarter of the values (tanh was the forward pass's largest cost).
    """
    for conv, pool in ((network.conv1, network.pool1), (network.conv2, network.pool2), (network.conv3, network.pool3)):
        x = torch.tanh(pool(conv(x)))
    x = F.relu(network.fc1(x.flatten(1)))
    return F.relu(network.fc2(x))


def _load_fer2013(batch_size: int, device: torch.device) -> FaceEmbedder:
    io_list, kernels, paddings = [[1, 28], [28, 56], [56, 112]], [3, 3, 3], [0, 0, 0]
    network = SimpleConvolutionalNetwork(
        3, io_list, kernels, paddings, 304, _fer_latent_dim(io_list, kernels, paddings)
    )
    weights = importlib.resources.files("what_the_face_classification") / "active_model.pth"
    with importlib.resources.as_file(weights) as path:
        network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        digest = sha256_file(path)
    network = network.to(memory_format=torch.channels_last)  # its max-pooling is several times faster so on CPU
    return FaceEmbedder(
        name="fer2013",
        dim=network.fc2.out_features,
        weights_sha256=digest,
        network=network,
        to_input=_fer_input,
        embed=lambda x: fer_penultimate(network, x),
        batch_size=batch_size,
        device=device,
    )


def _vggface2_input(crops: np.ndarray) -> torch.Tensor:
    """Crops resized bilinearly to 160 x 160 and standardised as facenet's training was: (x - 127.5) / 128."""
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(VGGFACE2_INPUT, VGGFACE2_INPUT), mode="bilinear", align_corners=False, antialias=True)
    return (x - 127.5) / 128.0


def _load_vggface2(weights_path: Path | None, batch_size: int, device: torch.device) -> FaceEmbedder:
    if weights_path is None or not Path(weights_path).is_file():
        raise FaceFeatureError(
            f"vggface2 weights not found at {weights_path}: download facenet-pytorch's "
            "20180402-114759-vggface2.pt yourself and set preprocess.face_features.weights_path to it "
            "(nothing is downloaded at run time), or use extractor: fer2013"
        )
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a corrupt or foreign file
        raise FaceFeatureError(f"{weights_path} is not a readable torch state dict: {err}") from err
    # The released file also holds the 8631-identity classifier ("logits.*"); embeddings do not use it.
    state = {key: value for key, value in state.items() if not key.startswith("logits.")}
    from facenet_pytorch import InceptionResnetV1  # here: the package imports torchvision (~2 s)

    network = InceptionResnetV1(pretrained=None, classify=False)
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise FaceFeatureError(f"{weights_path} is not an InceptionResnetV1 state dict: {err}") from err
    return FaceEmbedder(
        name="vggface2",
        dim=network.last_bn.num_features,
        weights_sha256=sha256_file(Path(weights_path)),
        network=network,
        to_input=_vggface2_input,
        embed=network,
        batch_size=batch_size,
        device=device,
    )


def load_face_embedder(params: FaceFeatureParams, device: torch.device | None = None) -> FaceEmbedder:
    """The configured embedder, on CUDA when available."""
    device = device or resolve_device()
    if params.extractor == "fer2013":
        return _load_fer2013(params.batch_size, device)
    return _load_vggface2(params.weights_path, params.batch_size, device)
