"""Evaluation: likelihood bounds of a trained model on held-out data."""
from klvae.evaluation.likelihood import evaluate, evaluate_model

__all__ = ["evaluate", "evaluate_model"]
