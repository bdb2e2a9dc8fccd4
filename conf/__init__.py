"""The Hydra config tree of saliency-bench (installed as the resource package bench.conf)."""
