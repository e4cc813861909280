"""Inference: run trained models and off-the-shelf recognisers on audio (no training code, no Lightning)."""
