"""Bad input, everywhere a user can give it: every CLI case must exit with code 2, print a specific
`error: ...` and no traceback; every Python case must raise a specific exception, never a stack
trace from deep inside torch and never a silent empty answer."""

from __future__ import annotations

import math
import shlex
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from reasoning_dspy.cli import app

runner = CliRunner()
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe\xfa not text"
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


@pytest.fixture(scope="module")
def env(tiny, tiny_cache, tmp_path_factory):
    """Files every case reads: the layer-2 cache, a layer-1 cache, a trained layer-2 SAE and its
    ReasonScore folder, an SAE of the wrong width, f_max files, binary and empty files."""
    from safetensors.torch import save_file

    from reasoning_dspy.activations import extract_activations
    from reasoning_dspy.features.reasonscore import VocabularyWarning, score_features
    from reasoning_dspy.sae import SAE, SAEConfig, SAETrainConfig, save_sae, train_sae

    root = tmp_path_factory.mktemp("bad_input")
    (root / "prompts.txt").write_text("Wait, is 91 prime?\nTherefore it is odd.\nHmm, let me see.\n")
    for name in ("binary.txt", "binary.jsonl", "binary.csv", "binary_vocab.txt"):
        (root / name).write_bytes(BINARY)
    (root / "empty.txt").write_text("\n\n")
    (root / "a_file.txt").write_text("not a folder\n")
    (root / "absent_vocab.txt").write_text("zyzzyva\n")
    (root / "not_a_cache").mkdir()
    (root / "empty_folder").mkdir()
    (root / "sae.pt").write_bytes(b"\x80\x04 pickled")
    layer1 = extract_activations(tiny.model, tiny.tokenizer, ["Wait, why?", "Hmm, therefore."], 1, root / "cache_l1",
                                 dtype="float32", progress=False)
    sae = train_sae(SAETrainConfig(arch="topk", d_sae=64, k=8, batch_size=256, tokens=2048, log_every=4),
                    tiny_cache, progress=False).sae
    save_sae(sae, root / "sae")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VocabularyWarning)
        score_features(tiny_cache, sae, tokenizer=tiny.tokenizer, top_n=4, progress=False).save(root / "scores")
    narrow = SAE.from_config(SAEConfig(architecture="relu", d_in=32, d_sae=16, hook_layer=2, model_name="other"))
    save_sae(narrow, root / "sae_d32")
    save_sae(SAE.from_config(SAEConfig(architecture="relu", d_in=64, d_sae=64)), root / "sae_no_layer")
    save_file({"max_activation": torch.ones(16)}, str(root / "fmax16.safetensors"))
    save_file({"max_activation": torch.full((64,), float("nan"))}, str(root / "fmax_nan.safetensors"))
    return SimpleNamespace(root=root, cache=tiny_cache.path, cache_l1=layer1.path, sae=sae, tiny=tiny,
                           tiny_cache=tiny_cache)


def _paths(env, tmp_path: Path) -> dict[str, str]:
    r = env.root
    return {
        "prompts": r / "prompts.txt", "cache": env.cache, "cache_l1": env.cache_l1, "sae": r / "sae",
        "scores": r / "scores", "file": r / "a_file.txt", "new": tmp_path / "new", "tmp": tmp_path, "root": r,
    }


EXTRACT = "extract --model tiny-random --layer 2 --prompts {prompts} --out {new}"
TRAIN = "train-sae --cache {cache} --out {new} --d-sae 32 --k 4 --batch-size 256 --tokens 1024"
SCORE = "score --cache {cache} --sae {sae} --out {new}"
STEER = "steer --model tiny-random --sae {sae} --scores {scores} --prompt Why? --max-tokens 4"

# (command line, fragment of the error message). The first block is the outside sweep's list;
# the rest are more cases of the same kinds.
CLI_CASES = {
    # tracebacks
    "extract-device-cuda": (EXTRACT + " --device cuda", "sees no CUDA GPU", NO_CUDA),
    "extract-device-banana": (EXTRACT + " --device banana", "unknown device 'banana'"),
    "extract-out-is-a-file": ("extract --model tiny-random --layer 2 --prompts {prompts} --out {file}",
                              "a_file.txt' is an existing file"),
    # messages that did not name the problem
    "extract-binary-txt": (EXTRACT.replace("{prompts}", "{root}/binary.txt"), "binary.txt' is not UTF-8 text"),
    "extract-binary-jsonl": (EXTRACT.replace("{prompts}", "{root}/binary.jsonl"), "binary.jsonl' is not UTF-8 text"),
    "extract-binary-csv": (EXTRACT.replace("{prompts}", "{root}/binary.csv"), "binary.csv' is not UTF-8 text"),
    "score-vocab-binary": (SCORE + " --vocab {root}/binary_vocab.txt", "binary_vocab.txt' is not UTF-8 text"),
    "score-alpha-nan": (SCORE + " --alpha nan", "alpha must be a finite number >= 0, got nan"),
    # exit 0 on bad input
    "extract-limit-negative": (EXTRACT + " --limit -1", "limit must be a positive number of prompts"),
    "train-lr-inf": (TRAIN + " --lr inf", "lr: Input should be a finite number (got inf)"),
    "score-vocab-absent": (SCORE + " --vocab {root}/absent_vocab.txt", "no word of the vocabulary (zyzzyva) occurs"),
    "score-top-n-beyond-sae": (SCORE + " --top-n 1000", "--top-n 1000 exceeds the SAE's 64 features"),
    "score-n-features-negative": (SCORE + " --n-features -1", "--n-features must be >= 0"),
    "score-sae-layer-mismatch": ("score --cache {cache_l1} --sae {sae} --out {new}",
                                 "the SAE was trained on layer 2 but the cache"),
    "demo-limit-0": ("demo --out {new} --limit 0", "limit must be at least 1 (held-out problems)"),
    "demo-unknown-model": ("demo --out {new} --model no-such-model --limit 4", "use an offline model: tiny-random"),
    # the CLI gives load_sae's own refusal of pickles
    "score-sae-pt": ("score --cache {cache} --sae {root}/sae.pt --out {new}", "refusing to load pickled weights"),
    "steer-sae-pt": (STEER.replace("{sae}", "{root}/sae.pt") + " --feature 0", "refusing to load pickled weights"),
    # -- more of the same kinds --
    "extract-device-cuda-99": (EXTRACT + " --device cuda:99", "device 'cuda:99' is not available"),
    "extract-device-meta": (EXTRACT + " --device meta", "device type 'meta' is not supported"),
    "extract-limit-0": (EXTRACT + " --limit 0", "limit must be a positive number of prompts"),
    "extract-batch-size-0": (EXTRACT + " --batch-size 0", "batch_size, max_length and shard_tokens must be positive"),
    "extract-batch-size-negative": (EXTRACT + " --batch-size -4", "must be positive, got batch_size=-4"),
    "extract-shard-tokens-0": (EXTRACT + " --shard-tokens 0", "shard_tokens=0"),
    "extract-layer-out-of-range": (EXTRACT.replace("--layer 2", "--layer 9"), "layer 9 is out of range"),
    "extract-layer-negative-out-of-range": (EXTRACT.replace("--layer 2", "--layer -5"), "layer -5 is out of range"),
    "extract-prompts-missing": (EXTRACT.replace("{prompts}", "{root}/nope.jsonl"), "prompts file not found"),
    "extract-prompts-empty": (EXTRACT.replace("{prompts}", "{root}/empty.txt"), "no prompts in"),
    "extract-prompts-folder": (EXTRACT.replace("{prompts}", "{root}/not_a_cache"), "not_a_cache' is a folder"),
    "extract-dtype-unknown": (EXTRACT + " --dtype float8", "unknown dtype 'float8'"),
    "extract-model-dtype-unknown": (EXTRACT + " --model-dtype int3", "unknown dtype 'int3'"),
    "train-lr-nan": (TRAIN + " --lr nan", "lr: Input should be a finite number"),
    "train-lr-zero": (TRAIN + " --lr 0", "lr: Input should be greater than 0"),
    "train-batch-size-0": (TRAIN.replace("--batch-size 256", "--batch-size 0"), "batch_size: Input should be greater than 0"),
    "train-arch-unknown": (TRAIN + " --arch gated", "arch: Input should be 'relu', 'topk' or 'jumprelu' (got 'gated')"),
    "train-k-above-d-sae": (TRAIN.replace("--k 4", "--k 64"), "k=64 cannot exceed d_sae=32"),
    "train-batch-above-tokens": (TRAIN.replace("--batch-size 256", "--batch-size 1000000"), "fewer than batch_size"),
    "train-cache-missing": (TRAIN.replace("{cache}", "{root}/nope"), "no activation cache at"),
    "train-cache-not-a-cache": (TRAIN.replace("{cache}", "{root}/not_a_cache"), "manifest.json is missing"),
    "train-out-is-a-file": (TRAIN.replace("{new}", "{file}"), "a_file.txt' is an existing file"),
    "train-device-banana": (TRAIN + " --device banana", "unknown device 'banana'"),
    "train-warmup-plus-decay": (TRAIN + " --lr-warmup-frac 0.7 --lr-decay-frac 0.7", "exceeds 1"),
    "train-max-seconds-negative": (TRAIN + " --max-seconds -5", "max_seconds: Input should be greater than 0"),
    "train-max-seconds-nan": (TRAIN + " --max-seconds nan", "max_seconds: Input should be a finite number"),
    "train-max-tokens-0": (TRAIN + " --max-tokens 0", "max_tokens: Input should be greater than 0"),
    "train-val-fraction-1": (TRAIN + " --val-fraction 1", "val_fraction: Input should be less than 1"),
    "train-val-fraction-negative": (TRAIN + " --val-fraction -0.1", "val_fraction: Input should be greater than or equal to 0"),
    "train-val-fraction-leaves-too-little": (TRAIN + " --val-fraction 0.99",
                                             "fewer than batch_size=256; lower --batch-size or --val-fraction"),
    "train-caches-mismatched": (TRAIN + " --cache {cache_l1}", "the caches disagree on layer"),
    "train-hook-layer-contradicts-cache": (TRAIN + " --hook-layer 3", "hook_layer=3 contradicts the cache"),
    "train-hook-layer-negative": (TRAIN + " --hook-layer -1", "hook_layer: Input should be greater than or equal to 0"),
    "train-model-name-contradicts-cache": (TRAIN + " --model-name gpt2", "model_name='gpt2' contradicts the cache"),
    "score-alpha-inf": (SCORE + " --alpha inf", "alpha must be a finite number >= 0, got inf"),
    "score-alpha-negative": (SCORE + " --alpha -1", "alpha must be a finite number >= 0, got -1"),
    "score-quantile-0": (SCORE + " --quantile 0", "quantile must be in (0, 1], got 0"),
    "score-quantile-1.5": (SCORE + " --quantile 1.5", "quantile must be in (0, 1], got 1.5"),
    "score-left-negative": (SCORE + " --left -1", "window sides must be >= 0"),
    "score-right-negative": (SCORE + " --right -2", "window sides must be >= 0"),
    "score-top-n-0": (SCORE + " --top-n 0", "--top-n must be at least 1"),
    "score-n-contexts-0": (SCORE + " --n-contexts 0", "--n-contexts must be at least 1"),
    "score-batch-size-0": (SCORE + " --batch-size 0", "batch_size must be positive"),
    "score-sae-d-in-mismatch": (SCORE.replace("{sae}", "{root}/sae_d32"), "the SAE expects d_in=32"),
    "score-sae-missing": (SCORE.replace("{sae}", "{root}/nope"), "no SAE folder at"),
    "score-sae-folder-without-cfg": (SCORE.replace("{sae}", "{root}/empty_folder"), "cfg.json is missing"),
    "score-cache-not-a-cache": (SCORE.replace("{cache}", "{root}/not_a_cache"), "no activation cache at"),
    "score-vocab-missing": (SCORE + " --vocab {root}/nope.txt", "nope.txt' does not exist"),
    "score-vocab-empty": (SCORE + " --vocab {root}/empty.txt", "error: the reasoning vocabulary is empty"),
    "score-out-is-a-file": (SCORE.replace("{new}", "{file}"), "a_file.txt' is an existing file"),
    "score-device-banana": (SCORE + " --device banana", "unknown device 'banana'"),
    "demo-limit-negative": ("demo --out {new} --model tiny-random --limit -3", "limit must be at least 2"),
    "demo-out-is-a-file": ("demo --out {file} --limit 4", "a_file.txt' is an existing file"),
    "steer-no-features": (STEER, "choose the features to steer"),
    "steer-feature-and-top": (STEER + " --feature 1 --top 2", "either --feature (repeatable) or --top N"),
    "steer-feature-out-of-range": (STEER + " --feature 64", "feature index 64 is out of range"),
    "steer-feature-negative": (STEER + " --feature -1", "feature index -1 is out of range"),
    "steer-top-0": (STEER + " --top 0", "--top must be at least 1"),
    "steer-top-beyond-sae": (STEER + " --top 65", "--top 65 exceeds the SAE's 64 features"),
    "steer-top-without-scores": (STEER.replace("--scores {scores}", "") + " --top 2", "pass the ReasonScore folder"),
    "steer-no-f-max": (STEER.replace("--scores {scores}", "") + " --feature 1", "pass --scores"),
    "steer-no-sae": (STEER.replace("{sae}", "{root}/nope") + " --feature 1", "no SAE folder at"),
    "steer-scores-missing": (STEER.replace("{scores}", "{root}/not_a_cache") + " --feature 1", "holds no feature scores"),
    "steer-scores-for-another-sae": (STEER.replace("{sae}", "{root}/sae_d32") + " --feature 1",
                                     "cover 64 features but the SAE"),
    "steer-sae-d-in-mismatch": ("steer --model tiny-random --sae {root}/sae_d32 --max-activation "
                                "{root}/fmax16.safetensors --feature 1 --prompt Why?", "the SAE expects d_in=32"),
    "steer-f-max-nan": (STEER.replace("--scores {scores}", "--max-activation {root}/fmax_nan.safetensors")
                        + " --feature 1", "is NaN or inf for 64 feature(s)"),
    "steer-f-max-not-safetensors": (STEER.replace("--scores {scores}", "--max-activation {root}/binary.txt")
                                    + " --feature 1", "cannot read max activations from"),
    "steer-no-prompts": ("steer --model tiny-random --sae {sae} --scores {scores} --feature 1", "no prompts"),
    "steer-blank-prompt": (STEER + " --feature 1 --prompt ' '", "--prompt is blank"),
    "steer-prompts-binary": (STEER + " --feature 1 --prompts {root}/binary.txt", "binary.txt' is not UTF-8 text"),
    "steer-mode-unknown": (STEER + " --feature 1 --mode scale", "--mode must be add or clamp, got 'scale'"),
    "steer-max-tokens-0": (STEER + " --feature 1 --max-tokens 0", "--max-tokens must be at least 1"),
    "steer-temperature-negative": (STEER + " --feature 1 --temperature -1", "--temperature must be a finite number"),
    "steer-temperature-nan": (STEER + " --feature 1 --temperature nan", "--temperature must be a finite number"),
    "steer-strength-nan": (STEER + " --feature 1 --strength nan", "strength of feature 1 must be finite"),
    "steer-strength-huge": (STEER + " --feature 1 --strength 1e38", "|γ| must be at most 1000"),
    "steer-sae-without-layer": (STEER.replace("{sae}", "{root}/sae_no_layer") + " --feature 1",
                                "records no hook_layer: pass --layer"),
    "steer-layer-mismatch": (STEER + " --feature 1 --layer 1", "was trained on layer 2, but --layer is 1"),
    "steer-out-is-a-folder": (STEER + " --feature 1 --out {root}/not_a_cache", "--out takes a .jsonl file path"),
    "steer-device-banana": (STEER + " --feature 1 --device banana", "unknown device 'banana'"),
    "steer-model-unknown": (STEER.replace("tiny-random", "nobody/nothing-xyz") + " --feature 1", "tiny-random"),
}


def _cli_params():
    for name, (command, fragment, *marks) in CLI_CASES.items():
        yield pytest.param(command, fragment, id=name, marks=marks)


@pytest.mark.parametrize(("command", "fragment"), list(_cli_params()))
def test_cli_bad_input_is_a_clear_error(env, tmp_path, command, fragment):
    args = [a.format(**_paths(env, tmp_path)) for a in shlex.split(command)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # exited, did not crash
    assert "Traceback" not in result.output
    assert "error: " in result.output
    assert fragment in " ".join(result.output.split()), result.output


def test_a_cli_error_leaves_no_output_behind(env, tmp_path):
    """A refused run writes nothing: no SAE from a non-finite lr, no scores for an absent vocabulary."""
    p = _paths(env, tmp_path)
    runner.invoke(app, [a.format(**p) for a in shlex.split(TRAIN + " --lr inf")])
    assert not (tmp_path / "new").exists()
    runner.invoke(app, [a.format(**p) for a in shlex.split(SCORE + " --vocab {root}/absent_vocab.txt")])
    assert not (tmp_path / "new" / "features.json").exists()
    runner.invoke(app, [a.format(**p) for a in shlex.split(EXTRACT + " --limit -1")])
    assert not (tmp_path / "new").exists()


# -- Python API -------------------------------------------------------------------------------------

def _steer_spec_huge(env):
    from reasoning_dspy.steering import SteeringSpec

    SteeringSpec(features={0: 1e38})


def _steer_spec_inf(env):
    from reasoning_dspy.steering import SteeringSpec

    SteeringSpec.from_features([0], strength=math.inf)


def _steer_vector_nan(env):
    from reasoning_dspy.steering import SteeringSpec

    SteeringSpec(vector=[math.nan] * 64)


def _steer_vector_inf(env):
    from reasoning_dspy.steering import SteeringSpec

    SteeringSpec(vector=[0.0] * 63 + [math.inf])


def _load_max_activation_nan(env):
    from reasoning_dspy.steering import load_max_activation

    load_max_activation(torch.full((64,), math.nan), 64)


def _load_max_activation_nan_file(env):
    from reasoning_dspy.steering import load_max_activation

    load_max_activation(env.root / "fmax_nan.safetensors", 64)


def _resolve_max_activation_nan(env):
    from reasoning_dspy.steering import SteeringSpec, resolve

    fmax = torch.ones(64)
    fmax[3] = math.nan
    resolve(SteeringSpec(features={3: 2.0}), d_model=64, n_layers=4, sae=env.sae.unit_norm_view(),
            max_activation=fmax)


def _resolve_delta_overflows(env):
    from reasoning_dspy.steering import SteeringSpec, resolve

    resolve(SteeringSpec(features={0: 1000.0, 1: 1000.0}), d_model=64, n_layers=4, sae=env.sae.unit_norm_view(),
            max_activation=torch.full((64,), 3e38))


def _engine_max_activation_nan(env):
    from reasoning_dspy.program.lm import SteeredEngine

    SteeredEngine(env.tiny.model, env.tiny.tokenizer, sae=env.sae, max_activation=torch.full((64,), math.nan))


def _steer_context_max_activation_nan(env):
    from reasoning_dspy.steering import SteeringSpec, steer

    steer(env.tiny.model, SteeringSpec(features={0: 2.0}), sae=env.sae, max_activation=[math.nan] * 64)


def _load_prompts_limit_negative(env):
    from reasoning_dspy.prompts import load_prompts

    load_prompts(env.root / "prompts.txt", limit=-1)


def _load_prompts_binary(env):
    from reasoning_dspy.prompts import load_prompts

    load_prompts(env.root / "binary.jsonl")


def _vocabulary_binary(env):
    from reasoning_dspy.features.vocab import Vocabulary

    Vocabulary.from_file(env.root / "binary_vocab.txt")


def _score_alpha_nan(env):
    from reasoning_dspy.features.reasonscore import score_features

    score_features(env.tiny_cache, env.sae, tokenizer=env.tiny.tokenizer, alpha=math.nan, progress=False)


def _score_layer_mismatch(env):
    from reasoning_dspy.activations import ActivationCache
    from reasoning_dspy.features.reasonscore import score_features

    score_features(ActivationCache(env.cache_l1), env.sae, tokenizer=env.tiny.tokenizer, progress=False)


def _train_lr_inf(env):
    from reasoning_dspy.sae import SAETrainConfig

    SAETrainConfig(lr=math.inf)


def _train_diverges(env):
    from reasoning_dspy.sae import SAETrainConfig, train_sae

    out = env.root / "diverged_sae"
    try:
        train_sae(SAETrainConfig(out=str(out), arch="topk", d_sae=32, k=4, batch_size=64, tokens=640, lr=1e30,
                                 log_every=2), torch.randn(512, 16), progress=False)
    finally:
        assert not (out / "sae_weights.safetensors").exists()  # nothing diverged is saved


def _train_nan_activations(env):
    from reasoning_dspy.sae import SAETrainConfig, train_sae

    acts = torch.randn(512, 16)
    acts[7, 3] = math.nan
    train_sae(SAETrainConfig(arch="relu", d_sae=32, batch_size=64, tokens=640, log_every=2), acts, progress=False)


def _train_sources_of_two_widths(env):
    from reasoning_dspy.sae import SAETrainConfig, train_sae

    train_sae(SAETrainConfig(d_sae=32, k=4, batch_size=64), [torch.randn(512, 16), torch.randn(512, 8)],
              progress=False)


def _train_no_sources(env):
    from reasoning_dspy.sae import SAETrainConfig, train_sae

    train_sae(SAETrainConfig(d_sae=32, k=4, batch_size=64), [], progress=False)


def _train_source_not_activations(env):
    from reasoning_dspy.sae import SAETrainConfig, train_sae

    train_sae(SAETrainConfig(d_sae=32, k=4, batch_size=64), [env.tiny_cache, 42], progress=False)


def _train_max_seconds_negative(env):
    from reasoning_dspy.sae import SAETrainConfig

    SAETrainConfig(max_seconds=-1.0)


def _load_model_device(device):
    def call(env):
        from reasoning_dspy.models import load_model

        load_model("tiny-random", device=device)

    return call


def _load_sae_device(env):
    from reasoning_dspy.sae import load_sae

    load_sae(env.root / "sae", device="banana")


def _load_sae_pickle(env):
    from reasoning_dspy.sae import load_sae

    load_sae(env.root / "sae.pt")


def _extract_out_is_file(env):
    from reasoning_dspy.activations import extract_activations

    extract_activations(env.tiny.model, env.tiny.tokenizer, ["Why?"], 2, env.root / "a_file.txt", progress=False)


def _demo_limit_0(env):
    from reasoning_dspy.demo import run_demo

    run_demo(env.root / "demo", limit=0)


def _exc(module: str, name: str):
    import importlib

    return getattr(importlib.import_module(module), name)


PY_CASES = {
    "SteeringSpec-strength-1e38": (_steer_spec_huge, ValidationError, "|γ| must be at most 1000"),
    "SteeringSpec-strength-inf": (_steer_spec_inf, ValidationError, "must be finite, got inf"),
    "SteeringSpec-vector-nan": (_steer_vector_nan, ValidationError, "steering vector must be finite"),
    "SteeringSpec-vector-inf": (_steer_vector_inf, ValidationError, r"entries \[63\] are NaN or inf"),
    "load_max_activation-nan": (_load_max_activation_nan, ("reasoning_dspy.steering", "SteeringError"),
                                "NaN or inf for 64 feature"),
    "load_max_activation-nan-file": (_load_max_activation_nan_file, ("reasoning_dspy.steering", "SteeringError"),
                                     "fmax_nan.safetensors is NaN or inf"),
    "resolve-max-activation-nan": (_resolve_max_activation_nan, ("reasoning_dspy.steering", "SteeringError"),
                                   r"NaN or inf for 1 feature\(s\) \(e.g. \[3\]\)"),
    "resolve-delta-overflows": (_resolve_delta_overflows, ("reasoning_dspy.steering", "SteeringError"),
                                "overflows float32"),
    "SteeredEngine-max-activation-nan": (_engine_max_activation_nan, ("reasoning_dspy.steering", "SteeringError"),
                                         "NaN or inf"),
    "steer-max-activation-nan": (_steer_context_max_activation_nan, ("reasoning_dspy.steering", "SteeringError"),
                                 "NaN or inf"),
    "load_prompts-limit-negative": (_load_prompts_limit_negative, ("reasoning_dspy.prompts", "PromptError"),
                                    "limit must be a positive number"),
    "load_prompts-binary": (_load_prompts_binary, ("reasoning_dspy.prompts", "PromptError"),
                            "binary.jsonl' is not UTF-8 text"),
    "Vocabulary-binary": (_vocabulary_binary, ValueError, "binary_vocab.txt' is not UTF-8 text"),
    "score_features-alpha-nan": (_score_alpha_nan, ValueError, "alpha must be a finite number"),
    "score_features-layer-mismatch": (_score_layer_mismatch, ValueError, "trained on layer 2 but the cache"),
    "SAETrainConfig-lr-inf": (_train_lr_inf, ValidationError, "finite number"),
    "train_sae-diverges": (_train_diverges, ("reasoning_dspy.sae", "TrainingDivergedError"),
                           "training diverged at step 2: the loss is nan"),
    "train_sae-nan-activations": (_train_nan_activations, ("reasoning_dspy.sae", "TrainingDivergedError"),
                                  "check that the activations are finite"),
    "train_sae-sources-of-two-widths": (_train_sources_of_two_widths, ValueError,
                                        "disagree on width: tensor #0 has d_model=16, tensor #1 has d_model=8"),
    "train_sae-no-sources": (_train_no_sources, ValueError, "the list of caches is empty"),
    "train_sae-source-not-activations": (_train_source_not_activations, ValueError, "source 1 is a int; expected"),
    "SAETrainConfig-max-seconds-negative": (_train_max_seconds_negative, ValidationError, "greater than 0"),
    "load_model-device-banana": (_load_model_device("banana"), ValueError, "unknown device 'banana'"),
    "load_model-device-cuda-99": (_load_model_device("cuda:99"), ValueError, "'cuda:99' is not available"),
    "load_sae-device-banana": (_load_sae_device, ValueError, "unknown device 'banana'"),
    "load_sae-pickle": (_load_sae_pickle, ("reasoning_dspy.sae", "SAEFileError"), "refusing to load pickled"),
    "extract_activations-out-is-file": (_extract_out_is_file, ("reasoning_dspy.activations", "CacheError"),
                                        "is an existing file"),
    "run_demo-limit-0": (_demo_limit_0, ValueError, "limit must be at least 1"),
}


@pytest.mark.parametrize(("call", "error", "match"), [pytest.param(*c, id=n) for n, c in PY_CASES.items()])
def test_python_bad_input_raises_a_specific_error(env, call, error, match):
    error = _exc(*error) if isinstance(error, tuple) else error
    with pytest.raises(error, match=match):
        call(env)

