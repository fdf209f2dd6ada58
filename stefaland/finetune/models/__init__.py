"""Finetuning models, selected by name through :data:`MODELS` (the registry)."""

from .registry import (
    MODELS,
    ModelSpec,
    build_torch_model,
    known_models,
    model_availability,
    model_label,
    model_spec,
    register_model,
)

__all__ = ["MODELS", "ModelSpec", "build_torch_model", "known_models", "model_availability", "model_label", "model_spec",
           "register_model"]
