"""The in-process generation engine: batched steered `generate`, prefix caching, micro-batching
across threads, and `SteeredEngine`, the DSPy engine built from them."""

from reasoning_dspy.engine.async_engine import AsyncSteeredEngine
from reasoning_dspy.engine.generate import GenResult, GenRow, RowWatch, generate_rows
from reasoning_dspy.engine.microbatcher import MicroBatcher, model_lock
from reasoning_dspy.engine.prefix_cache import PrefixCache
from reasoning_dspy.engine.state import EngineSources
from reasoning_dspy.engine.steered_engine import SteeredEngine

__all__ = ["AsyncSteeredEngine", "EngineSources", "GenResult", "GenRow", "MicroBatcher", "PrefixCache", "RowWatch",
           "SteeredEngine", "generate_rows", "model_lock"]
