"""LoRA fine-tuning on chat examples: tokenisation as inference sees it, the fast loss against the
HF reference, exact resume, PEFT-format adapters that load back, and clear errors."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from reasoning_dspy.engine.requests import render_chat
from reasoning_dspy.models import LoadedModel, load_model, model_spec
from reasoning_dspy.models import tiny as tiny_models
from reasoning_dspy.reasoner.finetune import (
    AdapterError,
    FinetuneConfig,
    build_peft_model,
    finetune,
    load_adapter,
)
from reasoning_dspy.reasoner.finetune_data import (
    IGNORE,
    ChatTemplateMismatchError,
    check_examples,
    collate,
    encode_example,
    encode_examples,
    epoch_batches,
    label_weight,
    labelled_loss,
    reference_loss,
    stop_ids,
)


def make_examples(n: int = 36) -> list[dict]:
    out = []
    for k in range(n):
        a, b = k % 7, (3 * k) % 11
        messages = [{"role": "user", "content": f"What is {a}+{b}?"},
                    {"role": "assistant", "content": f"{a}+{b} = {a + b}" + (". Wait, let me check: yes." * (k % 3))}]
        if k % 4 == 0:
            messages.insert(0, {"role": "system", "content": "Answer briefly."})
        out.append({"messages": messages})
    return out


EXAMPLES = make_examples()


def cfg(out: Path | None = None, **kw) -> FinetuneConfig:
    """A tiny-random run: float32 so exactness checks do not depend on bf16 rounding."""
    base = dict(base_model="tiny-random", out=None if out is None else str(out), max_steps=6, batch_size=4,
                grad_accum=2, lr=1e-2, lora_r=4, lora_alpha=8, lora_dropout=0.1, compute_dtype="float32",
                save_every=0)
    return FinetuneConfig(**{**base, **kw})


def logits_of(model, tokenizer) -> torch.Tensor:
    ids = torch.tensor([render_chat(tokenizer, [{"role": "user", "content": "What is 2+5?"}], None)])
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def straight(tiny, tmp_path_factory):
    """Six steps in one go (dropout on, gradient accumulation, an epoch boundary at step 5), on one
    thread like the tests that resume against it: a module fixture is set up before the autouse
    `_one_thread`, and the kernels MKL/oneDNN pick (so the order of their sums) follow the thread count."""
    out = tmp_path_factory.mktemp("straight")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = finetune(cfg(out), EXAMPLES, loaded=tiny, progress=False)
    finally:
        torch.set_num_threads(threads)
    return result, out


def assert_same_adapter(a: Path, b: Path) -> None:
    """The adapters in `a` and `b` are the same up to float reassociation.

    A resume restores weights, AdamW moments and the RNG exactly, so on one machine at one thread
    count the resumed run is bitwise the uninterrupted one. Across CPU families (AMD AVX2, Intel AMX)
    or thread counts the GEMM kernels sum in another order: 1 vs 2 threads on a Xeon differ by
    3.7e-8 after six steps. Losing the RNG or the optimizer state moves the weights by ~1e-2, so
    atol 1e-6 tolerates the first and still catches the second by four orders of magnitude."""
    x, y = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert x.keys() == y.keys() and x
    for k in x:
        torch.testing.assert_close(y[k], x[k], rtol=1e-5, atol=1e-6)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


# -- tokenisation ----------------------------------------------------------------------------------


def test_prompt_ids_equal_render_chat_and_labels_cover_exactly_the_answer(tiny):
    tok = tiny.tokenizer
    stops = stop_ids(tiny.model, tok)
    for messages in check_examples(EXAMPLES[:8]):
        enc = encode_example(tok, messages, stops)
        prompt = render_chat(tok, messages[:-1], system=None)
        assert enc.input_ids[:len(prompt)] == prompt
        assert enc.labels[:len(prompt)] == [IGNORE] * len(prompt)
        answer = enc.input_ids[len(prompt):]
        assert enc.labels[len(prompt):] == answer
        # the answer text, then the template's end of turn (</s>); the newline after it is not trained
        assert tok.decode(answer) == messages[-1]["content"] + "</s>"
        assert answer[-1] == tok.eos_token_id


def test_chatml_template_trains_up_to_im_end_not_the_newline_after_it():
    tok = tiny_models.build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.eos_token = "<|im_end|>"
    tok.chat_template = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
                         "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    messages = check_examples(EXAMPLES[:1])[0]
    enc = encode_example(tok, messages, {tok.eos_token_id})
    n_prompt = len(render_chat(tok, messages[:-1], None))
    assert tok.decode(enc.input_ids[n_prompt:]) == messages[-1]["content"] + "<|im_end|>"
    assert tok.decode(enc.input_ids[:n_prompt]).endswith("<|im_start|>assistant\n")


def test_smollm2_tokenizer_ends_answers_with_im_end():
    from reasoning_dspy.models import gguf as gguf_models
    from reasoning_dspy.models import load_tokenizer

    if gguf_models.converted_folder("smollm2-135m-instruct") is None:
        pytest.skip("smollm2 has not been converted on this machine (the ChatML test above covers the logic)")
    tok = load_tokenizer("smollm2")
    messages = check_examples(EXAMPLES[:1])[0]
    enc = encode_example(tok, messages, stop_ids(None, tok))
    n_prompt = len(render_chat(tok, messages[:-1], None))
    assert enc.input_ids[:n_prompt] == render_chat(tok, messages[:-1], None)
    assert tok.decode(enc.input_ids[n_prompt:]) == messages[-1]["content"] + "<|im_end|>"


def test_template_that_renders_the_prompt_differently_is_refused():
    tok = tiny_models.build_tokenizer()
    tok.chat_template = (  # generation prompt "<|assistant|>\n", but a rendered answer follows "<|assistant|> "
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|assistant|> ' + m['content'] + eos_token }}"
        "{% else %}{{ '<|' + m['role'] + '|>\n' + m['content'] + eos_token + '\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    gen = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(messages, tokenize=False)
    assert not full.startswith(gen)
    with pytest.raises(ChatTemplateMismatchError, match=r"example 0: .*render_chat"):
        encode_example(tok, messages, {tok.eos_token_id})


def test_field_starts_weigh_the_first_token_of_each_dspy_field(tiny):
    from reasoning_dspy.reasoner.corpus import make_corpus

    tok = tiny.tokenizer
    stops = stop_ids(tiny.model, tok)
    for example in make_corpus(n=12, seed=1):
        plain = encode_example(tok, example.messages, stops)
        enc = encode_example(tok, example.messages, stops, field_start_weight=20.0)
        assert enc.input_ids == plain.input_ids and enc.labels == plain.labels and plain.weights is None
        heavy = [k for k, w in enumerate(enc.weights) if w == 20.0]
        fields = ["reasoning", "answer"] if example.program == "cot" else ["answer"]
        assert len(heavy) == len(fields)  # not the `completed` marker
        for k, field in zip(heavy, fields, strict=True):
            before = tok.decode(enc.input_ids[:k])
            # the weighted token is where the field's value starts (it may carry the marker's newline)
            assert before.rstrip("\n").endswith(f"[[ ## {field} ## ]]"), before[-40:]
            value = example.messages[-1]["content"].split(f"[[ ## {field} ## ]]\n")[1]
            assert value.startswith(tok.decode(enc.input_ids[k:k + 1]).lstrip("\n")[:1])
        assert all(w == (0.0 if lab == IGNORE else 1.0) for w, lab, k in
                   zip(enc.weights, enc.labels, range(len(enc)), strict=True) if k not in heavy)
        wide = encode_example(tok, example.messages, stops, field_start_weight=2.0, field_start_tokens=3)
        assert [k for k, w in enumerate(wide.weights) if w == 2.0] == [k + j for k in heavy for j in range(3)]
    # a plain answer (an arithmetic drill) mixes in unweighted; data with no marker at all is refused
    plain_answer = encode_example(tok, EXAMPLES[1]["messages"], stops, field_start_weight=5.0)
    assert set(plain_answer.weights) == {0.0, 1.0}
    mixed = encode_examples(tok, [EXAMPLES[1]["messages"], example.messages], stops, 10_000, field_start_weight=5.0)
    assert mixed.examples[0].weights == plain_answer.weights
    with pytest.raises(ValueError, match="none of the 2 answers has a DSPy field marker"):
        encode_examples(tok, [EXAMPLES[1]["messages"]] * 2, stops, 10_000, field_start_weight=5.0)


def test_weighted_loss_is_the_weighted_sum_on_both_paths(tiny):
    from reasoning_dspy.reasoner.corpus import make_corpus

    peft_model = _peft(tiny, lora_dropout=0.0)
    lm = peft_model.base_model.model
    stops = stop_ids(tiny.model, tiny.tokenizer)
    corpus = make_corpus(n=4, seed=2)
    messages = [e.messages for e in corpus]
    n_fields = sum(2 if e.program == "cot" else 1 for e in corpus)
    plain = collate([encode_example(tiny.tokenizer, m, stops) for m in messages], tiny.tokenizer.pad_token_id)
    heavy = collate([encode_example(tiny.tokenizer, m, stops, field_start_weight=9.0) for m in messages],
                    tiny.tokenizer.pad_token_id)
    assert "weights" not in plain and label_weight(heavy) == label_weight(plain) + 8 * n_fields
    with torch.no_grad():
        per_token = torch.nn.functional.cross_entropy(
            lm(input_ids=plain["input_ids"], attention_mask=plain["attention_mask"]).logits[:, :-1].transpose(1, 2),
            plain["labels"][:, 1:], ignore_index=IGNORE, reduction="none")
        expected = (per_token * heavy["weights"][:, 1:]).sum()
        torch.testing.assert_close(labelled_loss(lm, heavy), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(reference_loss(lm, heavy), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(labelled_loss(lm, plain), per_token.sum(), rtol=1e-5, atol=1e-5)


def test_overlong_examples_are_cut_or_dropped_and_counted(tiny):
    convs = check_examples(EXAMPLES)
    stops = stop_ids(tiny.model, tiny.tokenizer)
    lengths = [len(encode_example(tiny.tokenizer, m, stops)) for m in convs]
    limit = sorted(lengths)[len(lengths) // 2]
    cut = encode_examples(tiny.tokenizer, convs, stops, limit, "truncate")
    assert cut.truncated == sum(n > limit for n in lengths) > 0 and cut.dropped == 0
    assert max(cut.lengths) == limit
    dropped = encode_examples(tiny.tokenizer, convs, stops, limit, "drop")
    assert dropped.dropped == cut.truncated and len(dropped.examples) == len(convs) - dropped.dropped
    with pytest.raises(ValueError, match=r"all 36 examples are longer than max_length=3"):
        encode_examples(tiny.tokenizer, convs, stops, 3, "drop")
    with pytest.warns(UserWarning, match=rf"{cut.truncated} of 36 examples exceed max_length={limit}"):
        finetune(cfg(max_steps=1, max_length=limit), EXAMPLES, loaded=tiny, progress=False)


def test_batches_are_bucketed_deterministic_and_cover_each_example_once():
    lengths = [(7 * i) % 50 + 5 for i in range(100)]
    a = epoch_batches(lengths, 4, seed=3, epoch=1)
    assert a == epoch_batches(lengths, 4, seed=3, epoch=1)
    assert a != epoch_batches(lengths, 4, seed=3, epoch=2)
    assert sorted(i for b in a for i in b) == list(range(100))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a)
    plain = epoch_batches(lengths, 4, seed=3, epoch=1, bucket=False)
    assert spread < sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain) / 3


# -- the model and the loss ------------------------------------------------------------------------


def _peft(tiny, **kw):
    loaded = LoadedModel(copy.deepcopy(tiny.model), tiny.tokenizer, None)
    loaded.model_spec = model_spec(loaded.model, "tiny-random")
    peft_model = build_peft_model(cfg(**kw), loaded)
    with torch.no_grad():  # a non-zero adapter, so its gradients and outputs matter
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return peft_model


def test_head_on_labelled_positions_only_equals_hf_labels_loss(tiny):
    peft_model = _peft(tiny, lora_dropout=0.0)
    lm = peft_model.base_model.model
    stops = stop_ids(tiny.model, tiny.tokenizer)
    encs = [encode_example(tiny.tokenizer, m, stops) for m in check_examples(EXAMPLES[:6])]
    batch = collate(encs, tiny.tokenizer.pad_token_id)
    assert not bool(batch["attention_mask"].all())  # padding is part of the check
    n = int((batch["labels"][:, 1:] != IGNORE).sum())

    hf = lm(**batch).loss  # transformers' own causal-LM loss over the full sequence
    hf.backward()
    hf_grads = {k: p.grad.clone() for k, p in peft_model.named_parameters() if p.requires_grad}
    peft_model.zero_grad()
    fast = labelled_loss(lm, batch) / n
    fast.backward()
    torch.testing.assert_close(fast, hf, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(reference_loss(lm, batch) / n, hf, rtol=1e-5, atol=1e-6)
    for k, p in peft_model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, hf_grads[k], rtol=1e-4, atol=1e-6)


def test_lora_sits_on_upper_layers_and_lower_layers_need_no_grad(tiny):
    peft_model = _peft(tiny, upper_layers=2, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert names and all(".layers.2." in n or ".layers.3." in n for n in names)
    assert {n.split(".")[-4] for n in names} == {"q_proj", "v_proj", "o_proj", "down_proj"}
    layers = peft_model.base_model.model.model.layers
    seen = {}
    hooks = [layers[i].register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o)) for i in (1, 2)]
    peft_model(input_ids=torch.tensor([[1, 5, 9, 11]]))
    for h in hooks:
        h.remove()
    first = lambda o: o[0] if isinstance(o, tuple) else o  # noqa: E731
    assert not first(seen[1]).requires_grad and first(seen[2]).requires_grad


# -- training ----------------------------------------------------------------------------------------


def test_loss_falls_and_the_given_model_is_untouched(tiny, straight):
    before = logits_of(tiny.model, tiny.tokenizer)
    result = finetune(cfg(max_steps=16, lora_dropout=0.0, batch_size=8, grad_accum=1, lr=2e-2), EXAMPLES,
                      loaded=tiny, progress=False)
    losses = [r["loss"] for r in result.log]
    assert len(losses) == 16 and result.steps == 16 and result.stopped == "completed"
    assert sum(losses[-3:]) / 3 < losses[0] - 0.2
    assert result.tokens > 0 and result.out is None
    torch.testing.assert_close(logits_of(tiny.model, tiny.tokenizer), before, rtol=0, atol=0)


def test_bf16_autocast_trains_close_to_float32(tiny):
    f32 = finetune(cfg(max_steps=2, lora_dropout=0.0), EXAMPLES, loaded=tiny, progress=False)
    bf16 = finetune(cfg(max_steps=2, lora_dropout=0.0, compute_dtype="bfloat16"), EXAMPLES, loaded=tiny,
                    progress=False)
    assert bf16.log[0]["loss"] == pytest.approx(f32.log[0]["loss"], rel=2e-2)
    assert all(torch.isfinite(p).all() for p in bf16.model.parameters())


def test_resume_equals_an_uninterrupted_run(tiny, straight, tmp_path):
    full, full_out = straight
    part = finetune(cfg(tmp_path), EXAMPLES, loaded=tiny, progress=False, stop_after=3)
    assert part.stopped == "interrupted" and part.steps == 3
    assert (tmp_path / "checkpoint" / "state.safetensors").is_file() and not (tmp_path / "reasoner.json").exists()
    with open(tmp_path / "log.jsonl", "a") as fh:  # a step logged after the checkpoint, then a crash
        fh.write(json.dumps({"step": 4, "loss": 0.0, "tokens": 0, "lr": 0.0, "seconds": 0.0}) + "\n")
    rest = finetune(cfg(tmp_path, resume=True), EXAMPLES, loaded=tiny, progress=False)
    assert rest.steps == 6 and rest.stopped == "completed" and len(rest.log) == 6
    assert_same_adapter(full_out, tmp_path)
    assert [r["loss"] for r in _log(tmp_path)] == pytest.approx([r["loss"] for r in _log(full_out)], rel=1e-5)
    assert [r["tokens"] for r in _log(tmp_path)] == [r["tokens"] for r in _log(full_out)]


def test_budget_stop_saves_an_adapter_and_resumes_to_the_same_result(tiny, straight, tmp_path):
    _, full_out = straight
    first = finetune(cfg(tmp_path, max_seconds=1e-9), EXAMPLES, loaded=tiny, progress=False)
    assert first.stopped == "budget_time" and first.steps == 1
    info = json.loads((tmp_path / "reasoner.json").read_text())
    assert info["stopped"] == "budget_time" and info["steps"] == 1 and (tmp_path / "adapter_config.json").is_file()
    done = finetune(cfg(tmp_path, resume=True), EXAMPLES, loaded=tiny, progress=False)
    assert done.steps == 6
    assert_same_adapter(full_out, tmp_path)


def test_output_folder_holds_a_peft_adapter_and_reasoner_json(straight):
    result, out = straight
    assert {"adapter_config.json", "adapter_model.safetensors", "reasoner.json", "log.jsonl"} <= {
        p.name for p in out.iterdir()}
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["peft_type"] == "LORA" and adapter_cfg["layers_to_transform"] == [2, 3]
    assert adapter_cfg["base_model_name_or_path"] == "tiny-random"
    info = json.loads((out / "reasoner.json").read_text())
    assert info["base_model"] == "tiny-random" and (info["d_model"], info["n_layers"]) == (64, 4)
    assert info["final_loss"] == pytest.approx(result.loss) and info["tokens"] == result.tokens > 0
    assert len(info["data"]) == 16 and info["config"]["lora_r"] == 4
    row = _log(out)[-1]
    assert set(row) >= {"step", "loss", "tokens", "lr", "seconds"} and row["step"] == 6
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))


def test_merged_adapter_changes_outputs_and_load_adapter_round_trips(tiny, straight):
    result, out = straight
    trained = logits_of(result.model, tiny.tokenizer)
    base = load_model("tiny-random", dtype="float32")
    untouched = logits_of(base.model, base.tokenizer)
    assert (trained - untouched).abs().max() > 1e-3
    merged = load_adapter(base, out)
    assert isinstance(merged, LoadedModel) and merged.model_spec.name == "tiny-random"
    assert not any("lora" in n for n, _ in merged.model.named_parameters())
    torch.testing.assert_close(logits_of(merged.model, base.tokenizer), trained, rtol=1e-4, atol=1e-4)
    unmerged = load_adapter(load_model("tiny-random", dtype="float32").model, out, merge=False)
    torch.testing.assert_close(logits_of(unmerged, base.tokenizer), trained, rtol=1e-5, atol=1e-5)


# -- bad input ---------------------------------------------------------------------------------------


def _other_model() -> LoadedModel:
    """A different small Llama (d_model 32) under another name."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=2048, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2)
    model = LlamaForCausalLM(config)
    return LoadedModel(model, tiny_models.build_tokenizer(), model_spec(model, "other-tiny"))


def test_load_adapter_refuses_another_base_model(straight, tmp_path):
    _, out = straight
    with pytest.raises(AdapterError, match=r"trained for 'tiny-random' \(d_model 64, 4 layers\).*'other-tiny' "
                                           r"\(d_model 32, 4 layers\)"):
        load_adapter(_other_model(), out)
    renamed = load_model("tiny-random", dtype="float32")
    renamed.model_spec.name = "my-copy"
    with pytest.raises(AdapterError, match=r"'tiny-random'.*'my-copy'.*check_name=False"):
        load_adapter(renamed, out)
    load_adapter(renamed, out, check_name=False)  # same weights under another name
    bare = tmp_path / "bare"  # a PEFT adapter without reasoner.json: the shapes still get checked
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns("reasoner.json", "checkpoint"))
    with pytest.raises(AdapterError, match=r"q_proj has input width 64, but in the given model 'other-tiny'.* 32"):
        load_adapter(_other_model(), bare)


def test_load_adapter_refuses_missing_and_damaged_folders(straight, tmp_path):
    _, out = straight
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        load_adapter(load_model("tiny-random"), tmp_path / "nope")
    only_ckpt = tmp_path / "only_ckpt"
    only_ckpt.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no adapter_config.json"):
        load_adapter(load_model("tiny-random"), only_ckpt)
    cut = tmp_path / "cut"
    shutil.copytree(out, cut)
    data = (cut / "adapter_model.safetensors").read_bytes()
    (cut / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterError, match=r"unreadable \(corrupted or truncated\?\)"):
        load_adapter(load_model("tiny-random"), cut)


def test_resume_refuses_other_settings_or_data_and_a_fresh_run_refuses_a_used_folder(tiny, tmp_path):
    finetune(cfg(tmp_path), EXAMPLES, loaded=tiny, progress=False, stop_after=1)
    with pytest.raises(ValueError, match=r"already holds a run .*resume=True"):
        finetune(cfg(tmp_path), EXAMPLES, loaded=tiny, progress=False)
    with pytest.raises(ValueError, match=r"config differs in \['lr'\]"):
        finetune(cfg(tmp_path, resume=True, lr=5e-3), EXAMPLES, loaded=tiny, progress=False)
    with pytest.raises(ValueError, match=r"trained on other examples"):
        finetune(cfg(tmp_path, resume=True), EXAMPLES[:-1], loaded=tiny, progress=False)
    (tmp_path / "checkpoint" / "state.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match=r"checkpoint in .* is unreadable"):
        finetune(cfg(tmp_path, resume=True), EXAMPLES, loaded=tiny, progress=False)


@pytest.mark.parametrize(("examples", "match"), [
    ([], r"no examples"),
    ([{"prompt": "x"}], r"example 0 must be \{'messages'"),
    ([{"messages": [{"role": "user", "content": "hi"}]}], r"at least one message before the answer"),
    ([{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "x"}]}],
     r"example 0: the last message must be the assistant's answer, got role 'user'"),
    ([{"messages": [{"role": "tool", "content": "hi"}, {"role": "assistant", "content": "x"}]}],
     r"example 0, message 0: expected \{'role': one of"),
    ([{"messages": [{"role": "user", "content": ["hi"]}, {"role": "assistant", "content": "x"}]}],
     r"example 0, message 0"),
])
def test_bad_examples_are_refused(examples, match):
    with pytest.raises(ValueError, match=match):
        check_examples(examples)


def test_bad_config_is_refused(tiny, tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"target_modules is empty"):
        FinetuneConfig(target_modules=[])
    with pytest.raises(ValidationError, match=r"resume=True needs out"):
        FinetuneConfig(resume=True)
    with pytest.raises(ValidationError, match=r"lora_r"):
        FinetuneConfig(lora_r=0)
    with pytest.raises(ValidationError, match=r"extra"):
        FinetuneConfig(learning_rate=1e-3)
    assert FinetuneConfig(target_modules="q_proj,o_proj").target_modules == ["q_proj", "o_proj"]
    with pytest.raises(ValueError, match=r"upper_layers=5 exceeds the 4 decoder layers of tiny-random"):
        finetune(cfg(upper_layers=5), EXAMPLES, loaded=tiny, progress=False)
    with pytest.raises(ValueError, match=r"\['c_attn'\] are not linear layers of tiny-random.*'q_proj'"):
        finetune(cfg(target_modules=["q_proj", "c_attn"]), EXAMPLES, loaded=tiny, progress=False)
    with pytest.raises(ValueError, match=r"the given model is 'tiny-random' but cfg.base_model is 'smollm2'"):
        finetune(cfg(base_model="smollm2"), EXAMPLES, loaded=tiny, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"is an existing file"):
        finetune(cfg(tmp_path / "file"), EXAMPLES, loaded=tiny, progress=False)


# -- adapters as models ------------------------------------------------------------------------------


def test_an_adapter_folder_loads_as_a_merged_model_cached_by_its_contents(straight, tmp_path, monkeypatch):
    import time

    from reasoning_dspy.models import ModelLoadError

    monkeypatch.setenv("REASONING_DSPY_CACHE", str(tmp_path / "cache"))
    result, out = straight
    adapter = tmp_path / "my-reasoner"
    shutil.copytree(out, adapter, ignore=shutil.ignore_patterns("checkpoint"))
    loaded = load_model(adapter)
    assert loaded.model_spec.name == "my-reasoner"
    trained = logits_of(result.model, loaded.tokenizer)
    torch.testing.assert_close(logits_of(loaded.model, loaded.tokenizer), trained, rtol=1e-4, atol=1e-4)
    assert (tmp_path / "cache" / "models" / "my-reasoner" / "model.safetensors").is_file()

    start = time.perf_counter()
    again = load_model("my-reasoner")  # by its short name, from the cached merge
    assert time.perf_counter() - start < 5
    assert torch.equal(logits_of(again.model, again.tokenizer), logits_of(loaded.model, loaded.tokenizer))

    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # damaged: merged again, refused
    with pytest.raises(ModelLoadError, match="my-reasoner"):
        load_model(adapter)


def test_the_shipped_reasoner_name_says_how_to_rebuild_when_its_files_are_missing(monkeypatch, tmp_path):
    from reasoning_dspy.models import ModelLoadError, shipped

    monkeypatch.setattr(shipped, "resources", type("R", (), {"files": staticmethod(lambda _: tmp_path)}))
    with pytest.raises(ModelLoadError, match="reasoner train experiments/configs/reasoner-smollm2.yaml"):
        load_model("smollm2-reasoner")


def test_ship_copies_a_loadable_adapter_and_refuses_an_incomplete_one(straight, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from reasoning_dspy.cli import app
    from reasoning_dspy.reasoner.ship import ship_adapter

    monkeypatch.setenv("REASONING_DSPY_CACHE", str(tmp_path / "cache"))
    result, out = straight
    dest = ship_adapter(out, tmp_path / "shipped")
    assert sorted(p.name for p in dest.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                        "reasoner.json"]
    loaded = load_model(dest)
    torch.testing.assert_close(logits_of(loaded.model, loaded.tokenizer), logits_of(result.model, loaded.tokenizer),
                               rtol=1e-4, atol=1e-4)
    bad = CliRunner().invoke(app, ["reasoner", "ship", "--adapter", str(out / "checkpoint"), "--dest",
                                   str(tmp_path / "x")])
    assert bad.exit_code == 2 and "adapter_config.json" in bad.output
    assert CliRunner().invoke(app, ["reasoner", "ship"]).exit_code == 2
    unknown = CliRunner().invoke(app, ["reasoner", "ship", "--adapter", str(out), "--name", "smollm2-reasoner-v9"])
    assert unknown.exit_code == 2 and "choose from smollm2-reasoner" in unknown.output  # names the ones that exist
