"""Evaluation: held-out generation metrics, safety rules, multiple-choice accuracy and the report."""
