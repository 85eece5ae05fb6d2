"""The one place the server touches a `SteeredEngine`'s insides.

The engine's public face is DSPy's (`complete(request)` / `submit(request)` take a
`dspy.lm15.Request`, render the chat template and hide the queued job). A server also needs raw-text
prompts (`/v1/completions`), the job's own future (so a client that goes away can withdraw a job
still waiting in the queue), the queue depth and batch sizes for `/metrics`, and reproducible seeded
sampling. Those use the engine's private members listed here, and nowhere else in the server; a
public engine API for them would replace this module. (`/v1/explain` uses the public
`SteeredEngine.token_latents`.)

Chat prompts are rendered exactly as the engine renders a DSPy call (`render_chat`), and requests
go through the same micro-batcher and `generate_rows`, so a served answer equals `SteeredLM`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future

from reasoning_dspy.engine.generate import GenResult
from reasoning_dspy.engine.jobs import GenerateJob
from reasoning_dspy.engine.microbatcher import BatchStats, model_lock
from reasoning_dspy.engine.steered_engine import SteeredEngine
from reasoning_dspy.serve.catalog import ServedModel
from reasoning_dspy.serve.errors import APIError, bad_request
from reasoning_dspy.steering import SteeringError, SteeringSpec


def build_engine(served: ServedModel, *, max_batch_size: int, max_wait_ms: float, max_tokens: int) -> SteeredEngine:
    """A `SteeredEngine` on the served model (engines on one model share its lock)."""
    return SteeredEngine(
        served.loaded.model, served.loaded.tokenizer, sae=served.sae, max_activation=served.max_activation,
        reasoning_features=served.reasoning_features if served.sae is not None else (),
        max_tokens=max_tokens, temperature=0.0, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
        name=served.name,
    )


class EngineBridge:
    """What the server asks of its engine: prompts, jobs, futures, seeded runs, gauges."""

    def __init__(self, engine: SteeredEngine):
        self.engine = engine

    # -- prompts ------------------------------------------------------------------------------
    def chat_prompt(self, messages: list[dict]) -> list[int]:
        """Token ids of a chat, rendered as the engine renders a DSPy call (system messages in place)."""
        from reasoning_dspy.engine.requests import text_messages

        return self.engine._render(text_messages(messages, self.engine.model_id), None)

    def text_prompt(self, text: str) -> list[int]:
        """Token ids of a raw text prompt (BOS added as the tokenizer does)."""
        with self.engine._tok_lock:
            return list(self.engine.tokenizer(text)["input_ids"])

    def pieces(self, ids: Sequence[int]) -> list[str]:
        """Each token's text (leading spaces included)."""
        with self.engine._tok_lock:
            tok = self.engine.tokenizer
            return [tok.decode([i], skip_special_tokens=False) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        with self.engine._tok_lock:
            return self.engine.tokenizer.decode(list(ids), skip_special_tokens=True)

    @property
    def special_ids(self) -> set[int]:
        return set(self.engine.tokenizer.all_special_ids)

    # -- generation -----------------------------------------------------------------------------
    def job(self, prompt_ids: list[int], spec: SteeringSpec | None, *, max_tokens: int, temperature: float,
            top_p: float, stop: tuple[str, ...], capture: bool, seed: int | None = None) -> GenerateJob:
        """One generation row (sampled from its own `torch.Generator` when `seed` is given); steering
        and context errors become 400s."""
        from dspy.lm15 import ContextLengthError, InvalidRequestError

        try:
            return self.engine._job(list(prompt_ids), spec, max_tokens, temperature, top_p, stop,
                                    capture and self.engine.sae is not None, seed=seed)
        except ContextLengthError as err:
            raise APIError(400, str(err), code="context_length_exceeded", param="messages") from None
        except (InvalidRequestError, SteeringError) as err:
            raise bad_request(str(err), code="invalid_steering", param="steering") from None

    def submit(self, job: GenerateJob) -> Future:
        """Queue a row for the next batch: a future of its `GenResult`, cancellable while queued."""
        return self.engine._batcher.submit(job)

    def run_seeded(self, jobs: Sequence[GenerateJob]) -> list[GenResult]:
        """Run seeded `jobs` as one batch of their own, so the same request with the same seed meets
        the same batch and samples the same tokens. Each row draws from its own `torch.Generator`
        (`GenRow.seed`): no global RNG, CPU or CUDA, is seeded or consumed. Blocks (call it from a
        worker thread); holds the model."""
        with model_lock(self.engine.model):
            self.engine._sync_prefix_cache()
            return self.engine._generate([j.row for j in jobs])

    # -- gauges -----------------------------------------------------------------------------------
    def queue_depth(self) -> int:
        return self.engine._batcher._queue.qsize()

    def batch_stats(self) -> BatchStats:
        return self.engine._batcher.stats

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    @property
    def fingerprint(self) -> str:
        return self.engine.fingerprint

    def close(self) -> None:
        self.engine.close()
