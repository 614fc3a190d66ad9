"""Evaluation: SR metrics against baselines, map accuracy with area estimates, figures, reports."""
