"""Model registry: ``MODELS.get(name)(input_shape=..., num_classes=..., **kwargs)``."""

from .base import MODELS, build_model, feature_layers  # noqa: F401
