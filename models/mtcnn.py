"""MTCNN's three networks (Zhang et al. 2016) with the weights facenet-pytorch ships, loaded by path.

The layers, their names and the forward arithmetic are facenet-pytorch's own, so its state dicts load
unchanged and every output is the same to the bit (tests/unit/models/test_mtcnn.py compares the two).
They are defined here because importing facenet-pytorch imports torchvision, and torchvision imports
``torch._dynamo``: about 2 s that a one-clip ``avemo predict`` would pay before any work. The weight
files are found without running the package (``importlib.util.find_spec``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from avemo.errors import AvemoError

THRESHOLDS = (0.6, 0.7, 0.7)  # facenet-pytorch's MTCNN defaults: PNet, RNet, ONet acceptance
MIN_FACE_SIZE = 20.0  # px: the default pyramid's smallest face
PYRAMID_FACTOR = 0.709  # the default pyramid's step between levels


class MTCNNWeightsError(AvemoError):
    """facenet-pytorch, which ships MTCNN's weights, is not installed or lacks them."""


def weights_path(net: str) -> Path:
    """facenet-pytorch's ``data/NET.pt`` (pnet, rnet, onet), without importing the package."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise MTCNNWeightsError(
            "facenet-pytorch is not installed: pip install facenet-pytorch==2.5.3 (MTCNN's weights)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{net}.pt"
    if not path.is_file():
        raise MTCNNWeightsError(f"MTCNN's {net} weights not found at {path}: reinstall facenet-pytorch")
    return path


def _pretrained(module: nn.Module, net: str) -> nn.Module:
    module.load_state_dict(torch.load(weights_path(net), map_location="cpu", weights_only=True))
    return module.eval()


class PNet(nn.Module):
    """Proposal network: fully convolutional, face probability and box regression per 12 px cell."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.prelu1(self.conv1(x))
        x = self.pool1(x)
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class RNet(nn.Module):
    """Refinement network: a 24 x 24 proposal in, face probability and box regression out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).contiguous()  # the Caffe weights' flattening order
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nn.Module):
    """Output network: a 48 x 48 candidate in, box regression, five landmarks and face probability out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).contiguous()  # the Caffe weights' flattening order
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


class MTCNNNets(nn.Module):
    """The three pretrained networks, in eval mode, as one module (one ``.to(device)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.pnet = _pretrained(PNet(), "pnet")
        self.rnet = _pretrained(RNet(), "rnet")
        self.onet = _pretrained(ONet(), "onet")
