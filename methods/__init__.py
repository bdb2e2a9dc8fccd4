"""Saliency methods behind one registry: ``methods.create(name, model, **params)``."""

from methods.registry import Explainer, create, get_factory, names, register, resolve_target

# importing the method modules registers their methods
from methods import gradients, propagation, cam, pattern  # noqa: E402,F401,I001

__all__ = ["Explainer", "create", "get_factory", "names", "register", "resolve_target"]
