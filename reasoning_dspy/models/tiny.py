"""Offline models: Llama-architecture models with random weights and a locally trained tokenizer.

No file is downloaded. The tokenizer is a byte-level BPE trained with the `tokenizers` library on
text shipped in `reasoning_dspy/data/`, so words such as "wait" or "therefore" get their own
tokens (with and without a leading space) much as they do in TinyLlama's tokenizer. The chat
template is TinyLlama's. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import functools
from importlib import resources

import torch
from torch import nn

TINYLLAMA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + eos_token + '\n' }}"
    "{% elif message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + eos_token + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    "{% endfor %}"
)

TOKENIZER_VOCAB_SIZE = 2048

# name -> LlamaConfig keyword arguments (vocab_size is filled from the tokenizer when absent).
OFFLINE_MODELS: dict[str, dict] = {
    # Small enough that a unit test builds and runs it in milliseconds.
    "tiny-random": dict(
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    ),
    # TinyLlama-1.1B's exact architecture with random weights: for benchmarks (≈ 2 GB in bf16).
    "tinyllama-random": dict(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
    ),
}


def corpus_text() -> str:
    """The text shipped with the package: a reasoning-heavy corpus plus the bundled prompts."""
    data = resources.files("reasoning_dspy") / "data"
    return "\n".join(
        (data / name).read_text(encoding="utf-8")
        for name in ("traces.txt", "corpus.txt", "prompts.jsonl")
        if (data / name).is_file()
    )


@functools.lru_cache(maxsize=1)
def _tokenizer_json(vocab_size: int = TOKENIZER_VOCAB_SIZE) -> str:
    """Train the byte-level BPE once per process and keep its JSON (training is deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_text().splitlines(), trainer=trainer)
    # Like Llama: prepend BOS on every encode, never append EOS.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return tok.to_str()


def build_tokenizer():
    """A fresh `PreTrainedTokenizerFast` (callers may set attributes without affecting others)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
        chat_template=TINYLLAMA_CHAT_TEMPLATE,
        model_max_length=2048,
    )


def build(name: str, *, seed: int = 0, dtype: torch.dtype | None = None) -> tuple[nn.Module, object]:
    """Build the offline model `name` with weights drawn from `seed`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    kwargs = {"vocab_size": len(tokenizer), **OFFLINE_MODELS[name]}
    config = LlamaConfig(
        **kwargs,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config._name_or_path = name
    dtype = dtype or torch.float32
    previous = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Initialising directly in the target dtype halves time and memory for big configs.
        torch.set_default_dtype(dtype)
        try:
            model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
