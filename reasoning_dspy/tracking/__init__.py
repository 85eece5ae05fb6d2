"""Run tracking in a database: runs, trials, generations and feature activations, in SQLite by
default or PostgreSQL with pgvector, always with a JSONL journal that survives database outages.

>>> from reasoning_dspy.tracking import Tracker
>>> with Tracker.open("runs/my-run/tracking.jsonl") as tracker:
...     run = tracker.start_run("my-run", kind="steer")
...     tracker.log_generation(run, "Is 91 prime?", "Wait, 91 = 7 x 13.", reasoning_activation=0.4)
...     tracker.similar_prompts("Is 93 prime?", k=3)

Names are imported on first use, so reading a config that holds a `TrackingConfig` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reasoning_dspy.tracking.annotations import Annotation, AnnotationStore
    from reasoning_dspy.tracking.config import TrackingConfig
    from reasoning_dspy.tracking.embed import HashingEmbedder
    from reasoning_dspy.tracking.errors import StoreUnavailable, TrackingError
    from reasoning_dspy.tracking.local_postgres import LocalPostgres
    from reasoning_dspy.tracking.prompt_index import TrackedPromptIndex
    from reasoning_dspy.tracking.search import Match
    from reasoning_dspy.tracking.tracker import Tracker

_WHERE = {
    "Tracker": "tracker", "TrackingConfig": "config", "TrackingError": "errors", "StoreUnavailable": "errors",
    "HashingEmbedder": "embed", "LocalPostgres": "local_postgres", "Match": "search",
    "TrackedPromptIndex": "prompt_index", "Annotation": "annotations", "AnnotationStore": "annotations",
}
__all__ = ["Annotation", "AnnotationStore", "HashingEmbedder", "LocalPostgres", "Match", "StoreUnavailable", "TrackedPromptIndex", "Tracker",
           "TrackingConfig", "TrackingError"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"reasoning_dspy.tracking.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'reasoning_dspy.tracking' has no attribute {name!r}")
