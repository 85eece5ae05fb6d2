"""SteeredEngine / SteeredLM: the DSPy engine contract, cache keys, save/load, micro-batching."""

from __future__ import annotations

import asyncio
import copy
import threading
import time

import dspy
import pytest
import torch
from dspy.lm15 import Config, Message, Request

from reasoning_dspy.engine import GenRow, MicroBatcher, RowWatch, generate_rows
from reasoning_dspy.engine.state import LIVE_ENGINES
from reasoning_dspy.program.adapter import LenientChatAdapter
from reasoning_dspy.program.lm import SteeredEngine, SteeredLM, collect_reports, engine_of
from reasoning_dspy.sae import save_sae
from reasoning_dspy.steering import SteeringSpec

STEER = SteeringSpec(features={5: 6.0, 40: 4.0}).model_dump(mode="json")


@pytest.fixture(scope="module")
def engine(tiny, steer_sae, steer_fmax):
    eng = SteeredEngine(tiny.model, tiny.tokenizer, sae=steer_sae, max_activation=steer_fmax, max_tokens=12,
                        max_wait_ms=20)
    yield eng
    eng.close()


def _request(engine, text="What is two plus two?", system=None, **config):
    return Request(model=f"local/{engine.model_id}", messages=(Message.user(text),), system=system,
                   config=Config(**config))


def test_complete_applies_chat_template_and_limits(engine, tiny):
    r = engine.complete(_request(engine, system="Be brief.", max_tokens=7))
    expected = tiny.tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is two plus two?"}],
        tokenize=False, add_generation_prompt=True)
    assert r.usage.input_tokens == len(tiny.tokenizer(expected)["input_ids"])
    assert 0 < r.usage.output_tokens <= 7 and r.finish_reason in ("stop", "length")
    assert r.model == engine.model_id and r.provider_data["reasoning_dspy"]["steering"] is None
    # a stop string cuts the text before it, and finish_reason says so
    full = engine.complete(_request(engine, max_tokens=12)).text
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    cut = engine.complete(_request(engine, max_tokens=12, stop=(stop,)))
    assert cut.text == full[: full.index(stop)] and cut.finish_reason == "stop"


def test_metadata_steering_changes_output_and_is_reported(engine):
    plain = engine.complete(_request(engine))
    steered = engine.complete(_request(engine, extensions={"metadata": {"steering": STEER, "capture": True}}))
    assert steered.text != plain.text
    data = steered.provider_data["reasoning_dspy"]
    assert SteeringSpec.model_validate(data["steering"]) == SteeringSpec.model_validate(STEER)
    assert data["activation"]["n_tokens"] == steered.usage.output_tokens
    assert data["activation"]["features_mean"] is not None  # the steered features are the reasoning set
    with pytest.raises(dspy.lm15.InvalidRequestError, match="d_sae=128"):
        engine.complete(_request(engine, extensions={"metadata": {"steering": {"features": {"999": 1.0}}}}))


def test_default_steering_and_explicit_baseline(engine):
    steered_engine = engine.derive(steering=STEER)
    try:
        assert steered_engine.model_id != engine.model_id
        default = steered_engine.complete(_request(steered_engine))
        explicit = engine.complete(_request(engine, extensions={"metadata": {"steering": STEER}}))
        baseline = steered_engine.complete(_request(steered_engine, extensions={"metadata": {"steering": None}}))
        assert default.text == explicit.text
        assert baseline.text == engine.complete(_request(engine)).text
    finally:
        steered_engine.close()


def test_a_steered_lm_on_an_engine_keeps_its_own_settings(engine, tiny):
    """`SteeredLM(<engine>, steering=..., max_tokens=...)` steers and limits as asked, under a model id
    of its own, so DSPy's cache never hands it the unsteered LM's answer."""
    plain = SteeredLM(engine, max_tokens=4)
    steered = SteeredLM(engine, steering=STEER, max_tokens=4)
    try:
        assert plain.model == f"local/{engine.model_id}" and steered.model != plain.model
        assert plain.kwargs["max_tokens"] == steered.kwargs["max_tokens"] == 4
        assert engine_of(steered).default_steering == SteeringSpec.model_validate(STEER)
        unsteered_text, steered_text = plain("Hello")[0], steered("Hello")[0]
        expected = engine.complete(_request(engine, "Hello", max_tokens=4, temperature=0.0,
                                            extensions={"metadata": {"steering": STEER}}))
        assert steered_text == expected.text != unsteered_text and expected.usage.output_tokens <= 4
        with pytest.raises(TypeError, match="tokenizer= and dtype="):
            SteeredLM(engine, tiny.tokenizer)
    finally:
        engine_of(steered).close()


def test_cache_key_changes_with_sae_fmax_and_steering(tiny, steer_sae, steer_fmax):
    base = SteeredLM(tiny, sae=steer_sae, max_activation=steer_fmax, max_tokens=6)
    same = SteeredLM(tiny, sae=steer_sae, max_activation=steer_fmax, max_tokens=6)
    other_sae = steer_sae.fold_decoder_norms()
    with torch.no_grad():
        other_sae.W_dec[0, 0] += 0.5
    variants = [
        SteeredLM(tiny, sae=other_sae, max_activation=steer_fmax, max_tokens=6),
        SteeredLM(tiny, sae=steer_sae, max_activation=steer_fmax * 2, max_tokens=6),
        SteeredLM(tiny, sae=steer_sae, max_activation=steer_fmax, steering=STEER, max_tokens=6),
        SteeredLM(tiny, max_tokens=6),
    ]
    assert base.model == same.model
    assert len({base.model, *(v.model for v in variants)}) == 1 + len(variants)
    # DSPy's cache really separates them: the second LM's call reaches its engine, not the cache
    base("Hello")
    base("Hello")
    assert len(engine_of(base)._batcher.batch_sizes) == 1  # the repeat was a cache hit
    variants[0]("Hello")
    assert len(engine_of(variants[0])._batcher.batch_sizes) == 1
    base("Hello", metadata={"steering": STEER})  # per-call steering is part of the key
    assert len(engine_of(base)._batcher.batch_sizes) == 2
    for lm in (base, same, *variants):
        engine_of(lm).close()


def test_n_async_and_reports_through_dspy(tiny, steer_sae, steer_fmax):
    lm = SteeredLM(tiny, sae=steer_sae, max_activation=steer_fmax, capture=True, max_tokens=5, cache=False)
    outs = lm("Hello", n=3, temperature=0.9)
    assert len(outs) == 3 and all(isinstance(o, str) for o in outs)
    assert asyncio.run(lm.acall("Hello")) == lm("Hello")
    with collect_reports() as collector:
        lm("Hello", metadata={"steering": STEER})
    (report,) = collector.reports()
    assert report.steering == SteeringSpec.model_validate(STEER) and report.activation.n_tokens > 0
    engine_of(lm).close()


def test_save_load_round_trip(tiny, steer_sae, steer_fmax, tmp_path):
    dspy.settings.configure(adapter=LenientChatAdapter())
    save_sae(steer_sae, tmp_path / "sae")
    lm = SteeredLM("tiny-random", dtype="float32", sae=str(tmp_path / "sae"), max_activation=steer_fmax,
                   steering=STEER, max_tokens=6, cache=False)
    program = dspy.Predict("question -> answer")
    program.lm = lm
    program.save(tmp_path / "program.json")
    answer = program(question="Why?").answer
    # another process: no live engine with that fingerprint, rebuilt from the recorded sources
    fingerprint = engine_of(lm).fingerprint
    LIVE_ENGINES.pop(fingerprint)
    loaded = dspy.Predict("question -> answer")
    loaded.load(tmp_path / "program.json", allow_unsafe_lm_state=True)
    assert loaded.lm.model == lm.model and engine_of(loaded.lm) is not engine_of(lm)
    assert engine_of(loaded.lm).fingerprint == fingerprint
    assert loaded(question="Why?").answer == answer
    # a different model under the same name is refused, not silently used
    state = engine_of(lm).dump_state()
    LIVE_ENGINES.pop(fingerprint, None)
    state["sources"]["seed"] = 1
    with pytest.raises(ValueError, match="weights, SAE or f_max changed"):
        SteeredEngine.load_state(state)
    # an in-memory SAE cannot be rebuilt elsewhere: the error says how to fix it
    mem = SteeredEngine(tiny.model, tiny.tokenizer, sae=steer_sae, max_activation=steer_fmax, capture=True)
    mem_state = mem.dump_state()
    mem.close()
    LIVE_ENGINES.pop(mem.fingerprint, None)
    with pytest.raises(ValueError, match="save_sae"):
        SteeredEngine.load_state(mem_state)
    for e in (engine_of(lm), engine_of(loaded.lm)):
        e.close()


def test_a_program_with_its_steered_lm_pickles_as_how_it_was_built(tiny, steer_sae, steer_fmax, tmp_path):
    """`program.save(..., save_program=True)` pickles a `SteeredLM` as its sources and settings; an LM
    that cannot be rebuilt elsewhere is refused with what to do instead."""
    save_sae(steer_sae, tmp_path / "sae")
    lm = SteeredLM("tiny-random", dtype="float32", sae=str(tmp_path / "sae"), max_activation=steer_fmax,
                   steering=STEER, max_tokens=6, cache=False)
    program = dspy.Predict("question -> answer")
    program.lm = lm
    with dspy.context(adapter=LenientChatAdapter()):
        answer = program(question="Why?").answer
    program.save(tmp_path / "whole", save_program=True)
    fingerprint = engine_of(lm).fingerprint
    LIVE_ENGINES.pop(fingerprint)  # as in another process: rebuilt from the recorded sources
    loaded = dspy.load(tmp_path / "whole", allow_pickle=True)
    rebuilt = engine_of(loaded.lm)
    assert rebuilt is not engine_of(lm) and rebuilt.fingerprint == fingerprint and loaded.lm.kwargs == lm.kwargs
    with dspy.context(adapter=LenientChatAdapter()):
        assert loaded(question="Why?").answer == answer
    in_memory = SteeredLM(tiny, sae=steer_sae, max_activation=steer_fmax, max_tokens=6)
    program.lm = in_memory
    with pytest.raises(RuntimeError, match=r"SAE was passed in memory.*Save the program's state instead"):
        program.save(tmp_path / "in_memory", save_program=True)
    for e in (engine_of(lm), rebuilt, engine_of(in_memory)):
        e.close()


def test_bad_requests_fail_clearly(engine, tiny):
    with pytest.raises(dspy.lm15.UnsupportedFeatureError, match="text messages only"):
        engine.complete(Request(model="local/x", messages=(Message.user([dspy.lm15.ImagePart(url="http://x/y.png")]),)))
    with pytest.raises(dspy.lm15.ContextLengthError, match="holds 1024 positions"):
        engine.complete(_request(engine, text="word " * 1100))
    truncating = engine.derive(truncate_prompt=True)
    long = truncating.complete(_request(truncating, text="word " * 1100, max_tokens=12))
    assert long.usage.input_tokens + long.usage.output_tokens <= 1024 and long.usage.output_tokens > 0
    truncating.close()
    plain = SteeredEngine(tiny.model, tiny.tokenizer)
    with pytest.raises(dspy.lm15.InvalidRequestError, match="needs an SAE"):
        plain.complete(_request(plain, extensions={"metadata": {"steering": STEER}}))
    plain.close()


# -- micro-batching ---------------------------------------------------------------------------

def test_microbatcher_routes_results_and_isolates_failures():
    seen_threads = set()

    def run(batch):
        seen_threads.add(threading.current_thread().name)
        if any(x < 0 for x in batch):
            raise ValueError("negative")
        return [x * 10 for x in batch]

    batcher = MicroBatcher(run, max_batch_size=8, max_wait_ms=30)
    results: dict[int, object] = {}

    def call(x):
        try:
            results[x] = batcher(x)
        except ValueError as err:
            results[x] = err

    threads = [threading.Thread(target=call, args=(x,)) for x in [*range(1, 24), -5]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert all(results[x] == x * 10 for x in range(1, 24))
    assert isinstance(results[-5], ValueError)
    assert max(batcher.batch_sizes) > 1 and seen_threads == {batcher.name}
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(1)


def test_an_announced_burst_is_gathered_whole_however_slowly_it_arrives():
    gathered = []

    def run(batch):
        gathered.append(sorted(batch))
        return [x * 10 for x in batch]

    batcher = MicroBatcher(run, max_batch_size=4, max_wait_ms=1, max_gather_ms=5)
    results: dict[int, int] = {}

    def call(x):
        time.sleep(0.02 * x)  # arrivals 20 ms apart: far beyond max_wait_ms and max_gather_ms
        results[x] = batcher(x)

    with batcher.expect(10):
        threads = [threading.Thread(target=call, args=(x,)) for x in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert gathered == [list(range(10))] and results == {x: x * 10 for x in range(10)}
    # without an announcement the same arrivals run as they come
    for t in [threading.Thread(target=call, args=(x,)) for x in range(3)]:
        t.start()
        t.join()
    assert len(gathered) == 4
    # an announced item that never comes is waited for at most expect_wait_ms
    batcher.expect_wait_ms = 50
    with batcher.expect(3):
        start = time.monotonic()
        assert batcher(7) == 70
    assert time.monotonic() - start < 5
    batcher.close()


def test_the_same_calls_decode_in_the_same_batches_whatever_their_arrival(tiny, steer_sae, steer_fmax):
    """Announced calls run in model batches of max_batch_size in an order fixed by their content, so
    the captured activations are the same floats whichever thread came first."""
    engine = SteeredEngine(tiny.model, tiny.tokenizer, sae=steer_sae, max_activation=steer_fmax, capture=True,
                           reasoning_features=[5, 40], max_tokens=6, max_batch_size=3, max_wait_ms=0)
    prompts = [f"Question {i}: what is {i} plus {2 * i}?" * (1 + i % 3) for i in range(7)]
    steering = [None, SteeringSpec(features={5: 2.0}, units="residual").model_dump(mode="json")]
    requests = [_request(engine, p, extensions={"metadata": {"steering": steering[i % 2]}})
                for i, p in enumerate(prompts)]

    def run(order):
        out = {}
        with engine.expect(len(order)):
            threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, engine.complete(requests[i])))
                       for i in order]
            for t in threads:
                t.start()
                time.sleep(0.01)
            for t in threads:
                t.join()
        return [(r.message.text, r.provider_data["reasoning_dspy"]["activation"]) for r in (out[i] for i in range(7))]

    sizes_before = len(engine._batcher.batch_sizes)
    forward = run(list(range(7)))
    backward = run(list(reversed(range(7))))
    engine.close()
    assert forward == backward  # bit-identical texts and activations
    assert list(engine._batcher.batch_sizes)[sizes_before:] == [7, 7]  # each burst gathered whole (3 + 3 + 1 rows)


def test_an_interrupt_is_never_retried_and_reaches_every_caller():
    calls = []

    def run(batch):
        calls.append(list(batch))
        raise KeyboardInterrupt

    batcher = MicroBatcher(run, max_batch_size=8, max_wait_ms=200)
    futures = [batcher.submit(x) for x in range(3)]
    for f in futures:
        with pytest.raises(KeyboardInterrupt):
            f.result(timeout=10)
    assert calls == [[0, 1, 2]]  # one attempt, no one-by-one retries
    batcher.run_batch = lambda batch: [x + 1 for x in batch]
    assert batcher(41) == 42  # a new worker serves later requests
    batcher.close()


def test_only_the_worker_runs_the_model(tiny, steer_sae, steer_fmax):
    engine = SteeredEngine(tiny.model, tiny.tokenizer, sae=steer_sae, max_activation=steer_fmax, capture=True,
                           reasoning_features=[5, 40], max_tokens=4)
    threads: set[str] = set()
    handle = tiny.model.register_forward_pre_hook(lambda *a: threads.add(threading.current_thread().name))
    try:
        engine.generate(["Hello there"], min_tokens=3)
        engine.generate(["Hello there"])
        engine.reasoning_activation(["Wait, maybe four."])
        ids = tiny.tokenizer("Wait, maybe four.")["input_ids"]
        latents = engine.token_latents(ids, 1, {"features": {"5": 2.0}})
        engine.complete(_request(engine))
    finally:
        handle.remove()
        engine.close()
    assert threads == {engine._batcher.name}
    assert latents.shape == (len(ids) - 1, steer_sae.d_sae) and latents.dtype == torch.float32
    with pytest.raises(ValueError, match="start must be within"):
        engine.token_latents(ids, len(ids) + 1)


def test_fine_tuning_in_place_renames_the_model_and_misses_the_cache(tiny):
    model = copy.deepcopy(tiny.model)
    lm = SteeredLM(model, tiny.tokenizer, max_tokens=6)
    before_name, before = lm.model, lm("What is two plus two?")
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.0)  # an in-place update, as an optimiser step makes
    after = lm("What is two plus two?")
    assert lm.model != before_name and after != before  # a new name, so DSPy's cache missed
    fresh = SteeredLM(model, tiny.tokenizer, max_tokens=6)
    assert fresh.model == lm.model and fresh("What is two plus two?") == after
    for each in (lm, fresh):
        engine_of(each).close()


def test_load_state_keeps_the_saved_settings_when_an_engine_is_live(tiny):
    saved = SteeredEngine(tiny.model, tiny.tokenizer, max_tokens=5, temperature=0.7, max_batch_size=3,
                          max_wait_ms=1.0)
    state = saved.dump_state()
    live = SteeredEngine(tiny.model, tiny.tokenizer, max_tokens=9)  # same weights: same fingerprint
    assert live.fingerprint == saved.fingerprint and LIVE_ENGINES[live.fingerprint] is live
    loaded = SteeredEngine.load_state(state)
    assert (loaded.max_tokens, loaded.temperature, loaded.max_batch_size, loaded.max_wait_ms) == (5, 0.7, 3, 1.0)
    assert loaded.model is live.model  # the live engine lent its model: nothing was reloaded
    for e in (saved, live, loaded):
        e.close()


@pytest.mark.parametrize("steering", [
    SteeringSpec(features={11: 6.0}),
    SteeringSpec(features={3: 5.0}, mode="clamp"),
    SteeringSpec(vector=[0.5] * 64, layer=1),  # before the SAE's layer: it changes what the SAE reads
])
def test_reports_of_cached_answers_are_measured_exactly(tiny, steer_sae, steer_fmax, steering):
    """A report missing from the engine's store (DSPy served the answer from its cache) is measured
    again by teacher forcing, and equals the one captured while generating."""
    lm = SteeredLM(tiny, sae=steer_sae, max_activation=steer_fmax, capture=True, reasoning_features=[5, 11, 40],
                   max_tokens=10)
    meta = {"steering": steering.model_dump(mode="json")}
    with collect_reports() as first:
        lm("Is 91 prime?", metadata=meta)
    engine_of(lm).reports.clear()
    with collect_reports() as second:
        lm("Is 91 prime?", metadata=meta)  # a DSPy cache hit
    (captured,), (measured,) = first.reports(), second.reports()
    assert captured.text == measured.text and measured.activation.n_tokens == captured.activation.n_tokens > 0
    assert measured.activation.features_mean == pytest.approx(captured.activation.features_mean, rel=1e-4, abs=1e-6)
    assert measured.activation.topk_mean == pytest.approx(captured.activation.topk_mean, rel=1e-4, abs=1e-6)
    engine_of(lm).close()


class _Steerable(dspy.Module):
    def __init__(self):
        super().__init__()
        self.predict = dspy.Predict("question -> answer")

    def forward(self, question, steering):
        return self.predict(question=question, config={"metadata": {"steering": steering}})


def _devset(prompts):
    specs = [None, STEER, SteeringSpec(features={3: 5.0}, mode="clamp").model_dump(mode="json"),
             SteeringSpec(features={60: -4.0}).model_dump(mode="json")]
    return [dspy.Example(question=p[:120], steering=specs[i % 4]).with_inputs("question", "steering")
            for i, p in enumerate(prompts[:16])]


def test_evaluate_16_threads_matches_one_by_one(tiny, steer_sae, steer_fmax, bundled_prompts):
    """Mixed steered/unsteered greedy requests from 16 DSPy threads, batched, give the one-by-one
    outputs; any difference must be a float-rounding tie, never a mix-up."""
    batched = SteeredLM(tiny, sae=steer_sae, max_activation=steer_fmax, max_tokens=10, cache=False,
                        max_batch_size=16, max_wait_ms=50)
    single = SteeredLM(tiny, sae=steer_sae, max_activation=steer_fmax, max_tokens=10, cache=False,
                       max_batch_size=1)
    devset = _devset(bundled_prompts)
    program = _Steerable()
    threads = set()
    handle = tiny.model.register_forward_pre_hook(lambda *a: threads.add(threading.current_thread().name))
    try:
        with dspy.context(lm=batched, adapter=LenientChatAdapter()):
            result = dspy.Evaluate(devset=devset, metric=lambda ex, pred, trace=None: 1.0, num_threads=16,
                                   display_progress=False)(program)
        with dspy.context(lm=single, adapter=LenientChatAdapter()):
            alone = [program(**ex.inputs()).answer for ex in devset]
    finally:
        handle.remove()
    batch_engine, single_engine = engine_of(batched), engine_of(single)
    assert max(batch_engine._batcher.batch_sizes) > 1  # requests really were batched
    assert set(single_engine._batcher.batch_sizes) == {1}
    assert threads == {batch_engine._batcher.name, single_engine._batcher.name}  # only workers ran the model
    got = {ex.question: pred.answer for ex, pred, _ in result.results}
    assert len(set(alone)) > 4  # the steering specs really produce different answers
    for ex, expected in zip(devset, alone, strict=True):
        if got[ex.question] != expected:
            _assert_tie(single_engine, ex, got[ex.question], expected)
    for e in (batch_engine, single_engine):
        e.close()


def _assert_tie(engine, ex, got, expected):
    """Where batched and single answers differ, the single run's logits at the first differing
    token must be a near tie (top-2 gap < 1e-4)."""
    messages = LenientChatAdapter().format(dspy.Signature("question -> answer"), demos=[],
                                           inputs={"question": ex.question})
    system = next(m["content"] for m in messages if m["role"] == "system")
    ids = engine._render([m for m in messages if m["role"] != "system"], system)
    spec = SteeringSpec.model_validate(ex.steering) if ex.steering else None
    pending = engine._pending(ids, spec, 10, 0.0, 1.0, (), False)
    res = generate_rows(engine.model, engine._worker_tokenizer, [pending.row], sae=engine.sae, output_logits=True)[0]
    for j in range(len(res.token_ids)):
        prefix = engine.tokenizer.decode(res.token_ids[: j + 1], skip_special_tokens=True)
        if prefix not in got:
            top2 = res.extras["logits"][j].topk(2).values
            assert float(top2[0] - top2[1]) < 1e-4, f"batched answer {got!r} differs from {expected!r}: not a tie"
            return
    raise AssertionError(f"answers differ ({got!r} vs {expected!r}) but no differing token was found")


def test_generate_rows_mixed_sampling_keeps_greedy_rows_exact(tiny):
    ids = tiny.tokenizer("Wait, maybe", return_tensors="pt")["input_ids"][0].tolist()
    greedy = generate_rows(tiny.model, tiny.tokenizer, [GenRow(ids, 8)])[0]
    torch.manual_seed(3)
    mixed = generate_rows(tiny.model, tiny.tokenizer, [GenRow(ids, 8), GenRow(ids, 8, temperature=1.5, top_p=0.9)])
    assert mixed[0].token_ids == greedy.token_ids
    assert len(mixed[1].token_ids) > 0


def test_sampled_rows_draw_from_the_whole_vocabulary(tiny):
    """At a very high temperature the distribution is nearly flat over all 2,048 tokens, so sampled
    tokens must land outside the raw logits' top 50 most of the time (a hidden top-k filter would
    keep every one of them inside it); greedy rows in the same batch stay exact argmax."""
    ids = tiny.tokenizer("Wait, maybe", return_tensors="pt")["input_ids"][0].tolist()
    torch.manual_seed(0)
    out = generate_rows(tiny.model, tiny.tokenizer, [GenRow(ids, 16, temperature=1e4)] * 4 + [GenRow(ids, 16)],
                        output_logits=True)

    def ranks(res):  # rank of each emitted token among that step's raw logits (0 = argmax)
        return [int((logits > logits[tok]).sum()) for logits, tok in zip(res.extras["logits"], res.token_ids, strict=True)]

    sampled = [r for res in out[:4] for r in ranks(res)]
    assert len(sampled) == 64 and sum(r >= 50 for r in sampled) > 48
    assert ranks(out[4]) == [0] * 16


def test_generation_ignores_the_checkpoints_own_sampling_defaults(tiny):
    """A checkpoint's `generation_config` (repetition penalty, top-k) must not change our rows."""
    ids = tiny.tokenizer("Wait, maybe", return_tensors="pt")["input_ids"][0].tolist()
    plain = generate_rows(tiny.model, tiny.tokenizer, [GenRow(ids, 12)], output_logits=True)[0]
    config = tiny.model.generation_config
    saved = (config.repetition_penalty, config.top_k, config.no_repeat_ngram_size)
    config.repetition_penalty, config.top_k, config.no_repeat_ngram_size = 5.0, 1, 1
    try:
        opinionated = generate_rows(tiny.model, tiny.tokenizer, [GenRow(ids, 12)], output_logits=True)[0]
    finally:
        config.repetition_penalty, config.top_k, config.no_repeat_ngram_size = saved
    assert opinionated.token_ids == plain.token_ids
    assert len(set(plain.token_ids)) < len(plain.token_ids)  # the greedy text repeats a token, so a penalty would bite


def test_engine_prefix_cache_serves_later_calls(tiny, steer_sae, steer_fmax, bundled_prompts):
    """DSPy calls of one program share its system prompt: after the first call per steering the
    engine reuses the prefilled prefix (one request at a time too), answering exactly as an engine
    without the cache."""
    kwargs = dict(sae=steer_sae, max_activation=steer_fmax, max_tokens=8, cache=False, max_batch_size=1)
    cached, plain = SteeredLM(tiny, **kwargs), SteeredLM(tiny, **kwargs, prefix_cache_size=0)
    program = _Steerable()
    calls = [(p[:100], spec) for p, spec in zip(bundled_prompts[:4], [None, STEER, None, STEER], strict=True)]
    answers = []
    for lm in (cached, plain):
        with dspy.context(lm=lm, adapter=LenientChatAdapter()):
            answers.append([program(question=q, steering=spec).answer for q, spec in calls])
    engine, off = engine_of(cached), engine_of(plain)
    assert answers[0] == answers[1] and len(set(answers[0])) > 1
    assert (engine.prefix_cache.misses, engine.prefix_cache.hits) == (2, 2)  # one prefill per steering
    assert len(off.prefix_cache) == 0 and off.prefix_cache.hits == 0
    sibling = engine.derive(name="sibling")
    assert sibling.prefix_cache.size == 4 and off.dump_state()["prefix_cache_size"] == 0
    with pytest.raises(ValueError, match="prefix cache size"):
        SteeredLM(tiny, prefix_cache_size=-1)
    for e in (engine, off, sibling):
        e.close()


def test_engine_reads_a_topk_sae_as_trained(tiny):
    """The engine's reasoning activation comes from the k latents the TopK SAE was trained to pick,
    in unit-norm-decoder units, even when its decoder rows have different norms."""
    from reasoning_dspy.activations import residual_at
    from reasoning_dspy.features.activation import summarize_latents
    from reasoning_dspy.sae import SAE, SAEConfig

    torch.manual_seed(0)
    sae = SAE.from_config(SAEConfig(architecture="topk", k=8, d_in=64, d_sae=128, hook_layer=2,
                                    model_name="tiny-random"))
    with torch.no_grad():
        sae.W_dec.mul_(torch.empty(128, 1).uniform_(0.1, 5.0))
    norms = sae.W_dec.detach().norm(dim=1)
    text = "Wait, let me think. Therefore the answer is four."
    eng = SteeredEngine(tiny.model, tiny.tokenizer, sae=sae, max_tokens=4)
    try:
        report = eng.reasoning_activation([text])[0]
    finally:
        eng.close()
    ids = tiny.tokenizer(text, return_tensors="pt")["input_ids"]
    keep = ~torch.isin(ids[0], torch.tensor(sorted(set(tiny.tokenizer.all_special_ids))))
    with torch.no_grad():
        latents = sae.encode(residual_at(tiny.model, 2, ids)[0][keep]) * norms
    ref = summarize_latents(latents, eng.capture_k)
    assert report.n_tokens == int(keep.sum())
    assert report.topk_mean == pytest.approx(ref.topk_mean, rel=1e-5)
    assert [i for i, _ in report.top_features] == [i for i, _ in ref.top_features]
    assert [v for _, v in report.top_features] == pytest.approx([v for _, v in ref.top_features], rel=1e-5)


def test_a_watched_row_hands_over_each_token_and_stops_when_cancelled(tiny):
    ids = tiny.tokenizer("Tell me a long story about numbers", add_special_tokens=True)["input_ids"]
    other = tiny.tokenizer("Count to ten", add_special_tokens=True)["input_ids"]
    reference = generate_rows(tiny.model, tiny.tokenizer, [GenRow(ids, 12), GenRow(ids, 12), GenRow(other, 12)])
    seen: dict[int, list[int]] = {0: [], 1: []}

    def listen(i, stop_after=None):
        def on_token(token_id):
            seen[i].append(token_id)
            if stop_after is not None and len(seen[i]) == stop_after:
                watches[i].cancel()  # from inside the callback: the row stops at this step
        return on_token

    watches = [RowWatch(on_token=listen(0)), RowWatch(on_token=listen(1, stop_after=3))]
    rows = [GenRow(ids, 12, watch=watches[0]), GenRow(ids, 12, watch=watches[1]), GenRow(other, 12)]
    out = generate_rows(tiny.model, tiny.tokenizer, rows)
    assert len(reference[1].token_ids) > 3  # the uncancelled row goes on
    assert seen[0] == out[0].token_ids == reference[0].token_ids  # every token, in order, EOS excluded
    assert out[1].finish_reason == "cancelled" and out[1].token_ids == seen[1] == reference[1].token_ids[:3]
    assert out[1].text == tiny.tokenizer.decode(seen[1], skip_special_tokens=True)
    assert (out[2].token_ids, out[2].finish_reason) == (reference[2].token_ids, reference[2].finish_reason)
    # a row cancelled before it starts decodes one token at most, and a batch of such rows ends at once
    gone = RowWatch()
    gone.cancel()
    assert len(generate_rows(tiny.model, tiny.tokenizer, [GenRow(ids, 50, watch=gone)])[0].token_ids) <= 1
