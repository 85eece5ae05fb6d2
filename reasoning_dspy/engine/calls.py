"""One DSPy call's rows: its `n` candidates decoded in one batch, and its tokens streamed as they come.

DSPy asks a canonical engine for `n > 1` candidates by calling `complete(request)` n times, one
after another, so an engine that took each call on its own would decode n batches of one.
`SteeredLM` announces each call's `n` before DSPy starts it (`announce`, from an LM callback; a
context variable, so threads and asyncio tasks each keep their own); the engine's first `complete`
then submits all n rows together and hands the others out to the calls that follow (`Announced`).

A streamed call's rows carry a `RowWatch` whose tokens go to a feed (`TokenFeed`, `AsyncTokenFeed`);
`StreamEvents` turns them into per-token text deltas that join to exactly the final text.
"""

from __future__ import annotations

import asyncio
import queue
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from reasoning_dspy.engine.jobs import GenerateJob


class TokenFeed:
    """Token ids from the engine's worker thread to a consumer thread; iteration ends with the row."""

    def __init__(self) -> None:
        self._queue: queue.Queue[int | None] = queue.Queue()

    def put(self, token_id: int) -> None:
        self._queue.put(token_id)

    def close(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Iterator[int]:
        while (token := self._queue.get()) is not None:
            yield token


class AsyncTokenFeed:
    """Token ids from the engine's worker thread to a coroutine on `loop`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[int | None] = asyncio.Queue()

    def put(self, token_id: int | None) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, token_id)

    def close(self) -> None:
        self.put(None)

    async def __aiter__(self) -> AsyncIterator[int]:
        while (token := await self._queue.get()) is not None:
            yield token


@dataclass
class Row:
    """A submitted request row: its job, the future of its `GenResult`, and its token feed when streamed."""

    job: GenerateJob
    future: Future
    feed: TokenFeed | AsyncTokenFeed | None = None

    def withdraw(self) -> None:
        """Take the row out of the queue, or stop it at its next decoding step."""
        if not self.future.cancel() and not self.future.done() and self.job.row.watch is not None:
            self.job.row.watch.cancel()


@dataclass
class Announced:
    """The `n` of the DSPy call running in this context, and the candidate rows not handed out yet."""

    engine: Any
    n: int
    request: Any = None  # the request whose candidates `rows` are
    rows: deque[Row] = field(default_factory=deque)


_ANNOUNCED: ContextVar[Announced | None] = ContextVar("reasoning_dspy_announced_call", default=None)


def announce(engine: Any, n: int) -> None:
    """The DSPy call about to run in this context asks `engine` for `n` candidates."""
    _ANNOUNCED.set(Announced(engine, n) if n > 1 else None)


def finish() -> None:
    """The call is over: withdraw candidates nobody asked for (DSPy stopped early on an error)."""
    announced = _ANNOUNCED.get()
    if announced is not None:
        for row in announced.rows:
            row.withdraw()
    _ANNOUNCED.set(None)


def announced_for(engine: Any) -> Announced | None:
    announced = _ANNOUNCED.get()
    return announced if announced is not None and announced.engine is engine else None


def candidate_seed(seed: int | None, index: int) -> int | None:
    """The seed of candidate `index` of a seeded call: the call's own for the first, so `n=1` and the
    first of `n` agree; distinct, reproducible ones for the others."""
    if seed is None or index == 0:
        return seed
    return (seed * 1_000_003 + index) % 2**63


class StreamEvents:
    """A row's stream events: start, a text delta as soon as the tokens make new text safe to send,
    and at the end the rest of the final text and the end event.

    A delta never runs past a stop string or into the first characters of one the next tokens may
    complete, and never holds half a character, so the deltas join to exactly the final text. A
    row that reports logprobs streams its response whole at the end (one delta with all of them)."""

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str], model: str, whole: bool = False):
        self.decode, self.stop, self.model, self.whole = decode, tuple(s for s in stop if s), model, whole
        self.ids: list[int] = []
        self.sent = ""

    def start(self) -> Any:
        from dspy.lm15 import StreamStartEvent

        return StreamStartEvent(model=self.model)

    def token(self, token_id: int) -> Any | None:
        """The delta event this token makes safe to send, if any."""
        if self.whole:
            return None
        self.ids.append(token_id)
        text = self.decode(self.ids)
        cut = min((text.find(s) for s in self.stop if s in text), default=-1)
        text = text[:cut] if cut >= 0 else text[: len(text) - _stop_start(text, self.stop)]
        text = text.rstrip("\ufffd")  # a character whose bytes are still arriving
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return None
        piece, self.sent = text[len(self.sent):], text
        return _delta(piece)

    def end(self, response: Any) -> list[Any]:
        """The events that finish the stream of `response` (the row's complete `Response`)."""
        from dspy.lm15 import StreamEndEvent, response_to_events

        if self.whole:
            return list(response_to_events(response))[1:]
        rest = response.text[len(self.sent):] if response.text.startswith(self.sent) else ""
        end = StreamEndEvent(finish_reason=response.finish_reason, usage=response.usage,
                             provider_data=response.provider_data)
        return ([_delta(rest)] if rest else []) + [end]


def _delta(text: str) -> Any:
    from dspy.lm15 import StreamDeltaEvent, TextDelta

    return StreamDeltaEvent(delta=TextDelta(text=text))


def _stop_start(text: str, stop: Sequence[str]) -> int:
    """Length of the longest end of `text` that begins a stop string (held back until it is decided)."""
    return max((n for s in stop for n in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:n])), default=0)
