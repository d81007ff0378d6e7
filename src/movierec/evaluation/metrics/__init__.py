"""Recommendation-quality metrics: pure functions over arrays, backed by scikit-learn.

binary.py: AUC, UAUC, calibration on one set of Yes/No predictions; bootstrap.py: user-level error bars
and paired comparisons; blocks.py: `compute_metrics`, the block format every command writes;
ranking.py: HR@k, NDCG@k, MRR over candidate lists.
"""

from movierec.evaluation.metrics.binary import (
                                        auc,
                                        calibration_bins,
                                        ece,
                                        example_log_loss,
                                        per_user_auc,
                                        uauc,
)
from movierec.evaluation.metrics.blocks import BLOCK_KEYS, compute_metrics
from movierec.evaluation.metrics.bootstrap import (
                                        bootstrap_ci95,
                                        ci95,
                                        paired_bootstrap,
                                        resample_counts,
                                        user_bootstrap,
                                        weighted_auc,
)
from movierec.evaluation.metrics.ranking import ranking_metrics

__all__ = ["BLOCK_KEYS", "auc", "bootstrap_ci95", "calibration_bins", "ci95", "compute_metrics", "ece",
           "example_log_loss", "paired_bootstrap", "per_user_auc", "ranking_metrics", "resample_counts", "uauc",
           "user_bootstrap", "weighted_auc"]
