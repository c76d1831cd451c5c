"""The papers' torch modules: shapes, attention weights, FBP normalisation, padding invariance, RBM
pre-training, tiny overfits, and the registry's modality check. Sizes are small so the file stays fast."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import MODELS, InputShapes, ModalityError, build_model, check_modalities, models_for
from models.attention import (
    AttentionInputError,
    RelationAttention,
    ScaledSoftmaxAttention,
    SelfAttention,
    TransformerAttention,
    lengths_to_mask,
)
from models.avef import (
    AVEF,
    DBN,
    RBM,
    AVEFConfig,
    AVEFInputError,
    ClipSVM,
    average_pool_segments,
    pretrain_dbn,
)
from models.fbp import (
    AudioEncoder,
    FactorizedBilinearPooling,
    FBPConfig,
    FBPInputError,
    FrameConv,
    adaptive_factors,
    build_audio_stream,
    build_video_stream,
    intra_trunk_vectors,
    trunk_shares,
)
from models.registry import ModelSpecError

NUM_CLASSES = 3
VIDEO_DIM = 64  # stands in for 304 (FER2013 fc2) or 512 (VGGFace2): any multiple of 4
SPECTROGRAM_BINS = 200
# The paper's segment sizes; 64 px crops (avemo's default 48 is the FER2013 network's input).
SHAPES = InputShapes(mel_bands=64, segment_frames=64, faces_per_segment=16, crop_size=64, embedding_dim=VIDEO_DIM)
SMALL_CROPS = dataclasses.replace(SHAPES, crop_size=32)
CLIP_MODELS = [name for name, spec in MODELS.items() if spec.input_kind == "clip"]
SEGMENT_MODELS = [name for name, spec in MODELS.items() if spec.input_kind == "segment"]


def small_hyperparameters(name: str) -> dict:
    """Paper shapes, CPU widths: 5 convolutions of 4-8 channels, tiny FBP outputs."""
    if name == "avef":
        return dict(width=1 / 8, fc_dim=32, dbn_hidden=(32, 16))
    if name in ("avef_audio", "avef_video"):
        return dict(width=1 / 8, fc_dim=32)
    hyper: dict = dict(audio_channels=(4, 8, 8, 8, 8))
    if name.endswith("fbp"):
        hyper.update(O=16, O_M=12)
    if name.endswith("_attention"):
        hyper.update(attention_dim=8, O=16)
    return hyper


def clip_batch(generator: torch.Generator, audio_lengths: list[int], video_lengths: list[int]) -> dict:
    """Spectrogram frames (B, T, 200) and face embeddings (B, L, D), padded with garbage, not zeros, so
    that any leak of padding into a result shows."""
    audio = torch.randn(len(audio_lengths), max(audio_lengths), SPECTROGRAM_BINS, generator=generator).abs()
    video = torch.randn(len(video_lengths), max(video_lengths), VIDEO_DIM, generator=generator)
    return dict(
        audio=audio, audio_lengths=torch.tensor(audio_lengths), video=video, video_lengths=torch.tensor(video_lengths)
    )


def inputs_for(name: str, batch: dict) -> dict:
    needs = MODELS[name].needs
    return {key: value for key, value in batch.items() if key.split("_")[0] in needs}


def pad_time(x: torch.Tensor, extra: int, generator: torch.Generator) -> torch.Tensor:
    return torch.cat([x, 100 * torch.randn(x.shape[0], extra, x.shape[2], generator=generator)], dim=1)


# --- attention ---------------------------------------------------------------------------------


def test_lengths_to_mask_marks_the_first_frames_and_rejects_empty_clips() -> None:
    mask = lengths_to_mask(torch.tensor([2, 4]), 4)
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True]]
    with pytest.raises(AttentionInputError, match="1..4"):
        lengths_to_mask(torch.tensor([0, 4]), 4)


POOLINGS = {
    "scaled": lambda d: ScaledSoftmaxAttention(d, temperature=1.0, hidden_dim=5),
    "scaled_no_projection": lambda d: ScaledSoftmaxAttention(d, temperature=0.5),
    "self": SelfAttention,
    "relation": RelationAttention,
    "transformer": lambda d: TransformerAttention(d, hidden_dim=5),
}


@pytest.mark.parametrize("kind", POOLINGS)
def test_attention_weights_sum_to_one_and_ignore_padding(kind: str) -> None:
    torch.manual_seed(0)
    pooling = POOLINGS[kind](6)
    x = torch.randn(3, 7, 6)
    lengths = torch.tensor([7, 4, 1])
    pooled, weights = pooling(x, lengths_to_mask(lengths, 7))
    assert pooled.shape == (3, pooling.out_dim)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    assert (weights >= 0).all()
    assert (weights[1, 4:] == 0).all() and (weights[2, 1:] == 0).all()
    # Garbage in the padding changes nothing.
    x_garbage = x.clone()
    x_garbage[1, 4:] = 1e3
    x_garbage[2, 1:] = -1e3
    pooled_garbage, _ = pooling(x_garbage, lengths_to_mask(lengths, 7))
    torch.testing.assert_close(pooled_garbage, pooled)


def test_temperature_zero_gives_uniform_weights_over_valid_frames_that_is_mean_pooling() -> None:
    torch.manual_seed(0)
    attention = ScaledSoftmaxAttention(4, temperature=0.0, hidden_dim=4)
    x = torch.randn(2, 5, 4)
    lengths = torch.tensor([5, 3])
    pooled, weights = attention(x, lengths_to_mask(lengths, 5))
    expected = torch.tensor([[0.2] * 5, [1 / 3] * 3 + [0.0, 0.0]])
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(pooled, torch.stack([x[0].mean(0), x[1, :3].mean(0)]))


def test_scaled_softmax_attention_matches_eqs_3_and_4_by_hand() -> None:
    attention = ScaledSoftmaxAttention(2, temperature=2.0, hidden_dim=2)
    with torch.no_grad():
        attention.W.weight.copy_(torch.eye(2))
        attention.W.bias.zero_()
        attention.u.weight.copy_(torch.tensor([[1.0, 0.0]]))
    x = torch.tensor([[[0.5, 9.0], [-1.0, 9.0], [2.0, 9.0]]])
    _, weights = attention(x, torch.ones(1, 3, dtype=torch.bool))
    gamma = torch.tanh(torch.tensor([0.5, -1.0, 2.0]))
    torch.testing.assert_close(weights[0], torch.softmax(2.0 * gamma, dim=0))


def test_self_attention_with_equal_scores_is_the_mean_and_relation_doubles_the_width() -> None:
    attention = SelfAttention(3)
    nn.init.zeros_(attention.W0.weight)
    x = torch.randn(1, 4, 3)
    pooled, weights = attention(x, torch.ones(1, 4, dtype=torch.bool))
    torch.testing.assert_close(pooled, x.mean(dim=1))
    torch.testing.assert_close(weights, torch.full((1, 4), 0.25))
    assert RelationAttention(3)(x, torch.ones(1, 4, dtype=torch.bool))[0].shape == (1, 6)


# --- FBP family parts --------------------------------------------------------------------------


def test_audio_encoder_output_lengths_match_its_output_and_short_clips_are_refused() -> None:
    encoder = AudioEncoder((4, 8, 8, 8, 8))
    assert encoder.min_frames == 63  # one step of T' needs ~0.63 s of 10 ms frames
    for frames in (63, 64, 200, 301):
        steps, lengths = encoder(torch.rand(1, frames, SPECTROGRAM_BINS), torch.tensor([frames]))
        assert steps.shape == (1, lengths.item(), 8)
        assert lengths.item() == encoder.output_lengths(torch.tensor([frames])).item()
    assert encoder.output_lengths(torch.tensor([64, 200, 300])).tolist() == [1, 5, 8]  # T' ~ T / 32
    with pytest.raises(FBPInputError, match="at least 63 spectrogram frames"):
        encoder(torch.rand(1, 62, SPECTROGRAM_BINS), torch.tensor([62]))


def test_frame_conv_is_one_4x1_stride_4_kernel_per_frame() -> None:
    conv = FrameConv(8)
    with torch.no_grad():
        conv.conv.weight.copy_(torch.tensor([[[1.0, 2.0, 3.0, 4.0]]]))
        conv.conv.bias.fill_(0.5)
    v = torch.arange(16.0).reshape(1, 2, 8)
    expected = v.reshape(1, 2, 2, 4) @ torch.tensor([1.0, 2.0, 3.0, 4.0]) + 0.5
    torch.testing.assert_close(conv(v), expected)
    with pytest.raises(FBPInputError, match="divisible by 4"):
        FrameConv(30)


def test_fbp_output_is_l2_normalised_sum_pooled_bilinear_form() -> None:
    torch.manual_seed(0)
    fbp = FactorizedBilinearPooling(C=5, D=3, O=4, K=2, dropout=0.3).eval()
    a, v = torch.randn(2, 5), torch.randn(2, 3)
    out = fbp(a, v)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))
    # Eq. 13 by hand: I_j = sum_d (P_j^d . a)(Q_j^d . v), over the j-th window of K columns.
    P, Q = fbp.P_tilde.weight, fbp.Q_tilde.weight  # (K*O, C), (K*O, D)
    by_hand = ((a @ P.T) * (v @ Q.T)).reshape(2, 4, 2).sum(-1)
    torch.testing.assert_close(out, F.normalize(by_hand, dim=-1))


def test_adaptive_factors_follow_eqs_15_16_and_sum_to_one() -> None:
    e_a_g = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    e_v_g = torch.tensor([[0.0, 5.0, 0.0], [2.0, 2.0, 1.0]])
    mu, eta = adaptive_factors(e_a_g, e_v_g)
    torch.testing.assert_close(mu, torch.tensor([0.5, 0.25]))
    torch.testing.assert_close(eta, torch.tensor([0.5, 0.75]))


def test_without_biases_mu_and_eta_cancel_so_agfbp_demands_them() -> None:
    torch.manual_seed(0)
    fbp = FactorizedBilinearPooling(C=4, D=4, O=3, K=2, bias=False).eval()
    a, v = torch.randn(2, 4), torch.randn(2, 4)
    mu, eta = adaptive_factors(a, v)
    torch.testing.assert_close(fbp(mu[:, None] * a, eta[:, None] * v), fbp(a, v))
    with pytest.raises(FBPInputError, match="projection_bias=True"):
        FBPConfig(NUM_CLASSES, VIDEO_DIM, adaptive=True)


def test_trunk_shares_cut_each_clip_into_h_equal_parts() -> None:
    shares = trunk_shares(torch.tensor([3, 2]), max_len=4, H=2)
    expected = torch.tensor(
        [
            [[1.0, 0.5, 0.0, 0.0], [0.0, 0.5, 1.0, 0.0]],
            [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]],
        ]
    )
    torch.testing.assert_close(shares, expected)
    # A clip shorter than H still fills every trunk, each with a share of its one frame.
    torch.testing.assert_close(trunk_shares(torch.tensor([1]), 1, 4), torch.full((1, 4, 1), 0.25))


def test_intra_trunk_vectors_add_up_to_the_global_vector() -> None:
    torch.manual_seed(0)
    config = FBPConfig(NUM_CLASSES, VIDEO_DIM, audio_channels=(4, 8, 8, 8, 8))
    batch = clip_batch(torch.Generator().manual_seed(1), [200, 130], [9, 4])
    for stream, x, lengths in (
        (build_audio_stream(config), batch["audio"], batch["audio_lengths"]),
        (build_video_stream(config), batch["video"], batch["video_lengths"]),
    ):
        out = stream(x, lengths)
        e_h = intra_trunk_vectors(out, H=6)
        assert e_h.shape == (2, 6, out.pooled.shape[1])
        torch.testing.assert_close(e_h.sum(dim=1), out.pooled)


# --- clip models -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CLIP_MODELS)
def test_clip_model_forward_shapes_and_padding_invariance(name: str) -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build_model(name, NUM_CLASSES, SHAPES, **small_hyperparameters(name)).eval()
    batch = clip_batch(generator, audio_lengths=[190, 63, 120], video_lengths=[12, 3, 7])
    out = model(**inputs_for(name, batch))
    assert out.logits.shape == (3, NUM_CLASSES)
    assert torch.isfinite(out.logits).all()
    if out.video_weights is not None:
        torch.testing.assert_close(out.video_weights.sum(dim=1), torch.ones(3))
        assert (out.video_weights[1, 3:] == 0).all()
    if out.audio_weights is not None:
        torch.testing.assert_close(out.audio_weights.sum(dim=1), torch.ones(3))

    # Longer padding with garbage, and each clip alone without padding: the same logits.
    padded = dict(batch, audio=pad_time(batch["audio"], 70, generator), video=pad_time(batch["video"], 9, generator))
    torch.testing.assert_close(model(**inputs_for(name, padded)).logits, out.logits, atol=1e-5, rtol=1e-4)
    for index in range(3):
        alone = {
            "audio": batch["audio"][index : index + 1, : batch["audio_lengths"][index]],
            "audio_lengths": batch["audio_lengths"][index : index + 1],
            "video": batch["video"][index : index + 1, : batch["video_lengths"][index]],
            "video_lengths": batch["video_lengths"][index : index + 1],
        }
        logits_alone = model(**inputs_for(name, alone)).logits
        torch.testing.assert_close(logits_alone, out.logits[index : index + 1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["gfbp", "agfbp", "mfbp", "amfbp"])
def test_fbp_embeddings_are_l2_normalised_per_level(name: str) -> None:
    torch.manual_seed(0)
    hyper = small_hyperparameters(name)
    model = build_model(name, NUM_CLASSES, SHAPES, **hyper).eval()
    out = model(**clip_batch(torch.Generator().manual_seed(0), [100, 80], [5, 6]))
    parts = out.embedding.split([hyper["O"], hyper["O_M"]], dim=-1) if "m" in name[:2] else (out.embedding,)
    assert out.embedding.shape[-1] == sum(part.shape[-1] for part in parts)
    for part in parts:
        torch.testing.assert_close(part.norm(dim=-1), torch.ones(2))
    if name.startswith(("ag", "am")):
        torch.testing.assert_close(out.mu + out.eta, torch.ones(2))
        assert ((out.mu > 0) & (out.mu < 1)).all()
    else:
        assert out.mu is None and out.eta is None


def test_decision_fusion_averages_the_two_posteriors() -> None:
    torch.manual_seed(0)
    model = build_model("decision", NUM_CLASSES, SHAPES, **small_hyperparameters("decision")).eval()
    batch = clip_batch(torch.Generator().manual_seed(0), [100, 70], [5, 2])
    fused = torch.softmax(model(**batch).logits, dim=-1)
    p_a = torch.softmax(model.audio(batch["audio"], batch["audio_lengths"]).logits, dim=-1)
    p_v = torch.softmax(model.video(batch["video"], batch["video_lengths"]).logits, dim=-1)
    torch.testing.assert_close(fused, (p_a + p_v) / 2)


# --- AVEF --------------------------------------------------------------------------------------


def test_avef_returns_logits_and_the_dbn_last_hidden_layer() -> None:
    torch.manual_seed(0)
    model = build_model("avef", NUM_CLASSES, SHAPES, **small_hyperparameters("avef")).eval()
    audio, video = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 16, 64, 64)
    out = model(audio, video)
    assert out.logits.shape == (2, NUM_CLASSES) and out.hidden.shape == (2, 16)
    assert model.visible(audio, video).shape == (2, 64)  # [fc7_audio ; fc7_visual]
    with pytest.raises(AVEFInputError, match=r"\(batch, 3, 16, 64, 64\)"):
        model(audio, torch.randn(2, 3, 16, 48, 48))


def test_avef_widths_default_to_the_paper_and_its_input_sizes_are_given() -> None:
    paper_inputs = dict(mel_bins=64, mel_frames=64, frames=16)
    config = AVEFConfig(6, crop_size=64, **paper_inputs)
    assert (2 * config.fc_dim, *config.dbn_hidden) == (8192, 4096, 2048)
    small = AVEF(
        AVEFConfig(NUM_CLASSES, crop_size=32, width=1 / 8, fc_dim=16, dbn_hidden=(512, 256), **paper_inputs)
    ).eval()
    out = small(torch.randn(1, 3, 64, 64), torch.randn(1, 3, 16, 32, 32))
    assert out.hidden.shape == (1, 256)


def test_rbm_cd1_lowers_reconstruction_error_on_binary_patterns() -> None:
    torch.manual_seed(0)
    prototypes = torch.tensor([[1.0] * 6 + [0.0] * 6, [0.0] * 6 + [1.0] * 6, [1.0, 0.0] * 6])
    flips = (torch.rand(60, 12) < 0.05).float()
    data = (prototypes[torch.arange(60) % 3] - flips).abs()
    rbm = RBM(nn.Linear(12, 6))
    before = rbm.reconstruction_error(data)
    for _ in range(300):
        rbm.contrastive_divergence(data, lr=0.1)
    after = rbm.reconstruction_error(data)
    assert after < 0.5 * before, (before, after)


def test_pretrain_dbn_trains_each_hidden_layer_in_place() -> None:
    torch.manual_seed(0)
    dbn = DBN(visible=10, hidden=(8, 4), num_classes=2)
    weights_before = [layer.weight.clone() for layer in dbn.hidden_layers]
    features = [torch.randn(16, 10) for _ in range(3)]
    errors = pretrain_dbn(dbn, features, epochs=2, lr=0.01)
    assert len(errors) == 2 and all(math.isfinite(e) for e in errors)
    for before, layer in zip(weights_before, dbn.hidden_layers, strict=True):
        assert not torch.equal(before, layer.weight)
    with pytest.raises(TypeError, match="one-shot iterator"):
        pretrain_dbn(dbn, iter(features), epochs=1)


def test_average_pool_segments_means_each_clips_rows_in_first_seen_order() -> None:
    embeddings = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0], [5.0, 6.0]])
    clips, pooled = average_pool_segments(torch.tensor(embeddings), ["b", "b", "a", "b"])
    assert clips == ["b", "a"]
    np.testing.assert_allclose(pooled, [[3.0, 4.0], [10.0, 0.0]])
    with pytest.raises(AVEFInputError, match="one clip id per segment"):
        average_pool_segments(embeddings, ["a"])


def test_clip_svm_separates_clusters_and_gives_probabilities() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    labels = np.repeat(["anger", "happiness", "sadness"], 10)
    x = centres[np.repeat(np.arange(3), 10)] + 0.1 * rng.standard_normal((30, 3))
    svm = ClipSVM(degree=3, C=1.0, coef0=1.0).fit(x, labels)
    assert svm.svc.kernel == "poly"
    proba = svm.predict_proba(centres)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(svm.classes_[proba.argmax(axis=1)]) == ["anger", "happiness", "sadness"]
    assert list(svm.predict(centres)) == ["anger", "happiness", "sadness"]


def test_clip_svm_fits_with_a_class_of_one_clip_and_warns() -> None:
    """No calibration folds exist for a single clip: it calibrates on its training vectors instead."""
    centres = np.array([[2.0, 0.0], [0.0, 2.0]])
    x = np.vstack([centres[[0, 0, 0]] + [[0.1, 0.0], [0.0, 0.1], [-0.1, 0.0]], centres[[1]]])
    labels = np.array(["anger", "anger", "anger", "sadness"])
    with pytest.warns(UserWarning, match="single training example"):
        svm = ClipSVM(degree=3, C=1.0, coef0=1.0).fit(x, labels)
    proba = svm.predict_proba(centres)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(svm.classes_) == ["anger", "sadness"]


# --- tiny overfit: every registered model learns 8 fixed samples --------------------------------


def overfit_inputs(name: str) -> tuple[dict, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    if name == "avef":
        return dict(
            audio=torch.randn(8, 3, 64, 64, generator=generator),
            video=torch.randn(8, 3, 16, 32, 32, generator=generator),
        ), labels
    if name == "avef_audio":
        return dict(audio=torch.randn(8, 3, 64, 64, generator=generator)), labels
    if name == "avef_video":
        return dict(video=torch.randn(8, 3, 16, 32, 32, generator=generator)), labels
    batch = clip_batch(generator, [63, 80, 100, 70, 90, 64, 75, 110], [3, 5, 8, 2, 6, 4, 7, 8])
    # Each class lifts its own band of frequencies and of embedding dimensions: both streams carry the
    # label, as in an emotional clip, so every fusion (posterior averaging too) can learn it quickly.
    for index, label in enumerate(labels.tolist()):
        batch["audio"][index, :, 60 * label : 60 * label + 60] += 2.0
        batch["video"][index, :, 16 * label : 16 * label + 16] += 2.0
    return inputs_for(name, batch), labels


def train_until_all_correct(model: nn.Module, inputs: dict, labels: torch.Tensor, steps: int, lr: float) -> int:
    """Adam on the fixed batch; returns the step count at 100% accuracy or fails. Dropout is off, so
    the training forward's logits are the eval ones and one forward per step suffices."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    for step in range(steps):
        logits = model(**inputs).logits
        if (logits.argmax(dim=-1) == labels).all():
            return step
        loss = F.cross_entropy(logits, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    pytest.fail(f"{type(model).__name__} missed 100% train accuracy on {len(labels)} samples in {steps} steps")


OVERFIT_MODELS = [name for name in CLIP_MODELS + SEGMENT_MODELS if name != "avef"]


@pytest.mark.parametrize("name", OVERFIT_MODELS)
def test_tiny_overfit(name: str) -> None:
    torch.manual_seed(0)
    hyper = small_hyperparameters(name)
    if "dropout" in MODELS[name].hyperparameters:
        hyper["dropout"] = 0.0
    model = build_model(name, NUM_CLASSES, SMALL_CROPS if name == "avef_video" else SHAPES, **hyper)
    inputs, labels = overfit_inputs(name)
    train_until_all_correct(model, inputs, labels, steps=150, lr=1e-2 if MODELS[name].input_kind == "clip" else 3e-3)


def test_dbn_overfits_fixed_segment_features_and_avef_fine_tunes_jointly() -> None:
    torch.manual_seed(0)
    inputs, labels = overfit_inputs("avef")
    train_until_all_correct(DBN(64, (32, 16), NUM_CLASSES), {"visible": torch.randn(8, 64)}, labels, steps=150, lr=1e-2)
    model = build_model("avef", NUM_CLASSES, SMALL_CROPS, **dict(small_hyperparameters("avef"), dropout=0.0))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        logits = model(**inputs).logits
        loss = F.cross_entropy(logits, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    # Without the standardised visible layer the joint network sat at the majority class (3/8, loss 1.08).
    assert losses[-1] < losses[0] - 0.15, losses
    assert (logits.argmax(dim=-1) == labels).float().mean() >= 0.75


# --- registry ----------------------------------------------------------------------------------


def test_registry_declares_needs_and_input_kinds() -> None:
    assert set(MODELS) >= {
        "avef",
        "gfbp",
        "agfbp",
        "mfbp",
        "amfbp",
        "concat",
        "decision",
        "audio",
        "video",
        "self_attention",
        "relation_attention",
        "transformer_attention",
        "avef_audio",
        "avef_video",
    }
    assert MODELS["audio"].needs == {"audio"} and MODELS["audio"].input_kind == "clip"
    assert MODELS["video"].needs == {"video"} and MODELS["avef_video"].input_kind == "segment"
    assert MODELS["amfbp"].needs == {"audio", "video"}
    assert models_for({"audio"}) == ["audio", "logreg", "svm", "fusion", "avef_audio"]


def test_model_needing_a_missing_modality_says_which_and_what_to_choose() -> None:
    message = (
        "model 'gfbp' needs video features, but this corpus has audio only; "
        "choose one of: audio, logreg, svm, fusion, avef_audio"
    )
    with pytest.raises(ModalityError, match=f"^{message}$"):
        check_modalities("gfbp", {"audio"})
    with pytest.raises(
        ModalityError, match="needs audio features, but this corpus has video only; choose one of: video"
    ):
        check_modalities("avef", ["video"])
    assert check_modalities("amfbp", {"audio", "video"}).name == "amfbp"


def test_unknown_names_and_hyperparameters_are_refused_with_the_choices() -> None:
    with pytest.raises(ModelSpecError, match="unknown model 'fbp'; choose one of: avef, gfbp"):
        build_model("fbp", 3, SHAPES)
    with pytest.raises(ModelSpecError, match="no hyper-parameter lamda_a; its hyper-parameters are: .*temperature_a"):
        build_model("gfbp", 3, SHAPES, lamda_a=0.5)


def test_avef_trains_on_a_batch_of_one_segment() -> None:
    """A corpus whose segment count leaves a last batch of one must still train (no batch statistics)."""
    inputs, labels = overfit_inputs("avef")
    model = build_model("avef", NUM_CLASSES, SMALL_CROPS, **small_hyperparameters("avef")).train()
    one = {name: tensor[:1] for name, tensor in inputs.items()}
    F.cross_entropy(model(**one).logits, labels[:1]).backward()
    assert model.visible_norm.num_batches_tracked == 0  # the lone segment left the running statistics alone


def test_a_model_is_not_built_for_features_without_a_size_it_needs() -> None:
    with pytest.raises(ModelSpecError, match="model 'avef' needs features with mel_bands, segment_frames"):
        build_model("avef", NUM_CLASSES, InputShapes(embedding_dim=VIDEO_DIM))
    audio_only = InputShapes()  # the audio system reads spectrograms, whose width the encoder does not fix
    assert build_model("audio", NUM_CLASSES, audio_only, **small_hyperparameters("audio")) is not None
