"""Evaluation: the Yes/No scorer, metrics, baselines, `evaluate`, the report (renders only), recommend."""
