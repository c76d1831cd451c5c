"""Clip-level baselines: single streams, feature concatenation, decision fusion, and the intra-modal
attention variants of emotiw2019-features-fusion.txt.

The single-stream and concatenation models reuse the FBP family's streams (models/fbp.py) so that a
comparison with G-FBP changes the fusion alone. Inputs and outputs are those of :class:`FBPNet`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from models.attention import RelationAttention, SelfAttention, TransformerAttention
from models.fbp import (
    AudioStream,
    ClipOutput,
    EncoderConfig,
    FactorizedBilinearPooling,
    FBPInputError,
    StreamConfig,
    VideoStream,
    build_audio_encoder,
    build_audio_stream,
    build_video_stream,
)


class AudioOnly(nn.Module):
    """Audio stream and one FC layer: am-fbp's "audio system" (1D-ABFCN, Sec. III-A)."""

    def __init__(self, config: StreamConfig) -> None:
        super().__init__()
        self.audio_stream = build_audio_stream(config)
        self.classifier = nn.Linear(self.audio_stream.out_dim, config.num_classes)

    def forward(self, audio: Tensor, audio_lengths: Tensor) -> ClipOutput:
        stream = self.audio_stream(audio, audio_lengths)
        return ClipOutput(self.classifier(stream.pooled), stream.pooled, audio_weights=stream.weights)


class VideoOnly(nn.Module):
    """Video stream and one FC layer: deep-fusion's video system (Sec. III-B)."""

    def __init__(self, config: StreamConfig) -> None:
        super().__init__()
        self.video_stream = build_video_stream(config)
        self.classifier = nn.Linear(self.video_stream.out_dim, config.num_classes)

    def forward(self, video: Tensor, video_lengths: Tensor) -> ClipOutput:
        stream = self.video_stream(video, video_lengths)
        return ClipOutput(self.classifier(stream.pooled), stream.pooled, video_weights=stream.weights)


class ConcatFusion(nn.Module):
    """[e_a^g ; e_v^g] into one FC layer: deep-fusion's "simple concatenation" in place of FBP (Table II)."""

    def __init__(self, config: StreamConfig) -> None:
        super().__init__()
        self.audio_stream = build_audio_stream(config)
        self.video_stream = build_video_stream(config)
        self.classifier = nn.Linear(self.audio_stream.out_dim + self.video_stream.out_dim, config.num_classes)

    def forward(self, audio: Tensor, audio_lengths: Tensor, video: Tensor, video_lengths: Tensor) -> ClipOutput:
        audio_out = self.audio_stream(audio, audio_lengths)
        video_out = self.video_stream(video, video_lengths)
        fused = torch.cat([audio_out.pooled, video_out.pooled], dim=-1)
        return ClipOutput(self.classifier(fused), fused, audio_out.weights, video_out.weights)


@dataclass(frozen=True)
class DecisionConfig(StreamConfig):
    audio_weight: float = 0.5  # the video posterior gets 1 - audio_weight

    def __post_init__(self) -> None:
        if not 0.0 < self.audio_weight < 1.0:
            raise FBPInputError(
                f"audio_weight must lie strictly between 0 and 1, got {self.audio_weight}; "
                "for one modality alone use the 'audio' or 'video' model"
            )


class DecisionFusion(nn.Module):
    """Posterior averaging of an audio-only and a video-only system (am-fbp Sec. I, decision level).

    ``logits`` are log(w p_a + (1 - w) p_v): their softmax is the averaged posterior, so cross-entropy
    on them trains both systems through the fused decision.
    """

    def __init__(self, config: DecisionConfig) -> None:
        super().__init__()
        self.audio = AudioOnly(config)
        self.video = VideoOnly(config)
        self.audio_weight = config.audio_weight

    def forward(self, audio: Tensor, audio_lengths: Tensor, video: Tensor, video_lengths: Tensor) -> ClipOutput:
        audio_out = self.audio(audio, audio_lengths)
        video_out = self.video(video, video_lengths)
        log_posteriors = torch.stack(
            [
                torch.log_softmax(audio_out.logits, dim=-1) + math.log(self.audio_weight),
                torch.log_softmax(video_out.logits, dim=-1) + math.log1p(-self.audio_weight),
            ]
        )
        return ClipOutput(
            logits=torch.logsumexp(log_posteriors, dim=0),
            embedding=torch.cat([audio_out.embedding, video_out.embedding], dim=-1),
            audio_weights=audio_out.audio_weights,
            video_weights=video_out.video_weights,
        )


AttentionKind = Literal["self", "relation", "transformer"]


@dataclass(frozen=True)
class IntraModalConfig(EncoderConfig):
    """emotiw2019's intra-modal attention on both streams, then FBP (Table 2's diagonal)."""

    attention: AttentionKind = "transformer"  # the best of Table 2 (61.1% on AFEW validation)
    attention_dim: int = 256  # m, the width W2 projects to in Eq. 5 (transformer attention only)
    O: int = 128
    K: int = 4
    dropout: float = 0.3


def build_pooling(kind: AttentionKind, dim: int, attention_dim: int) -> nn.Module:
    if kind == "self":
        return SelfAttention(dim)
    if kind == "relation":
        return RelationAttention(dim)
    if kind == "transformer":
        return TransformerAttention(dim, attention_dim)
    raise FBPInputError(f"unknown intra-modal attention {kind!r}; choose one of: self, relation, transformer")


class IntraModalAttentionFBP(nn.Module):
    """Both streams pooled by one emotiw2019 attention, fused by FBP (emotiw2019 Eq. 9), one FC layer.

    The audio frames are the AlexNet FCN's time steps (frequency max-pooled, as in the FBP family, so
    masks stay one-dimensional); the video frames are the face embeddings as they come.
    """

    def __init__(self, config: IntraModalConfig) -> None:
        super().__init__()
        encoder = build_audio_encoder(config)
        self.audio_stream = AudioStream(encoder, build_pooling(config.attention, encoder.out_dim, config.attention_dim))
        assert config.video_dim is not None  # build_model refuses features without video for this model
        self.video_stream = VideoStream(build_pooling(config.attention, config.video_dim, config.attention_dim))
        self.fbp = FactorizedBilinearPooling(
            self.audio_stream.out_dim, self.video_stream.out_dim, config.O, config.K, config.dropout
        )
        self.classifier = nn.Linear(config.O, config.num_classes)

    def forward(self, audio: Tensor, audio_lengths: Tensor, video: Tensor, video_lengths: Tensor) -> ClipOutput:
        audio_out = self.audio_stream(audio, audio_lengths)
        video_out = self.video_stream(video, video_lengths)
        z = self.fbp(audio_out.pooled, video_out.pooled)
        return ClipOutput(self.classifier(z), z, audio_out.weights, video_out.weights)
