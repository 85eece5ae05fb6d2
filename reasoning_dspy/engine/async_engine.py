"""`AsyncSteeredEngine`: the async face of a `SteeredEngine` over the same worker and batches."""

from __future__ import annotations

from typing import Any

from reasoning_dspy.engine import calls
from reasoning_dspy.engine.steered_engine import SteeredEngine


class AsyncSteeredEngine:
    """The async face of a `SteeredEngine` (`await lm.acall(...)`, `dspy.asyncify`): same worker, same batches."""

    def __init__(self, engine: SteeredEngine):
        self.engine = engine

    async def complete(self, request: Any) -> Any:
        import asyncio

        return await asyncio.wrap_future(self.engine.submit(request))

    async def stream(self, request: Any):
        """Per-token stream events, as `SteeredEngine.stream` gives them, awaited on the event loop."""
        import asyncio

        engine = self.engine
        row = engine._take(request, lambda: calls.AsyncTokenFeed(asyncio.get_running_loop()))
        events = engine._stream_events(row.job)
        yield events.start()
        try:
            async for token in row.feed:
                if (event := events.token(token)) is not None:
                    yield event
            for event in events.end(engine._response(await asyncio.wrap_future(row.future), row.job)):
                yield event
        finally:
            row.withdraw()

    async def aclose(self) -> None:
        pass

    def dump_state(self) -> dict:
        return self.engine.dump_state()

    @classmethod
    def load_state(cls, state: dict) -> AsyncSteeredEngine:
        return cls(SteeredEngine.load_state(state))
