"""Saliency methods behind one registry: ``methods.create(name, model, **params)``."""

# importing the method modules registers their methods
from methods import cam, gradients, pattern, propagation, rollout  # noqa: F401
from methods.registry import (
    BaseExplainer,
    Explainer,
    NotApplicable,
    create,
    explaining,
    get_factory,
    names,
    register,
    resolve_target,
)

__all__ = ["BaseExplainer", "Explainer", "NotApplicable", "create", "explaining", "get_factory", "names", "register",
           "resolve_target"]
