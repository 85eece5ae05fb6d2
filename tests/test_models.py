import pytest
import torch

from reasoning_dspy.models import ModelLoadError, find_layers, load_model, model_spec
from reasoning_dspy.models.tiny import OFFLINE_MODELS


def test_tiny_random_shape_and_chat_template(tiny):
    model, tok, spec = tiny
    assert (spec.n_layers, spec.d_model, spec.layers_path) == (4, 64, "model.layers")
    text = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}],
        tokenize=False, add_generation_prompt=True,
    )
    assert text == "<|system|>\nBe brief.</s>\n<|user|>\nWhy?</s>\n<|assistant|>\n"
    ids = tok("wait")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids


def test_tiny_random_is_deterministic_per_seed(tiny):
    again = load_model("tiny-random", dtype="float32")
    other = load_model("tiny-random", dtype="float32", seed=1)
    w = lambda m: m.model.layers[0].self_attn.q_proj.weight  # noqa: E731
    assert torch.equal(w(again.model), w(tiny.model))
    assert not torch.equal(w(other.model), w(tiny.model))
    assert again.tokenizer.get_vocab() == tiny.tokenizer.get_vocab()


def test_tokenizer_has_leading_space_variants_of_reasoning_words(tiny):
    tok = tiny.tokenizer
    for word in ["wait", "therefore", "however"]:
        assert len(tok.tokenize(" " + word)) == 1, word


def test_layer_lookup_and_range_errors(tiny):
    spec = tiny.model_spec
    assert spec.layer(-1) is spec.layers[3]
    with pytest.raises(IndexError, match="out of range.*4 decoder layers"):
        spec.layer(4)
    with pytest.raises(IndexError):
        spec.check_layer(-5)


def test_gpt2_style_layer_lookup():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64))
    path, layers = find_layers(model)
    assert path == "transformer.h" and len(layers) == 2
    assert model_spec(model).d_model == 32


def test_unfindable_layers_error():
    with pytest.raises(ValueError, match="cannot find the decoder layers"):
        find_layers(torch.nn.Linear(2, 2))


def test_unknown_model_offline_names_tiny_random(tmp_path):
    with pytest.raises(ModelLoadError, match="tiny-random"):
        load_model("no-such-org/no-such-model-xyz")
    with pytest.raises(ModelLoadError, match="local folder"):
        load_model(str(tmp_path))  # a folder without config.json


def test_offline_names_listed():
    assert {"tiny-random", "tinyllama-random"} <= set(OFFLINE_MODELS)


def test_bad_dtype():
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model("tiny-random", dtype="float8")


def test_loaded_model_spec_has_one_name(tiny):
    """`model_spec` is the ModelSpec; the old `spec` name still works, with a deprecation warning."""
    model, tokenizer, model_spec = tiny
    assert model_spec is tiny.model_spec and model_spec.d_model == 64
    with pytest.warns(DeprecationWarning, match="model_spec"):
        assert tiny.spec is tiny.model_spec
