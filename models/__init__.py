"""The torch modules of the papers avemo reproduces; pick one by name through :mod:`models.registry`."""

from models.registry import (
    MODELS,
    InputShapes,
    ModalityError,
    ModelSpec,
    build_model,
    check_modalities,
    models_for,
)

__all__ = ["MODELS", "InputShapes", "ModalityError", "ModelSpec", "build_model", "check_modalities", "models_for"]
