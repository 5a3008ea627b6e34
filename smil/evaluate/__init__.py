"""Evaluation: metrics (:mod:`smil.evaluate.metrics`) and the ground-truth check
(:mod:`smil.evaluate.check_gt`). Definitions and references are in ``docs/metrics.md``."""
