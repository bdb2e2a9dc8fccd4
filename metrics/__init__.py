"""Batched similarity scores between saliency maps (torch, any device)."""
