"""Every method config file (conf/method/*.yaml) names a method the registry builds and that explains a batch: the
command line's names for the library adapters (captum_*, cam_*, zennit_*) and ours."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from bench.core.explain import fit_loader, make_explainer, method_specs
from bench.core.models import create_model

CONF = Path(__file__).resolve().parents[1] / "conf" / "method"
FILES = sorted(p for p in CONF.glob("*.yaml") if p.stem != "all")
TRANSFORMERS_ONLY = {"attention_rollout"}


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_method_config_builds_and_explains(path):
    entries = yaml.safe_load(path.read_text())
    assert list(entries) == [path.stem], "the entry's label is the file's name (what method=[...] selects)"
    name = entries[path.stem].get("name") or ""
    for prefix, module in (("captum:", "captum"), ("cam:", "pytorch_grad_cam")):
        if name.startswith(prefix):
            pytest.importorskip(module)
    (spec,) = method_specs(entries)
    torch.manual_seed(0)
    model = create_model("small_cnn", (1, 12, 12), 3, channels=(4, 6), hidden=12).eval()
    x = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    data = fit_loader(torch.rand(32, 1, 12, 12, generator=torch.Generator().manual_seed(2)),
                      torch.arange(32) % 3)
    if path.stem in TRANSFORMERS_ONLY:  # refused on a CNN, by name
        with pytest.raises(ValueError, match="attention"):
            make_explainer(spec, model, domain=(0.0, 1.0), fit_data=data)(x)
        return
    explain = make_explainer(spec, model, domain=(0.0, 1.0), fit_data=data)
    maps = explain(x, torch.tensor([0, 1, 2, 0]))
    assert maps.shape == x.shape and torch.isfinite(maps).all()


def test_the_all_group_lists_existing_method_configs_once():
    listed = yaml.safe_load((CONF / "all.yaml").read_text())["defaults"]
    assert len(listed) == len(set(listed)) and {"gradient", "pattern_attribution"} <= set(listed)
    missing = [name for name in listed if not (CONF / f"{name}.yaml").exists()]
    assert not missing, f"method=all lists {missing}, which have no file in conf/method/"
