"""Finetuning models, selected by name through :data:`MODELS` (the registry)."""

from .registry import MODELS, ModelSpec, build_torch_model, model_spec

__all__ = ["MODELS", "ModelSpec", "build_torch_model", "model_spec"]
