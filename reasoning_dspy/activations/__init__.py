"""Residual-stream activations: capture them with a hook, cache them on disk, stream them back.

* `residuals`: read the residual stream after one layer, stopping the forward there.
* `cache`: the on-disk cache (manifest + safetensors shards) and its reader, `ActivationCache`.
* `extract`: `extract_activations`, prompts in, a resumable cache out.
* `chunked`: the same extraction by chunks of prompts shared by the ranks of a process group.
"""

from reasoning_dspy.activations.cache import (
    FIELDS,
    MANIFEST,
    PROMPTS,
    ActivationCache,
    CacheError,
    CacheManifest,
    ShardInfo,
    StorageDType,
    prompts_fingerprint,
    write_shard,
)
from reasoning_dspy.activations.extract import extract_activations
from reasoning_dspy.activations.residuals import (
    SINK_NORM_RATIO,
    attention_sinks,
    iter_residuals,
    pad_right,
    residual_at,
    stop_after,
)

__all__ = ["FIELDS", "MANIFEST", "PROMPTS", "SINK_NORM_RATIO", "ActivationCache", "CacheError", "CacheManifest",
           "ShardInfo", "StorageDType", "attention_sinks", "extract_activations", "iter_residuals", "pad_right",
           "prompts_fingerprint", "residual_at", "stop_after", "write_shard"]
