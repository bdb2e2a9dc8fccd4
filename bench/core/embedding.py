"""Models with an embedding input: the saliency tests run on the embedding output.

Token ids are discrete: no gradient flows to them and no shift can be added to them. The tests of Kindermans et al.
and Adebayo et al. apply to the first continuous input, the embedding output; the layer that consumes it absorbs
a shift in its bias as any first layer does. :func:`embedded` splits a model whose first module is an
``nn.Embedding`` into that embedding (applied to the data once) and the rest (the model the harness explains).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from bench.core.data import Dataset

__all__ = ["has_embedding", "embedded"]


def has_embedding(model: nn.Module) -> bool:
    """Whether ``model`` is a ``nn.Sequential`` whose first module is an ``nn.Embedding``."""
    return isinstance(model, nn.Sequential) and len(model) > 1 and isinstance(model[0], nn.Embedding)


class _Channels(nn.Module):
    """The rest of a model after its embedding, fed embeddings as ``B x dim x length`` (channels first, as the
    harness's signals: a map's channel sum is then one relevance per token)."""

    def __init__(self, rest: nn.Module) -> None:
        super().__init__()
        self.rest = rest

    def forward(self, x: Tensor) -> Tensor:
        return self.rest(x.transpose(1, 2))


def _register_with_canonizers() -> None:
    # the wrapper only transposes (a permutation: relevance and gradients pass through it unchanged), so LRP needs
    # no canonizer of its own for it; its inner Sequential is looked up as usual
    from methods.canonizers import register_canonizer

    register_canonizer(_Channels)(lambda module: [])


_register_with_canonizers()


@torch.no_grad()
def embedded(model: nn.Module, data: Dataset) -> tuple[nn.Module, Dataset]:
    """``(rest, embedded data)``: the model after its embedding (taking ``B x dim x length``) and the data embedded
    (``N x dim x length``; domain: the range of the embedding table). Raises ``ValueError`` when the model has no
    leading ``nn.Embedding``."""
    if not has_embedding(model):
        raise ValueError(f"{type(model).__name__} does not start with an nn.Embedding; nothing to split")
    emb = model[0]
    rest = _Channels(nn.Sequential(*list(model)[1:])).eval()

    def embed(x: Tensor) -> Tensor:
        return emb(x.long().to(emb.weight.device)).transpose(1, 2).detach().cpu().float()

    table = emb.weight.detach()
    domain = (float(table.min()), float(table.max()))
    out = dataclasses.replace(data, x_train=embed(data.x_train), x_test=embed(data.x_test), encoding="embedding",
                              domain=domain, meta={**data.meta, "embedded": True})
    return rest, out
