"""Reports a person opens: Markdown with PNG plots, and the same as one self-contained HTML file.

`write_html(report.md)` embeds every local image, so `report.html` can be mailed or opened from
anywhere; `plots` draws the figures the demo and the study share (SAE training curves, the
ReasonScore distribution, baseline against steered).
"""

from reasoning_dspy.reports.html import write_html
from reasoning_dspy.reports.plots import plot_score_distribution, plot_steering_effect, plot_training_curves

__all__ = ["plot_score_distribution", "plot_steering_effect", "plot_training_curves", "write_html"]
