"""Adapters that put the field's libraries behind the registry's call signature: ``methods.create("captum:<Class>",
model, **params)`` (:mod:`methods.adapters.captum`), ``"cam:<Class>"`` (pytorch-grad-cam, :mod:`methods.adapters.cam`)
and ``"zennit:<Composite>"`` (:mod:`methods.adapters.zennit`). Each module exposes ``factory(class_name) ->
factory(model, **params) -> explain(x, target=None)``, and raises ``ImportError`` naming the optional extra
(``pip install 'saliency-bench[captum]'``) when its library is missing.
"""
