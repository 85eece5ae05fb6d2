"""The base layer: load a causal LM (Hugging Face, GGUF, the offline `tiny-random`, shipped
adapters) and describe it (`ModelSpec`: its decoder layers and residual width)."""

from reasoning_dspy.models.load import (
    DEFAULT_MODEL,
    check_device,
    load_model,
    load_tokenizer,
    resolve_dtype,
    resolve_model,
)
from reasoning_dspy.models.spec import (
    LAYER_PATHS,
    LoadedModel,
    ModelLoadError,
    ModelSpec,
    find_layers,
    kv_cache_kwarg,
    layer_output,
    model_spec,
    replace_layer_output,
)

__all__ = ["DEFAULT_MODEL", "LAYER_PATHS", "LoadedModel", "ModelLoadError", "ModelSpec", "check_device", "find_layers",
           "kv_cache_kwarg", "layer_output", "load_model", "load_tokenizer", "model_spec", "replace_layer_output",
           "resolve_dtype", "resolve_model"]
