"""Running a request's rows on the engine: limits, admission, the queue, and clients that go away.

Every row of a request (n choices × prompts) is admitted at once or the request gets 503. Rows are
queued on the engine's micro-batcher, so concurrent requests — steered differently or not — share
batched generates. Each row carries a `RowWatch`: a streaming request receives every token as soon
as it is decoded, and a client that disconnects withdraws its rows still waiting in the queue and
stops its running rows at the next decoding step (a batch whose rows all went away ends there). A
request with a `seed` and temperature > 0 runs as a batch of its own, each row sampling from its own
`torch.Generator`, so it is reproducible (it is not batched with others) and no global RNG is touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from reasoning_dspy.engine.generate import GenResult, RowWatch
from reasoning_dspy.engine.jobs import GenerateJob
from reasoning_dspy.serve.admission import Admission, QueueFullError
from reasoning_dspy.serve.bridge import EngineBridge
from reasoning_dspy.serve.config import ServeConfig
from reasoning_dspy.serve.errors import APIError, bad_request, queue_full
from reasoning_dspy.serve.metrics import Metrics
from reasoning_dspy.steering import SteeringSpec


class ClientDisconnected(Exception):
    """The client went away before its answer was ready."""


@dataclass
class GenParams:
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    n: int
    seed: int | None

    @property
    def seeded(self) -> bool:
        return self.seed is not None and self.temperature > 0


def token_limit(config: ServeConfig, context_length: int | None) -> int | None:
    """The longest prompt accepted, in tokens (None: no limit known)."""
    return config.max_prompt_tokens or ((context_length - 1) if context_length else None)


def token_chars(tokenizer: Any) -> int:
    """The most characters one token can stand for: the longest vocabulary entry (a byte-level BPE or
    SentencePiece entry is at least as long as the text it decodes to)."""
    return max((len(t) for t in tokenizer.get_vocab()), default=1)


def check_text_size(texts: Sequence[str], tokens: int | None, chars_per_token: int, param: str) -> None:
    """Refuse texts that cannot fit in `tokens` tokens, before tokenizing them costs time and memory:
    no text longer than `tokens × chars_per_token` characters fits."""
    if tokens is None:
        return
    for i, text in enumerate(texts):
        if len(text) > tokens * chars_per_token:
            which = f"{param}[{i}]" if len(texts) > 1 else param
            raise APIError(400, f"{which}: {len(text)} characters, more than any text of at most {tokens} tokens "
                                f"holds (a token here covers at most {chars_per_token} characters); shorten it",
                           code="context_length_exceeded", param=param)


def plan(config: ServeConfig, req, prompts: Sequence[Sequence[int]], context_length: int | None) -> GenParams:
    """Check a request's sizes against the server's limits; the settings its rows run with."""
    limit = token_limit(config, context_length)
    param = "messages" if hasattr(req, "messages") else "prompt"
    for i, ids in enumerate(prompts):
        if limit is not None and len(ids) > limit:
            which = f"prompt {i} is" if len(prompts) > 1 else "the prompt is"
            raise APIError(400, f"{which} {len(ids)} tokens but this server accepts at most {limit}; shorten it",
                           code="context_length_exceeded", param=param)
    asked = req.requested_max_tokens()
    if asked is not None and asked > config.max_tokens_limit:
        raise bad_request(f"max_tokens={asked} exceeds this server's limit of {config.max_tokens_limit}",
                          code="max_tokens_too_large", param="max_tokens")
    if req.n > config.max_n:
        raise bad_request(f"n={req.n} exceeds this server's limit of {config.max_n}", code="n_too_large", param="n")
    if not prompts:
        raise bad_request("the prompt list is empty", code="invalid_request", param="prompt")
    return GenParams(max_tokens=asked or config.default_max_tokens,
                     temperature=0.0 if req.temperature is None else float(req.temperature),
                     top_p=1.0 if req.top_p is None else float(req.top_p), stop=req.stop_tuple(), n=req.n,
                     seed=req.seed)


def make_jobs(bridge: EngineBridge, prompts: Sequence[Sequence[int]], spec: SteeringSpec | None,
              params: GenParams) -> list[GenerateJob]:
    """One job per choice: prompt 0's n choices first, then prompt 1's, ... A seeded request's choice
    i samples with `candidate_seed(seed, i)`, as `SteeredLM` does for a call's n candidates."""
    from reasoning_dspy.engine.calls import candidate_seed

    return [bridge.job(list(ids), spec, max_tokens=params.max_tokens, temperature=params.temperature,
                       top_p=params.top_p, stop=params.stop, capture=True,
                       seed=candidate_seed(params.seed, i) if params.seeded else None)
            for ids in prompts for i in range(params.n)]


class Rows:
    """A request's rows in flight: `await rows.results(request)` gives their `GenResult`s in order.

    With `stream=True`, `rows.tokens` receives `(row index, token id)` for every token as the
    engine decodes it."""

    def __init__(self, bridge: EngineBridge, admission: Admission, metrics: Metrics, jobs: list[GenerateJob],
                 params: GenParams, retry_after_s: int, *, stream: bool = False):
        self.bridge, self.admission, self.metrics, self.jobs, self.params = bridge, admission, metrics, jobs, params
        if len(jobs) > admission.capacity:
            raise bad_request(f"the request asks for {len(jobs)} generations (n × prompts) but this server runs at "
                              f"most {admission.capacity} at once, so it can never fit; lower n or send fewer "
                              "prompts per request", code="too_many_rows", param="n")
        try:
            admission.acquire(len(jobs))
        except QueueFullError:
            raise queue_full(admission.capacity, retry_after_s) from None
        self.tokens: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        for i, job in enumerate(jobs):
            job.row.watch = RowWatch(on_token=_deliver(loop, self.tokens, i) if stream else None)
        self.futures: list[Future] = []
        self._seeded: asyncio.Future | None = None
        if params.seeded:
            self._seeded = asyncio.ensure_future(asyncio.to_thread(bridge.run_seeded, jobs))
            self._seeded.add_done_callback(lambda _f: admission.release(len(jobs)))
            return
        try:
            for job in jobs:
                future = bridge.submit(job)
                admission.release_when_done(future)
                self.futures.append(future)
        except BaseException:
            admission.release(len(jobs) - len(self.futures))
            self.cancel(count=False)
            raise

    async def results(self, request: Request | None = None) -> list[GenResult]:
        """The rows' results; with `request`, a client that disconnects cancels them
        (`ClientDisconnected`). Without it (streaming: Starlette cancels the stream's task), a
        cancelled wait cancels the rows."""
        waiting = asyncio.shield(self._seeded) if self._seeded is not None else asyncio.gather(
            *(asyncio.wrap_future(f) for f in self.futures))
        watcher = asyncio.ensure_future(_disconnected(request)) if request is not None else None
        try:
            if watcher is None:
                results = await waiting
            else:
                done, _ = await asyncio.wait({waiting, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if waiting not in done:
                    raise ClientDisconnected()
                results = waiting.result()
        except (ClientDisconnected, asyncio.CancelledError):
            self.cancel()
            waiting.cancel()  # nobody reads it any more
            raise
        except BaseException:  # a row failed: drop the request's other rows too
            self.cancel(count=False)
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
        for job, res in zip(self.jobs, results, strict=True):
            self.metrics.observe_tokens(len(job.row.prompt_ids), len(res.token_ids))
        return list(results)

    def cancel(self, count: bool = True) -> None:
        """Withdraw the rows still queued and stop the running ones at their next decoding step.
        `count`: record both in the metrics as cancelled by the client."""
        for job, future in zip(self.jobs, self.futures, strict=False):
            if future.cancel():
                if count:
                    self.metrics.observe_cancel("queued")
            elif not future.done():
                job.row.watch.cancel()
                if count:
                    self.metrics.observe_cancel("running")
        if self._seeded is not None and not self._seeded.done():
            for job in self.jobs:
                job.row.watch.cancel()
            if count:
                self.metrics.observe_cancel("running")


def _deliver(loop: asyncio.AbstractEventLoop, tokens: asyncio.Queue, index: int):
    """An `on_token` for row `index`: hands each token from the engine's worker thread to the loop."""
    def on_token(token_id: int) -> None:
        loop.call_soon_threadsafe(tokens.put_nowait, (index, token_id))

    return on_token


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects. Once the body is read, the server's `receive` yields
    nothing but `http.disconnect`, so waiting on it costs nothing while the rows run."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return
