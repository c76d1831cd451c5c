"""avemo's MTCNN networks are facenet-pytorch's: same weights, same outputs to the bit."""

import subprocess
import sys

import pytest
import torch
from facenet_pytorch.models.mtcnn import ONet as FacenetONet
from facenet_pytorch.models.mtcnn import PNet as FacenetPNet
from facenet_pytorch.models.mtcnn import RNet as FacenetRNet

from avemo.provenance import REPO_ROOT
from models.mtcnn import MTCNNNets, MTCNNWeightsError, weights_path


@pytest.mark.parametrize(
    ("name", "theirs", "shape"),
    [
        ("pnet", FacenetPNet, (2, 3, 61, 83)),
        ("rnet", FacenetRNet, (5, 3, 24, 24)),
        ("onet", FacenetONet, (5, 3, 48, 48)),
    ],
)
def test_each_network_gives_facenets_outputs_to_the_bit(name, theirs, shape):
    ours = getattr(MTCNNNets(), name)
    reference = theirs().eval()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.inference_mode():
        for a, b in zip(ours(x), reference(x), strict=True):
            assert torch.equal(a, b)
        channels_last = x.contiguous(memory_format=torch.channels_last)
        ours_cl = ours.to(memory_format=torch.channels_last)
        for a, b in zip(
            ours_cl(channels_last), reference.to(memory_format=torch.channels_last)(channels_last), strict=True
        ):
            assert torch.equal(a, b)


def test_weights_are_found_without_importing_facenet_or_torchvision():
    code = (
        "import sys\nfrom models.mtcnn import MTCNNNets\nMTCNNNets()\n"
        "print(any(m.split('.')[0] in ('facenet_pytorch', 'torchvision') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT).stdout
    assert out.strip() == "False"


def test_a_missing_weight_file_is_named(monkeypatch, tmp_path):
    class Spec:
        submodule_search_locations = (str(tmp_path),)

    monkeypatch.setattr("models.mtcnn.importlib.util.find_spec", lambda name: Spec())
    with pytest.raises(MTCNNWeightsError, match=r"pnet weights not found at .*pnet\.pt"):
        weights_path("pnet")
    monkeypatch.setattr("models.mtcnn.importlib.util.find_spec", lambda name: None)
    with pytest.raises(MTCNNWeightsError, match="pip install facenet-pytorch"):
        weights_path("onet")
