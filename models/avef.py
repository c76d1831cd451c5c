"""AVEF (avef-vad-655ms-segments.txt): audio-net + visual-net + DBN per 655 ms segment, SVM per clip.

- audio-net A(a; theta_A): AlexNet-shaped 2D CNN on the segment's log-mel image a, 3 x 64 x 64
  (static, delta, delta-delta; mel x frames). Sec. 2.2.1: conv1-conv5, pool1/pool2/pool5, fc6-fc8.
- visual-net V(v; theta_V): C3D-shaped 3D CNN on the 16 face crops v, 3 x 16 x S x S. Sec. 2.2.2:
  conv1a, conv2a, conv3a-b, conv4a-b, conv5a-b, pool1-pool5, fc6-fc8.
- segment fusion: a DBN on [fc7_audio ; fc7_visual], 8192-4096-2048-C in the paper (Sec. 2.2.3),
  optionally pre-trained greedily as RBMs with CD-1 (:func:`pretrain_dbn`), then fine-tuned jointly
  with both CNNs through :class:`AVEF`.
- clip fusion: the DBN's last hidden layer average-pooled over a clip's segments
  (:func:`average_pool_segments`), classified by a polynomial-kernel SVM (:class:`ClipSVM`, Sec. 2.2.4).

The paper's sizes (:class:`AVEFConfig` defaults) hold 167 M parameters; the project's ``params.yaml``
(``models.avef``) narrows the widths for a CPU (a quarter: 5.0 M parameters), the shapes unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avemo.errors import AvemoError
from models.classical import fit_calibrated
from models.layers import ALEXNET_CHANNELS, alexnet_lrn

C3D_CHANNELS: tuple[int, ...] = (64, 128, 256, 256, 512, 512, 512, 512)  # conv1a .. conv5b


class AVEFInputError(AvemoError):
    """A segment tensor or a setting AVEF cannot take."""


@dataclass(frozen=True)
class AVEFConfig:
    num_classes: int
    # The input's sizes: the features' own (models.registry.InputShapes), never a second copy.
    mel_bins: int | None  # log-mel bands of a segment image (64 in the paper); None: a pretrained front-end
    mel_frames: int | None  # its analysis frames (64: 25 ms + 63 x 10 ms = 655 ms)
    frames: int  # face crops per segment (16)
    crop_size: int  # S
    audio_frontend: str = "logmel"  # the paper's log-mel images, or a pretrained front-end's segment vectors
    audio_dim: int | None = None  # the width of those vectors
    width: float = 1.0  # conv channel multiplier of both CNNs; 1 = AlexNet / C3D
    fc_dim: int = 4096  # fc6 and fc7 of both CNNs, so the DBN's visible layer is 2 * 4096 = 8192
    dbn_hidden: tuple[int, ...] = (4096, 2048)  # the DBN's two hidden layers
    dropout: float = 0.3  # Table 3


@dataclass
class SegmentOutput:
    logits: Tensor  # (B, num_classes), fc8 or the DBN's softmax layer before the softmax
    hidden: Tensor  # (B, E): fc7 for a CNN alone, the DBN's last hidden layer for AVEF


def _scaled(channels: Sequence[int], width: float) -> list[int]:
    return [max(1, round(c * width)) for c in channels]


def _check_shape(x: Tensor, expected: tuple[int, ...], what: str) -> None:
    if tuple(x.shape[1:]) != expected:
        raise AVEFInputError(
            f"{what} must be (batch, {', '.join(map(str, expected))}), got {tuple(x.shape)}; "
            "match the model's config to the features (mel bins, frames, crop size)"
        )


class _ConvThenFC(nn.Module):
    """Shared tail: flatten the conv features, fc6 -> fc7 (ReLU, dropout) -> fc8."""

    def __init__(
        self, features: nn.Sequential, input_shape: tuple[int, ...], fc_dim: int, num_classes: int, dropout: float
    ) -> None:
        super().__init__()
        self.features = features
        self.input_shape = input_shape
        with torch.no_grad():
            flat = features(torch.zeros(1, *input_shape)).numel()
        self.fc6 = nn.Linear(flat, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.fc8 = nn.Linear(fc_dim, num_classes)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = fc_dim
        # He initialisation keeps the signal's scale through the ReLU stack (up to 11 layers), which
        # PyTorch's default shrinks ~0.6x per layer: trained from scratch, the deep end would start dead.
        for module in [*features, self.fc6, self.fc7]:
            if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                assert module.bias is not None  # every layer here is built with a bias
                nn.init.zeros_(module.bias)

    def fc7_features(self, x: Tensor) -> Tensor:
        _check_shape(x, self.input_shape, type(self).__name__ + " input")
        x = self.dropout(F.relu(self.fc6(self.features(x).flatten(1))))
        return self.dropout(F.relu(self.fc7(x)))

    def classify(self, x: Tensor) -> SegmentOutput:
        hidden = self.fc7_features(x)
        return SegmentOutput(self.fc8(hidden), hidden)


class AudioNet(_ConvThenFC):
    """AlexNet resized for a 64 x 64 log-mel image: conv1 is 5 x 5 stride 1 (AlexNet's 11 x 11 stride 4
    would leave 15 x 15 after one layer); three 3 x 3 stride-2 max-pools take 64 to 7."""

    def __init__(
        self,
        num_classes: int,
        mel_bins: int,
        mel_frames: int,
        width: float = 1.0,
        fc_dim: int = 4096,
        dropout: float = 0.3,
    ) -> None:
        c1, c2, c3, c4, c5 = _scaled(ALEXNET_CHANNELS, width)
        features = nn.Sequential(
            nn.Conv2d(3, c1, 5, padding=2),
            nn.ReLU(),
            alexnet_lrn(),
            nn.MaxPool2d(3, 2),  # pool1
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.ReLU(),
            alexnet_lrn(),
            nn.MaxPool2d(3, 2),  # pool2
            nn.Conv2d(c2, c3, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c3, c4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c4, c5, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(3, 2),  # pool5
        )
        super().__init__(features, (3, mel_bins, mel_frames), fc_dim, num_classes, dropout)

    def forward(self, audio: Tensor) -> SegmentOutput:
        """(B, 3, 64, 64) log-mel images -> fc8 logits and fc7."""
        return self.classify(audio)


class AudioProjection(_ConvThenFC):
    """AVEF's audio path on a pretrained front-end: the segment's vector (openSMILE functionals, Whisper's
    pooled frames) straight into fc6 -> fc7 -> fc8, in place of the audio-net's convolutions, which are
    there to learn features from a log-mel image."""

    def __init__(self, num_classes: int, dim: int, fc_dim: int = 4096, dropout: float = 0.3) -> None:
        super().__init__(nn.Sequential(), (dim,), fc_dim, num_classes, dropout)

    def forward(self, audio: Tensor) -> SegmentOutput:
        """(B, dim) segment vectors -> fc8 logits and fc7."""
        return self.classify(audio)


def build_audio_net(
    num_classes: int,
    mel_bins: int | None,
    mel_frames: int | None,
    audio_frontend: str,
    audio_dim: int | None,
    width: float,
    fc_dim: int,
    dropout: float,
) -> AudioNet | AudioProjection:
    """The audio-net on log-mel images, or the projection of a pretrained front-end's segment vectors."""
    if audio_frontend == "logmel":
        if mel_bins is None or mel_frames is None:
            raise AVEFInputError("the audio-net needs the log-mel images' size (mel_bins, mel_frames)")
        return AudioNet(num_classes, mel_bins, mel_frames, width, fc_dim, dropout)
    if audio_dim is None:
        raise AVEFInputError(f"the {audio_frontend} front-end's segment vectors need their width (audio_dim)")
    return AudioProjection(num_classes, audio_dim, fc_dim, dropout)


def avef_audio(
    num_classes: int,
    mel_bins: int | None,
    mel_frames: int | None,
    audio_frontend: str = "logmel",
    audio_dim: int | None = None,
    width: float = 1.0,
    fc_dim: int = 4096,
    dropout: float = 0.3,
) -> AudioNet | AudioProjection:
    """AVEF's audio path alone (the ``avef_audio`` system), on whichever front-end it reads."""
    return build_audio_net(num_classes, mel_bins, mel_frames, audio_frontend, audio_dim, width, fc_dim, dropout)


class VisualNet(_ConvThenFC):
    """C3D (Tran et al. 2015): 3 x 3 x 3 convolutions; pool1 is 1 x 2 x 2 (keeps time), pool2-pool5
    2 x 2 x 2, so 16 x S x S ends at 1 x S/32 x S/32 (2 x 2 for S = 64)."""

    def __init__(
        self,
        num_classes: int,
        frames: int,
        crop_size: int,
        width: float = 1.0,
        fc_dim: int = 4096,
        dropout: float = 0.3,
    ) -> None:
        if frames < 16 or crop_size < 32:
            raise AVEFInputError(
                f"five poolings need at least 16 frames of 32 x 32 pixels, got {frames} x {crop_size} x {crop_size}"
            )
        c1a, c2a, c3a, c3b, c4a, c4b, c5a, c5b = _scaled(C3D_CHANNELS, width)

        def conv(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv3d(cin, cout, 3, padding=1), nn.ReLU()]

        features = nn.Sequential(
            *conv(3, c1a),
            nn.MaxPool3d((1, 2, 2)),
            *conv(c1a, c2a),
            nn.MaxPool3d(2),
            *conv(c2a, c3a),
            *conv(c3a, c3b),
            nn.MaxPool3d(2),
            *conv(c3b, c4a),
            *conv(c4a, c4b),
            nn.MaxPool3d(2),
            *conv(c4b, c5a),
            *conv(c5a, c5b),
            nn.MaxPool3d(2),
        )
        super().__init__(features, (3, frames, crop_size, crop_size), fc_dim, num_classes, dropout)

    def forward(self, video: Tensor) -> SegmentOutput:
        """(B, 3, 16, S, S) face crops -> fc8 logits and fc7."""
        return self.classify(video)


class DBN(nn.Module):
    """Visible -> sigmoid hidden layers -> softmax layer (Sec. 2.2.3). The hidden layers are the RBMs'
    weights, so :func:`pretrain_dbn` initialises them in place."""

    def __init__(self, visible: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        sizes = [visible, *hidden]
        self.hidden_layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.output = nn.Linear(sizes[-1], num_classes)

    def forward(self, visible: Tensor) -> SegmentOutput:
        h = visible
        for layer in self.hidden_layers:
            h = torch.sigmoid(layer(h))
        return SegmentOutput(self.output(h), h)


class RBM(nn.Module):
    """A restricted Boltzmann machine on an existing ``nn.Linear`` (visible -> hidden).

    The layer's weight and bias are the RBM's W and hidden bias, so training the RBM trains the layer.
    Hidden units are binary; visible units are binary (means through a sigmoid) or, with
    ``gaussian_visible``, real-valued of unit variance (means linear), as fits the DBN's first layer on
    CNN features (Hinton & Salakhutdinov 2006), which should be standardised first.
    """

    def __init__(self, layer: nn.Linear, gaussian_visible: bool = False) -> None:
        super().__init__()
        self.layer = layer
        self.visible_bias = nn.Parameter(torch.zeros(layer.in_features, device=layer.weight.device))
        self.gaussian_visible = gaussian_visible

    def hidden_probabilities(self, v: Tensor) -> Tensor:
        return torch.sigmoid(self.layer(v))

    def visible_means(self, h: Tensor) -> Tensor:
        activation = F.linear(h, self.layer.weight.t(), self.visible_bias)
        return activation if self.gaussian_visible else torch.sigmoid(activation)

    @torch.no_grad()
    def reconstruction_error(self, v: Tensor) -> float:
        """Mean squared error of v against its mean-field reconstruction v -> p(h|v) -> E[v|h]."""
        return F.mse_loss(self.visible_means(self.hidden_probabilities(v)), v).item()

    @torch.no_grad()
    def contrastive_divergence(self, v0: Tensor, lr: float) -> float:
        """One CD-1 step on a batch; returns that step's reconstruction error.

        W += lr (<h v>_data - <h v>_recon), with h0 sampled, v1 the visible means given h0 and h1 the
        hidden probabilities given v1 (Hinton 2010, "A practical guide to training RBMs").
        """
        h0_prob = self.hidden_probabilities(v0)
        h0 = torch.bernoulli(h0_prob)
        v1 = self.visible_means(h0)
        h1_prob = self.hidden_probabilities(v1)
        batch = v0.shape[0]
        # add_ is the in-place add += makes; mypy would type += on a Parameter as a plain Tensor
        self.layer.weight.add_(lr * (h0_prob.t() @ v0 - h1_prob.t() @ v1) / batch)
        self.layer.bias.add_(lr * (h0_prob - h1_prob).mean(dim=0))
        self.visible_bias.add_(lr * (v0 - v1).mean(dim=0))
        return F.mse_loss(v1, v0).item()


def pretrain_dbn(dbn: DBN, features_iter: Iterable[Tensor], epochs: int = 10, lr: float = 0.01) -> list[float]:
    """Greedy layer-wise pre-training (Hinton et al. 2006): each hidden layer as an RBM with CD-1 on the
    previous layer's hidden probabilities; the first RBM has Gaussian visible units (CNN features).

    ``features_iter`` yields (batch, visible) tensors, e.g. :meth:`AVEF.visible` of training segments;
    it is read ``epochs`` times per layer, so it must be re-iterable (a list or a DataLoader).
    Returns each layer's mean reconstruction error over its last epoch.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if iter(features_iter) is features_iter:
        raise TypeError("features_iter is a one-shot iterator; pass a list or a DataLoader, read once per epoch")
    errors = []
    for depth, layer in enumerate(dbn.hidden_layers):
        assert isinstance(layer, nn.Linear)  # DBN's hidden layers are all Linear
        rbm = RBM(layer, gaussian_visible=depth == 0)
        for _ in range(epochs):
            epoch_errors = []
            for visible in features_iter:
                with torch.no_grad():
                    for lower in dbn.hidden_layers[:depth]:
                        visible = torch.sigmoid(lower(visible))
                epoch_errors.append(rbm.contrastive_divergence(visible, lr))
        errors.append(float(np.mean(epoch_errors)))
    return errors


class AVEF(nn.Module):
    """audio-net + visual-net -> DBN, trained as one network (Sec. 2.2.3): forward gives the segment's
    logits and the DBN's last hidden layer, which the clip level average-pools."""

    def __init__(self, config: AVEFConfig) -> None:
        super().__init__()
        self.audio_net = build_audio_net(
            config.num_classes,
            config.mel_bins,
            config.mel_frames,
            config.audio_frontend,
            config.audio_dim,
            config.width,
            config.fc_dim,
            config.dropout,
        )
        self.visual_net = VisualNet(
            config.num_classes, config.frames, config.crop_size, config.width, config.fc_dim, config.dropout
        )
        # The first RBM has Gaussian visible units of unit variance, so the visible layer is standardised
        # unit by unit; unstandardised, the joint network sat at the majority class even on 8 samples.
        self.visible_norm = nn.BatchNorm1d(2 * config.fc_dim, affine=False)
        self.dbn = DBN(2 * config.fc_dim, config.dbn_hidden, config.num_classes)

    def visible(self, audio: Tensor, video: Tensor) -> Tensor:
        """The DBN's visible layer: [fc7 of audio-net ; fc7 of visual-net] (1:1, Sec. 2.2), standardised."""
        fc7 = torch.cat([self.audio_net.fc7_features(audio), self.visual_net.fc7_features(video)], dim=-1)
        if self.training and len(fc7) == 1:  # batch statistics need two segments: a lone one (a last
            norm = self.visible_norm  # batch of one) is standardised with the running statistics
            return F.batch_norm(fc7, norm.running_mean, norm.running_var, training=False, eps=norm.eps)
        return self.visible_norm(fc7)

    def forward(self, audio: Tensor, video: Tensor) -> SegmentOutput:
        return self.dbn(self.visible(audio, video))


ClipId = TypeVar("ClipId", bound=Hashable)


def average_pool_segments(
    segment_embeddings: Tensor | np.ndarray, clip_ids: Sequence[ClipId]
) -> tuple[list[ClipId], np.ndarray]:
    """Mean of each clip's segment embeddings (Sec. 2.2.4); clips in order of first appearance."""
    embeddings = np.asarray(
        segment_embeddings.detach().cpu().numpy() if isinstance(segment_embeddings, Tensor) else segment_embeddings
    )
    if embeddings.ndim != 2 or len(embeddings) != len(clip_ids):
        raise AVEFInputError(
            f"need one clip id per segment embedding row, got {len(clip_ids)} ids for shape {embeddings.shape}"
        )
    clips = list(dict.fromkeys(clip_ids))
    row_of_clip = {clip: row for row, clip in enumerate(clips)}
    rows = np.array([row_of_clip[clip] for clip in clip_ids])
    sums = np.zeros((len(clips), embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, rows, embeddings)
    return clips, sums / np.bincount(rows, minlength=len(clips))[:, None]


class ClipSVM:
    """The clip-level classifier: a polynomial-kernel SVM on pooled segment embeddings (Sec. 4.2, libsvm).

    Probabilities come from Platt scaling on internal cross-validation folds (as libsvm's), so fitting
    needs a few clips per class.
    """

    def __init__(self, degree: int, C: float, coef0: float = 0.0) -> None:
        from sklearn.svm import SVC  # here, not at the top: scikit-learn takes 1.4 s to import

        self.svc = SVC(kernel="poly", degree=degree, C=C, coef0=coef0)
        self.fitted: Any = None

    def fit(self, clip_embeddings: np.ndarray, labels: Sequence[Hashable] | np.ndarray) -> ClipSVM:
        y = np.asarray(labels)
        self.fitted = fit_calibrated(self.svc, np.asarray(clip_embeddings), y)
        return self

    @property
    def classes_(self) -> np.ndarray:
        """The labels in the column order of :meth:`predict_proba`."""
        return self.fitted.classes_

    def predict_proba(self, clip_embeddings: np.ndarray) -> np.ndarray:
        return self.fitted.predict_proba(np.asarray(clip_embeddings))

    def predict(self, clip_embeddings: np.ndarray) -> np.ndarray:
        return self.fitted.predict(np.asarray(clip_embeddings))
