"""What a DSPy call may ask of a `SteeredLM`: seed and logprobs honoured per request, every other
setting refused by name, `n` candidates decoded in one batch, and per-token streaming that DSPy's
`StreamListener` reads."""

from __future__ import annotations

import asyncio
import copy

import dspy
import pytest
import torch
from dspy.adapters.chat_adapter import ChatAdapter
from dspy.streaming import StreamListener, StreamResponse

from reasoning_dspy.engine.requests import render_chat
from reasoning_dspy.program.lm import SteeredLM, engine_of

ANSWER = "Paris is the capital of France."


@pytest.fixture(scope="module")
def sampled(tiny):
    lm = SteeredLM(tiny, max_tokens=8, temperature=1.0, cache=False)
    yield lm
    engine_of(lm).close()


def _sizes(engine) -> list[int]:
    return list(engine._batcher.batch_sizes)


def test_a_seed_reproduces_a_sampled_answer_without_touching_the_global_rng(sampled):
    rng = torch.random.get_rng_state()
    first, again, other = (sampled("Hello", seed=s)[0] for s in (1, 1, 2))
    assert first == again != other
    assert torch.equal(torch.random.get_rng_state(), rng)  # a per-request generator: the global RNG is untouched
    unseeded = {sampled("Hello")[0] for _ in range(3)}
    assert len(unseeded) > 1  # without a seed, sampling still varies
    with pytest.raises(Exception, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        sampled("Hello", seed=-1)


def test_logprobs_are_the_models_own(tiny):
    lm = SteeredLM(tiny, max_tokens=6, cache=False)
    engine = engine_of(lm)
    (out,) = lm("Hello", logprobs=True, top_logprobs=3)
    tokens = out["logprobs"]["content"]
    assert tokens and "".join(t["token"] for t in tokens) == out["text"]
    # the same numbers from a plain teacher-forced forward over the prompt and the answer's tokens
    prompt = render_chat(engine.tokenizer, [{"role": "user", "content": "Hello"}], None)
    answer = [t.token_id for t in lm.history[-1]["response"].logprobs]
    assert engine.tokenizer.decode(answer) == out["text"]
    with torch.no_grad():
        logits = tiny.model(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1: -1].float()
    expected = logits.log_softmax(-1)
    for step, (t, token_id) in enumerate(zip(tokens, answer, strict=True)):
        assert t["logprob"] == pytest.approx(float(expected[step, token_id]), abs=1e-4)
        assert len(t["top_logprobs"]) == 3 and t["top_logprobs"][0]["token"] == t["token"]  # greedy: the top one
    engine.close()


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"top_k": 5}, "top_k=5"),
    ({"presence_penalty": 0.5}, "presence_penalty=0.5"),
    ({"frequency_penalty": 0.5}, "frequency_penalty=0.5"),
    ({"response_format": {"type": "json_object"}}, "response_format="),
    ({"user": "someone"}, "user_id='someone'"),
    ({"metadata": {"steer": {"features": {"5": 1.0}}}}, "metadata key 'steer'"),
])
def test_settings_the_engine_does_not_honour_are_refused_by_name(sampled, kwargs, named):
    with pytest.raises(Exception, match=named) as err:
        sampled("Hello", **kwargs)
    assert "honours max_tokens, temperature, top_p, stop, seed, logprobs" in str(err.value)


def test_n_candidates_decode_in_one_batch(sampled):
    engine = engine_of(sampled)
    before = len(_sizes(engine))
    outs = sampled("Hello", n=4, seed=7)
    assert _sizes(engine)[before:] == [4] and len(outs) == 4 and len(set(outs)) > 1
    assert sampled("Hello", n=4, seed=7) == outs  # the same seeded call, the same candidates
    assert asyncio.run(sampled.acall("Hello", n=4, seed=7)) == outs  # async calls batch them too
    assert _sizes(engine)[before:] == [4, 4, 4]


@pytest.fixture(scope="module")
def marker_lm(tiny):
    """tiny-random trained for a few seconds to answer one question in DSPy's ChatAdapter format, so
    a `StreamListener` has field markers to find."""
    tok = tiny.tokenizer
    messages = ChatAdapter().format(dspy.Predict("question -> answer").signature, demos=[],
                                    inputs={"question": "Capital of France?"})
    prompt = render_chat(tok, messages[1:], messages[0]["content"])
    target = tok(f"[[ ## answer ## ]]\n{ANSWER}\n\n[[ ## completed ## ]]", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + target + [tok.eos_token_id]])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100
    model = copy.deepcopy(tiny.model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the per-test one-thread fixture; two are far slower here
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(400):
            loss = model(input_ids=ids, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if loss.item() < 0.01:
                break
    torch.set_num_threads(threads)
    model.eval()
    lm = SteeredLM(model, tok, max_tokens=len(target) + 4, cache=False)
    yield lm
    engine_of(lm).close()


@pytest.mark.parametrize("async_call", [False, True])
def test_streamify_gets_the_answer_token_by_token(marker_lm, async_call):
    program = dspy.streamify(dspy.Predict("question -> answer"), is_async_program=async_call,
                             stream_listeners=[StreamListener(signature_field_name="answer")])

    async def run():
        chunks, final = [], None
        async for item in program(question="Capital of France?"):
            if isinstance(item, StreamResponse):
                chunks.append(item.chunk)
            elif isinstance(item, dspy.Prediction):
                final = item
        return chunks, final

    with dspy.context(lm=marker_lm, adapter=ChatAdapter()):
        chunks, final = asyncio.run(run())
    assert final.answer == ANSWER
    # many small chunks that spell the answer; the listener holds back at most 10 tokens that may start
    # the next field marker, and tiny-random's tokenizer spells that marker in more, so it leaks after
    assert len(chunks) > 3 and "".join(chunks).startswith(ANSWER)

