"""Prompt validation and retrieval: check and filter prompts by meaning before they cost a model call.

    >>> from reasoning_dspy.rag import MiniLMEmbedder, PromptFilter, PromptValidator
    >>> pf = PromptFilter(MiniLMEmbedder(), reference=["Solve the word problem.", "Think step by step."])
    >>> pf.record("Check every step before you answer.", score=0.42)
    >>> for d in pf.check(["Check each step before you answer.", "The cat sat on the mat.", "Plan, then answer."]):
    ...     print(d.reason)

- `validate`: `PromptRules`, `PromptValidator`, `Prompt`, `InvalidPrompt` (non-empty, token limit, fields);
- `embed`: the `Embedder` interface, `MiniLMEmbedder` (all-MiniLM-L6-v2, offline), `LMEmbedder`;
- `index`: the `VectorIndex` interface (`add`, `search`) and `NumpyIndex`;
- `filter`: `PromptFilter`, its `Decision`s and thresholds.

Importing this package loads neither torch nor transformers; the embedders do, when built.
"""

from reasoning_dspy.rag.embed import (
    Embedder,
    EmbedderError,
    LMEmbedder,
    MiniLMEmbedder,
    default_embedder,
    minilm_folder,
)
from reasoning_dspy.rag.filter import (
    DUPLICATE_SIMILARITY,
    OFF_TOPIC_SIMILARITY,
    Decision,
    FilterConfig,
    Neighbour,
    PromptFilter,
)
from reasoning_dspy.rag.index import NumpyIndex, VectorIndex, prompt_id
from reasoning_dspy.rag.validate import (
    InvalidPrompt,
    Prompt,
    PromptRules,
    PromptValidator,
    context_length,
    placeholders,
    template_fields,
)

__all__ = [
    "DUPLICATE_SIMILARITY", "OFF_TOPIC_SIMILARITY", "Decision", "Embedder", "EmbedderError", "FilterConfig",
    "InvalidPrompt", "LMEmbedder", "MiniLMEmbedder", "Neighbour", "NumpyIndex", "Prompt", "PromptFilter",
    "PromptRules", "PromptValidator", "VectorIndex", "context_length", "default_embedder", "minilm_folder",
    "placeholders", "prompt_id", "template_fields",
]
