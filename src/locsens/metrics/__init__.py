"""Evaluation metrics: a functional core (tensors in, tensors out, vectorised) plus torchmetrics classes.

Tagging (``locsens.metrics.tagging``): A@k, %pred, %cpred, with places omitted via ``exclude``.
Retrieval (``locsens.metrics.retrieval``): location-agnostic and location-sensitive P@k, the upper
bound and the paper's query construction. See each module's docstring for definitions and tie rules.
"""

from locsens.metrics.retrieval import (
    DEFAULT_THRESHOLDS_KM,
    LocationQueries,
    LocationSensitivePrecision,
    RetrievalCandidates,
    RetrievalPrecision,
    build_location_queries,
    location_sensitive_precision,
    location_sensitive_upper_bound,
    precision_at_k,
    precision_table,
    threshold_key,
)
from locsens.metrics.tagging import (
    DEFAULT_KS,
    TaggingAccuracy,
    drop_excluded,
    ground_truth_from_csr,
    place_name_mask,
    ranked_topk,
    tagging_accuracy,
    tagging_counts,
    tagging_from_counts,
)

__all__ = [
    "DEFAULT_KS",
    "DEFAULT_THRESHOLDS_KM",
    "LocationQueries",
    "LocationSensitivePrecision",
    "RetrievalCandidates",
    "RetrievalPrecision",
    "TaggingAccuracy",
    "build_location_queries",
    "drop_excluded",
    "ground_truth_from_csr",
    "location_sensitive_precision",
    "location_sensitive_upper_bound",
    "place_name_mask",
    "precision_at_k",
    "precision_table",
    "ranked_topk",
    "tagging_accuracy",
    "tagging_counts",
    "tagging_from_counts",
    "threshold_key",
]
