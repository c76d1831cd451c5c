"""Face embeddings: FER2013 fc2 (304-dim) offline, VGGFace2 InceptionResnetV1 from a local state dict."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from facenet_pytorch import InceptionResnetV1
from PIL import Image
from skimage import data as skdata
from torchvision import transforms

from avemo.config import FaceFeatureParams
from tasks.video.embeddings import FaceFeatureError, load_face_embedder


def _faces() -> np.ndarray:
    astronaut = np.asarray(Image.fromarray(skdata.astronaut()[20:220, 150:350]).resize((64, 64)))
    grey = np.full((64, 64, 3), 128, dtype=np.uint8)
    return np.stack([astronaut, grey, astronaut[:, ::-1].copy()])


@pytest.fixture(scope="module")
def fer():
    return load_face_embedder(FaceFeatureParams(batch_size=2), torch.device("cpu"))


def test_fer_embedding_is_304_dim_deterministic_and_face_dependent(fer) -> None:
    crops = _faces()
    first, again = fer(crops), fer(crops)
    assert first.shape == (3, 304) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert (first >= 0).all()  # a ReLU activation
    assert not np.allclose(first[0], first[1], atol=1e-3)
    assert fer.name == "fer2013" and fer.dim == 304 and len(fer.weights_sha256) == 64


def test_fer_embedding_of_one_crop_equals_its_row_in_a_batch(fer) -> None:
    crops = _faces()
    np.testing.assert_allclose(fer(crops[1:2])[0], fer(crops)[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("side", [48, 64])
def test_fer_embedding_equals_the_package_transform_and_forward_pass(fer, side: int) -> None:
    """The vectorised input and the pool-before-tanh forward pass are the package's own, to float error."""
    crops = np.stack([np.asarray(Image.fromarray(c).resize((side, side))) for c in _faces()])
    transform = transforms.Compose(  # what_the_face_classification.inference's transform
        [transforms.Resize(48), transforms.CenterCrop(48), transforms.Grayscale(), transforms.ToTensor()]
    )
    package_input = torch.stack([transform(Image.fromarray(c)) for c in crops])
    package_network = copy.deepcopy(fer.network).to(memory_format=torch.contiguous_format)  # its view() needs it
    fc2 = []
    handle = package_network.fc2.register_forward_hook(lambda module, args, out: fc2.append(torch.relu(out)))
    with torch.inference_mode():
        package_network(package_input)  # the package's forward: tanh, then pooling
    handle.remove()
    np.testing.assert_allclose(fer(crops), fc2[0].numpy(), rtol=1e-4, atol=1e-5)


def test_wrong_crop_array_is_refused(fer) -> None:
    with pytest.raises(FaceFeatureError, match="uint8 RGB"):
        fer(np.zeros((2, 64, 64), dtype=np.uint8))


def test_vggface2_without_weights_names_the_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "vggface2.pt"
    with pytest.raises(FaceFeatureError, match="weights not found at .*vggface2.pt"):
        load_face_embedder(FaceFeatureParams(extractor="vggface2", weights_path=missing))


def test_vggface2_from_a_local_state_dict_gives_512_dim_unit_rows(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = tmp_path / "random-inception.pt"
    torch.save(InceptionResnetV1(pretrained=None, classify=False).state_dict(), weights)
    embedder = load_face_embedder(FaceFeatureParams(extractor="vggface2", weights_path=weights), torch.device("cpu"))
    out = embedder(_faces())
    assert out.shape == (3, 512) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-4)  # facenet L2-normalises
    assert embedder.name == "vggface2" and embedder.dim == 512
