"""Metrics: classification (CACC, P/R/F1, ASR) here; memorization metrics in sibling modules."""
