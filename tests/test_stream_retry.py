"""A batch that fails while its rows stream is retried row by row: each row's stream goes on where
it stopped, nothing repeated, and the final answer is the streamed one. The failure is a real one
inside the model's forward (tiny-random, the real engine and server), raised once mid-decoding."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # dspy may import litellm: never fetch its cost map

import openai  # noqa: E402
import pytest  # noqa: E402
from torch import nn  # noqa: E402

from reasoning_dspy.engine import RowWatch, SteeredEngine  # noqa: E402
from reasoning_dspy.engine.jobs import MeasureJob, measure_response  # noqa: E402
from reasoning_dspy.sae import planted  # noqa: E402
from reasoning_dspy.serve import ServeConfig, ServerThread, create_app, load_served_model  # noqa: E402

PUSH = {"features": {str(planted.PUSH): 0.5}, "units": "residual"}


@contextmanager
def fails_once(model: nn.Module, rows: int = 2, step: int = 4) -> Iterator[dict]:
    """The model's forward raises once: at decoding step `step` of a batch of `rows` rows (after
    those rows have streamed a few tokens). Yields a record of whether it failed."""
    seen = {"steps": 0, "failed": False}

    def hook(_module: nn.Module, args: tuple) -> None:
        ids = args[0]
        if seen["failed"] or ids.shape[0] != rows or ids.shape[1] != 1:
            return
        seen["steps"] += 1
        if seen["steps"] == step:
            seen["failed"] = True
            raise RuntimeError("injected fault mid-batch")

    handle = model.get_input_embeddings().register_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def test_a_retried_row_streams_on_from_where_it_stopped(tiny, planted_sae):
    """Sampled rows (no seed): a rerun from scratch would draw other tokens. The streamed tokens are
    exactly the answer's, and the report and perturbation cover the whole answer."""
    engine = SteeredEngine(tiny.model, tiny.tokenizer, sae=planted_sae, max_tokens=12, temperature=1.0,
                           max_batch_size=2)
    try:
        prompts = [engine._render([{"role": "user", "content": q}], None) for q in ("Is 91 prime?", "Hello there")]
        spec = engine.call_steering({"steering": PUSH})[0]
        jobs = [engine._job(ids, spec, 12, 1.0, 1.0, (), True) for ids in prompts]
        streamed: list[list[int]] = [[], []]
        for job, out in zip(jobs, streamed, strict=True):
            job.row.watch = RowWatch(on_token=out.append)
        with fails_once(tiny.model) as fault, engine.expect(2):
            futures = [engine._batcher.submit(job) for job in jobs]
            results = [f.result(timeout=120) for f in futures]
        assert fault["failed"]  # the batch of 2 failed mid-decoding; its rows reran one by one
        for job, res, tokens in zip(jobs, results, streamed, strict=True):
            assert tokens == res.token_ids and len(tokens) == 12  # every token once, in order, nothing repeated
            assert res.report.n_tokens == 12 and res.perturbation.n_tokens >= 12
            assert res.perturbation.ratio == pytest.approx(0.5, rel=1e-3)
            # the report read during generation is the whole answer's: equal to reading it afresh
            again = measure_response(tiny.model, engine.model_spec, engine._measure_config(),
                                     MeasureJob.for_response(job.row.prompt_ids, res.token_ids, job.row.steering,
                                                             job.row.capture_features))
            assert res.report.topk_mean == pytest.approx(again.topk_mean, rel=1e-4, abs=1e-5)
    finally:
        engine.close()


@pytest.fixture(scope="module")
def served():
    return load_served_model("tiny-random", "tiny-planted")


def test_sse_after_a_failed_batch_joins_to_the_answer(served):
    cfg = ServeConfig(model="tiny-random", sae="tiny-planted", default_max_tokens=12)
    with ServerThread(create_app(cfg, served)) as srv, \
            openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
        args = dict(model="tiny-random", messages=[{"role": "user", "content": "Is 91 prime?"}], max_tokens=12, n=2)
        whole = client.chat.completions.create(**args)
        with fails_once(served.loaded.model) as fault:
            chunks = list(client.chat.completions.create(**args, stream=True))
        assert fault["failed"]
        for i in range(2):
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
            assert text == whole.choices[i].message.content

