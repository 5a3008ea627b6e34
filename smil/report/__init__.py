"""The report: collect results (:mod:`~smil.report.gather`), draw cross-experiment figures
(:mod:`~smil.report.figures`) and write one self-contained HTML page (:mod:`~smil.report.page`).
See ``docs/report.md``."""

#: The cross-experiment figures ``smil figures`` can make, in the order the report shows them.
FIGURE_NAMES = ("pck_curves", "per_joint_errors", "error_vs_views")
