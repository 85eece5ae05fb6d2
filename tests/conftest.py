"""Shared fixtures. Tests never touch the network: the hub is switched off before anything imports it."""

from __future__ import annotations

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import torch  # noqa: E402

from reasoning_dspy.models import LoadedModel, load_model  # noqa: E402
from reasoning_dspy.prompts import load_prompts  # noqa: E402


@pytest.fixture(scope="session")
def tiny() -> LoadedModel:
    """The offline `tiny-random` model in fp32 (4 layers, d_model 64). Treat as read-only."""
    return load_model("tiny-random", dtype="float32")


@pytest.fixture(scope="session")
def bundled_prompts() -> list[str]:
    return load_prompts("bundled")


@pytest.fixture(scope="session")
def tiny_cache(tiny, bundled_prompts, tmp_path_factory):
    """Layer-2 fp32 activations of the first 64 bundled prompts (a few thousand tokens)."""
    from reasoning_dspy.activations import extract_activations

    out = tmp_path_factory.mktemp("tiny_cache")
    return extract_activations(tiny.model, tiny.tokenizer, bundled_prompts[:64], 2, out,
                               dtype="float32", batch_size=16, shard_tokens=1024, progress=False)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _dspy_memory_cache():
    """DSPy's cache in memory only and empty for each test: tests never read or write the user's
    disk cache, and no test sees another's cached answers. (Only where a test module uses dspy.)"""
    dspy = sys.modules.get("dspy")
    if dspy is None:
        yield
        return
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    dspy.cache.reset_memory_cache()
    yield
    dspy.cache.reset_memory_cache()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from a second thread, and on a shared CPU two OpenMP threads can
    make them ~50x slower (each parallel region waits for a descheduled thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def steer_sae(tiny):
    """A random ReLU SAE on layer 2 of tiny-random (d_sae 128) for steering tests."""
    from reasoning_dspy.sae import SAE, SAEConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return SAE.from_config(SAEConfig(architecture="relu", d_in=64, d_sae=128, hook_layer=2,
                                         model_name="tiny-random"))


@pytest.fixture(scope="session")
def steer_fmax(tiny, steer_sae, bundled_prompts):
    """f_max of `steer_sae` on 16 bundled prompts: `[128]`."""
    from reasoning_dspy.steering import estimate_max_activation

    return estimate_max_activation(tiny.model, tiny.tokenizer, steer_sae, bundled_prompts[:16])


@pytest.fixture(scope="session")
def planted_sae(tiny):
    """The `tiny-planted` SAE: steering feature 5 makes tiny-random write " wait", where feature 9 fires."""
    from reasoning_dspy.sae import planted

    return planted.planted_sae(tiny.model, tiny.tokenizer)


@pytest.fixture(scope="module")
def planted_lm(tiny, planted_sae):
    """`planted_lm(max_tokens)`: a SteeredLM on tiny-random with the planted SAE, measuring its
    reasoning feature; closed when the module's tests are done."""
    from reasoning_dspy.program.lm import SteeredLM, engine_of
    from reasoning_dspy.sae import planted

    made = []

    def build(max_tokens: int):
        lm = SteeredLM(tiny, sae=planted_sae, reasoning_features=planted.REASONING, max_tokens=max_tokens,
                       cache=False, max_batch_size=64)
        made.append(lm)
        return lm

    yield build
    for lm in made:
        engine_of(lm).close()
