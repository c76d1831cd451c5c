"""The factorized bilinear pooling (FBP) family at clip level: G-FBP, AG-FBP, M-FBP and AM-FBP.

Equation numbers are those of am-fbp-attention-fusion.txt (Zhou et al.); "deep-fusion" is
deep-fusion-fbp-afew.txt (Zhang et al.), which introduced G-FBP.

Inputs, as avemo's features provide them:
- audio: linear spectrogram frames (B, T, 200), 10 ms apart, zero-padded after ``audio_lengths``;
- video: per-frame face embeddings (B, L, D_1), D_1 = 304 (FER2013 fc2) or 512 (VGGFace2), padded
  after ``video_lengths``.
Every layer either works frame by frame or is masked, so padding never changes a clip's output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avemo.errors import AvemoError
from models.attention import ScaledSoftmaxAttention, lengths_to_mask
from models.layers import ALEXNET_CHANNELS, alexnet_lrn

# AlexNet's convolutions (Krizhevsky et al. 2012) as (kernel, stride, padding, max-pool after), their
# widths in models.layers. The FCN keeps them and drops the fully connected layers (deep-fusion Sec. II-A).
_ALEXNET_CONVS: tuple[tuple[int, int, int, bool], ...] = (
    (11, 4, 2, True),
    (5, 1, 2, True),
    (3, 1, 1, False),
    (3, 1, 1, False),
    (3, 1, 1, True),
)
_POOL_KERNEL, _POOL_STRIDE = 3, 2


class FBPInputError(AvemoError):
    """Features or settings the FBP-family networks cannot take."""


@dataclass(frozen=True)
class EncoderConfig:
    """What every clip-level model needs to read avemo's features."""

    num_classes: int
    video_dim: int | None  # D_1, the face embeddings' width (304 FER2013 fc2, 512 VGGFace2); None: no video
    audio_frontend: str = "linear"  # the papers' spectrogram, or a pretrained front-end's per-segment vectors
    audio_dim: int | None = None  # the width of those vectors (the spectrogram's does not fix the encoder)
    audio_channels: tuple[int, ...] = ALEXNET_CHANNELS  # the last one is C (= 256 in the paper)
    lrn_layers: int = 2  # LRN after the first two convolutions, as in AlexNet and deep-fusion Fig. 2


@dataclass(frozen=True)
class StreamConfig(EncoderConfig):
    """Encoders plus the 1-D attention of each stream.

    lambda_a = 0.3 and lambda_v = 1 are am-fbp's AFEW settings for its audio, video and fusion systems
    (Sec. IV); deep-fusion's first G-FBP used lambda_a = 0 (mean pooling).
    """

    temperature_a: float = 0.3  # lambda_a, Eq. 4
    temperature_v: float = 1.0  # lambda_v, Eq. 9


@dataclass(frozen=True)
class FBPConfig(StreamConfig):
    """G-FBP by default; ``adaptive`` gives AG-FBP, ``multi_level`` M-FBP, both AM-FBP (Sec. IV)."""

    O: int = 128  # G-FBP output size, Eq. 14
    K: int = 4  # K_G, the sum-pooling window of Eq. 14
    dropout: float = 0.3
    projection_bias: bool = False  # deep-fusion: P~ and Q~ are "fully connected layers without biases"
    adaptive: bool = False  # AG-FBP, Eqs. 15-18
    multi_level: bool = False  # add the intra-trunk FBP of Eq. 19
    H: int = 6  # intra-trunks per clip (AFEW; 19 for IEMOCAP)
    O_M: int = 192  # M-FBP output size
    K_M: int = 2  # the sum-pooling window of Eq. 19

    def __post_init__(self) -> None:
        # Bias-free projections make Eq. 18 a scalar mu * eta times Eq. 14, which the L2 normalisation
        # then removes: AG-FBP would silently equal G-FBP.
        if self.adaptive and not self.projection_bias:
            raise FBPInputError(
                "adaptive=True (AG-FBP) needs projection_bias=True: without biases mu and eta cancel "
                "in the L2 normalisation and AG-FBP equals G-FBP"
            )


class StreamOutput(NamedTuple):
    frames: Tensor  # (B, T, d) the elements attention weighs: a_i (Eq. 2) or Conv(v_i) (Eq. 8)
    mask: Tensor  # (B, T) True on valid frames
    weights: Tensor  # (B, T) attention weights, zero on padding, each row summing to one
    pooled: Tensor  # (B, d') e_a^g (Eq. 6) or e_v^g (Eq. 11)


@dataclass
class ClipOutput:
    logits: Tensor  # (B, num_classes)
    embedding: Tensor  # (B, E) the vector the classifier reads (Fig. 9 of am-fbp plots it)
    audio_weights: Tensor | None = None  # (B, T') attention over the encoder's time steps
    video_weights: Tensor | None = None  # (B, L) attention over video frames
    mu: Tensor | None = None  # (B,) AG-FBP audio factor, Eq. 15
    eta: Tensor | None = None  # (B,) AG-FBP video factor, Eq. 16


def _conv_length(lengths: Tensor, kernel: int, stride: int, padding: int) -> Tensor:
    return torch.div(lengths + 2 * padding - kernel, stride, rounding_mode="floor") + 1


def _zero_after(x: Tensor, lengths: Tensor) -> Tensor:
    """Zero the time steps (last axis) past each clip's length: the next layer must see there what it
    would see at the edge of an unpadded clip, i.e. zeros."""
    valid = torch.arange(x.shape[-1], device=x.device) < lengths[:, None]
    return x * valid[:, None, None, :]


class AudioEncoder(nn.Module):
    """AlexNet's five convolutions, fully convolutional, on the spectrogram as a 1-channel image.

    The image is frequency x time; after the last pooling the frequency axis is max-pooled to one so
    the output is T' x C, aligned in time with the video (am-fbp Sec. III-A). T' follows from T by the
    conv/pool length formula (:meth:`output_lengths`): about T / 32, one step per ~320 ms.
    """

    def __init__(self, channels: tuple[int, ...] = ALEXNET_CHANNELS, lrn_layers: int = 2) -> None:
        super().__init__()
        if len(channels) != len(_ALEXNET_CONVS):
            raise FBPInputError(f"the AlexNet encoder has 5 convolutions; got {len(channels)} channel sizes")
        self.convs = nn.ModuleList()
        self.lrns = nn.ModuleList()
        in_channels = 1
        for index, (out_channels, (kernel, stride, padding, _)) in enumerate(
            zip(channels, _ALEXNET_CONVS, strict=True)
        ):
            self.convs.append(nn.Conv2d(in_channels, out_channels, kernel, stride, padding))
            self.lrns.append(alexnet_lrn() if index < lrn_layers else nn.Identity())
            in_channels = out_channels
        self.pool = nn.MaxPool2d(_POOL_KERNEL, _POOL_STRIDE)
        self.out_dim = channels[-1]
        self.min_frames = next(t for t in range(1, 10_000) if self.output_lengths(torch.tensor([t])).item() >= 1)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Valid time steps T' left from T valid spectrogram frames."""
        for kernel, stride, padding, pooled in _ALEXNET_CONVS:
            lengths = _conv_length(lengths, kernel, stride, padding)
            if pooled:
                lengths = _conv_length(lengths, _POOL_KERNEL, _POOL_STRIDE, 0)
        return lengths

    def forward(self, spectrogram: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, F) spectrogram frames -> (B, T', C) encoded steps and their valid lengths (B,)."""
        if spectrogram.dim() != 3:
            raise FBPInputError(f"audio must be (batch, frames, bins), got shape {tuple(spectrogram.shape)}")
        if bool((lengths < self.min_frames).any()):
            raise FBPInputError(
                f"the audio encoder needs at least {self.min_frames} spectrogram frames per clip, "
                f"got lengths {lengths.tolist()}; drop or pad-with-silence shorter clips"
            )
        x = _zero_after(spectrogram.transpose(1, 2)[:, None], lengths)  # (B, 1, F, T)
        for conv, lrn, (kernel, stride, padding, pooled) in zip(self.convs, self.lrns, _ALEXNET_CONVS, strict=True):
            lengths = _conv_length(lengths, kernel, stride, padding)
            x = _zero_after(lrn(F.relu(conv(x))), lengths)
            if pooled:
                lengths = _conv_length(lengths, _POOL_KERNEL, _POOL_STRIDE, 0)
                x = _zero_after(self.pool(x), lengths)
        return x.amax(dim=2).transpose(1, 2), lengths


class FrameConv(nn.Module):
    """Conv(v_i) of Eq. 8: each frame's D_1 vector, as a D_1 x 1 image, through one 4 x 1 kernel of
    stride 4, giving D_1 / 4 values (1024 -> D = 256 in the paper). Frame by frame, so time is kept
    and padding stays out."""

    def __init__(self, video_dim: int) -> None:
        super().__init__()
        if video_dim % 4:
            raise FBPInputError(f"the 4x1 stride-4 convolution needs a video_dim divisible by 4, got {video_dim}")
        self.conv = nn.Conv1d(1, 1, kernel_size=4, stride=4)
        self.out_dim = video_dim // 4

    def forward(self, v: Tensor) -> Tensor:
        batch, frames, dim = v.shape
        return self.conv(v.reshape(batch * frames, 1, dim)).reshape(batch, frames, self.out_dim)


class ProjectionEncoder(nn.Module):
    """A pretrained front-end's vectors (openSMILE functionals or Whisper's pooled frames, one per 655 ms
    segment) projected step by step to the C channels the AlexNet FCN would give: the FCN is there to
    learn features from a spectrogram, which a pretrained front-end already is. Lengths are kept."""

    min_frames = 1

    def __init__(self, dim: int, channels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(dim, channels), nn.ReLU(), nn.Dropout(dropout))
        self.out_dim = channels

    def forward(self, steps: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        if steps.dim() != 3:
            raise FBPInputError(f"audio must be (batch, steps, dim), got shape {tuple(steps.shape)}")
        valid = torch.arange(steps.shape[1], device=steps.device) < lengths[:, None]
        return self.project(steps) * valid[..., None], lengths


def build_audio_encoder(config: EncoderConfig) -> AudioEncoder | ProjectionEncoder:
    """The papers' AlexNet FCN on the linear spectrogram, or a projection of a pretrained front-end."""
    if config.audio_frontend == "linear":
        return AudioEncoder(config.audio_channels, config.lrn_layers)
    if config.audio_dim is None:
        raise FBPInputError(f"the {config.audio_frontend} front-end's vectors need their width (audio_dim)")
    return ProjectionEncoder(config.audio_dim, config.audio_channels[-1])


class AudioStream(nn.Module):
    """Spectrogram -> AlexNet FCN (or a pretrained front-end's projection) -> attention pooling: e_a^g
    (Eqs. 2-6)."""

    def __init__(self, encoder: AudioEncoder | ProjectionEncoder, pooling: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.out_dim = cast(int, pooling.out_dim)  # every pooling sets an int out_dim; Module types it Tensor | Module

    def forward(self, spectrogram: Tensor, lengths: Tensor) -> StreamOutput:
        a, step_lengths = self.encoder(spectrogram, lengths)
        mask = lengths_to_mask(step_lengths, a.shape[1])
        pooled, weights = self.pooling(a, mask)
        return StreamOutput(a, mask, weights, pooled)


class VideoStream(nn.Module):
    """Face embeddings -> optional frame-wise reduction -> attention pooling: e_v^g (Eqs. 7-11)."""

    def __init__(self, pooling: nn.Module, reduction: nn.Module | None = None) -> None:
        super().__init__()
        self.reduction = reduction or nn.Identity()
        self.pooling = pooling
        self.out_dim = cast(int, pooling.out_dim)  # every pooling sets an int out_dim; Module types it Tensor | Module

    def forward(self, embeddings: Tensor, lengths: Tensor) -> StreamOutput:
        if embeddings.dim() != 3:
            raise FBPInputError(f"video must be (batch, frames, dim), got shape {tuple(embeddings.shape)}")
        v = self.reduction(embeddings)
        mask = lengths_to_mask(lengths, v.shape[1])
        pooled, weights = self.pooling(v, mask)
        return StreamOutput(v, mask, weights, pooled)


def build_audio_stream(config: StreamConfig) -> AudioStream:
    encoder = build_audio_encoder(config)
    C = encoder.out_dim
    return AudioStream(encoder, ScaledSoftmaxAttention(C, config.temperature_a, hidden_dim=C))


def build_video_stream(config: StreamConfig) -> VideoStream:
    if config.video_dim is None:
        raise FBPInputError(
            "the video stream needs the face embeddings' width (video_dim); these features have no video"
        )
    conv = FrameConv(config.video_dim)
    return VideoStream(ScaledSoftmaxAttention(conv.out_dim, config.temperature_v), reduction=conv)


def _sum_pool(x: Tensor, K: int) -> Tensor:
    """SumPooling(x, K): sums over non-overlapping windows of K consecutive elements."""
    return x.unflatten(-1, (-1, K)).sum(dim=-1)


class FactorizedBilinearPooling(nn.Module):
    """I = SumPooling(P~^T e_a^g o Q~^T e_v^g, K), then L2-normalised (Eq. 14; deep-fusion Fig. 4).

    Order as in deep-fusion Fig. 4: two projections, element-wise product, dropout, sum pooling,
    L2 normalisation (the product's magnitude varies too much to feed a classifier as is).
    """

    def __init__(self, C: int, D: int, O: int = 128, K: int = 4, dropout: float = 0.3, bias: bool = False) -> None:
        super().__init__()
        self.P_tilde = nn.Linear(C, K * O, bias=bias)
        self.Q_tilde = nn.Linear(D, K * O, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.K = K
        self.out_dim = O

    def forward(self, e_a_g: Tensor, e_v_g: Tensor) -> Tensor:
        joint = self.dropout(self.P_tilde(e_a_g) * self.Q_tilde(e_v_g))
        return F.normalize(_sum_pool(joint, self.K), dim=-1)


def adaptive_factors(e_a_g: Tensor, e_v_g: Tensor) -> tuple[Tensor, Tensor]:
    """mu = |e_a^g| / (|e_a^g| + |e_v^g|), eta = |e_v^g| / (...) per sample (Eqs. 15-16); mu + eta = 1."""
    norm_a, norm_v = e_a_g.norm(dim=-1), e_v_g.norm(dim=-1)
    total = (norm_a + norm_v).clamp_min(torch.finfo(e_a_g.dtype).tiny)
    return norm_a / total, norm_v / total


def trunk_shares(lengths: Tensor, max_len: int, H: int) -> Tensor:
    """(B, H, max_len): the share of frame i that falls in intra-trunk h.

    Each clip's valid span [0, length) is cut into H equal trunks and frame i covers [i, i + 1), so
    audio and video trunks h cover the same part of the clip whatever their frame rates, every frame's
    shares sum to one (sum_h e^h = e^g) and padded frames get none. am-fbp pads every clip to one
    length L = H x T instead (Sec. III-E); cutting the valid span keeps the result free of padding
    and gives short clips H non-empty trunks.
    """
    edges = lengths[:, None].to(torch.float32) * torch.arange(H + 1, device=lengths.device) / H  # (B, H+1)
    frame_start = torch.arange(max_len, device=lengths.device, dtype=torch.float32)
    overlap_end = torch.minimum(edges[:, 1:, None], frame_start + 1)
    overlap_start = torch.maximum(edges[:, :-1, None], frame_start)
    return (overlap_end - overlap_start).clamp_min(0.0)


def intra_trunk_vectors(stream: StreamOutput, H: int) -> Tensor:
    """e^h = sum of the attention-weighted elements e^i (Eqs. 5, 10) falling in trunk h: (B, H, d)."""
    shares = trunk_shares(stream.mask.sum(dim=1), stream.frames.shape[1], H)
    weighted_frames = stream.weights[..., None] * stream.frames
    return torch.einsum("bht,btd->bhd", shares, weighted_frames)


class IntraTrunkFBP(nn.Module):
    """I^M = sum_h SumPooling(P~_h^T e_a^h o Q~_h^T e_v^h, K_M), then L2-normalised (Eq. 19).

    Each trunk h has its own P~_h and Q~_h.
    """

    def __init__(self, C: int, D: int, H: int = 6, O_M: int = 192, K_M: int = 2, dropout: float = 0.3) -> None:
        super().__init__()
        self.P_tilde = nn.Parameter(torch.empty(H, C, K_M * O_M).uniform_(-(C**-0.5), C**-0.5))
        self.Q_tilde = nn.Parameter(torch.empty(H, D, K_M * O_M).uniform_(-(D**-0.5), D**-0.5))
        self.dropout = nn.Dropout(dropout)
        self.K_M = K_M
        self.out_dim = O_M

    def forward(self, e_a_h: Tensor, e_v_h: Tensor) -> Tensor:
        projected_a = torch.einsum("bhc,hck->bhk", e_a_h, self.P_tilde)
        projected_v = torch.einsum("bhd,hdk->bhk", e_v_h, self.Q_tilde)
        joint = self.dropout(projected_a * projected_v)
        return F.normalize(_sum_pool(joint, self.K_M).sum(dim=1), dim=-1)


class FBPNet(nn.Module):
    """Audio and video streams fused by FBP, then one FC layer to the classes (am-fbp Fig. 1).

    - G-FBP: I (Eq. 14) from the global vectors e_a^g, e_v^g.
    - AG-FBP: I^A (Eq. 18), the same on mu e_a^g and eta e_v^g.
    - M-FBP: the global I concatenated with the intra-trunk I^M (Eq. 19): "multi-level information of
      both global-trunk and intra-trunk data" (Sec. IV-D).
    - AM-FBP: I^A concatenated with I^M (Sec. III-E).
    """

    def __init__(self, config: FBPConfig) -> None:
        super().__init__()
        self.config = config
        self.audio_stream = build_audio_stream(config)
        self.video_stream = build_video_stream(config)
        C, D = self.audio_stream.out_dim, self.video_stream.out_dim
        self.global_fbp = FactorizedBilinearPooling(C, D, config.O, config.K, config.dropout, config.projection_bias)
        self.intra_trunk_fbp = (
            IntraTrunkFBP(C, D, config.H, config.O_M, config.K_M, config.dropout) if config.multi_level else None
        )
        fusion_dim = config.O + (config.O_M if config.multi_level else 0)
        self.classifier = nn.Linear(fusion_dim, config.num_classes)

    def forward(self, audio: Tensor, audio_lengths: Tensor, video: Tensor, video_lengths: Tensor) -> ClipOutput:
        audio_out = self.audio_stream(audio, audio_lengths)
        video_out = self.video_stream(video, video_lengths)
        e_a_g, e_v_g = audio_out.pooled, video_out.pooled
        mu = eta = None
        if self.config.adaptive:
            mu, eta = adaptive_factors(e_a_g, e_v_g)
            fused = self.global_fbp(mu[:, None] * e_a_g, eta[:, None] * e_v_g)  # I^A, Eq. 18
        else:
            fused = self.global_fbp(e_a_g, e_v_g)  # I, Eq. 14
        if self.intra_trunk_fbp is not None:
            e_a_h = intra_trunk_vectors(audio_out, self.config.H)
            e_v_h = intra_trunk_vectors(video_out, self.config.H)
            I_M = self.intra_trunk_fbp(e_a_h, e_v_h)  # Eq. 19
            fused = torch.cat([fused, I_M], dim=-1)
        return ClipOutput(
            logits=self.classifier(fused),
            embedding=fused,
            audio_weights=audio_out.weights,
            video_weights=video_out.weights,
            mu=mu,
            eta=eta,
        )
