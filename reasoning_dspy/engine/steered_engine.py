"""`SteeredEngine`: a Hugging Face causal LM in process, with SAE steering and micro-batching, behind
DSPy 3.4's engine contract.

DSPy's engine contract is `complete(request: dspy.lm15.Request) -> dspy.lm15.Response`, passed as
`dspy.LM("local/<name>", engine=..., async_engine=...)`. DSPy owns caching, retries and history, and
asks for `n > 1` candidates by calling `complete` n times; the engine owns the model. This one

- renders the chat template (the system prompt arrives in `request.system`),
- honours max_tokens, temperature, top_p, stop, seed (a `torch.Generator` per row, never the global
  RNG) and logprobs (with top alternatives), and refuses every other setting by name,
- decodes a call's `n > 1` candidates in one batch (`engine/calls.py`), and streams per token,
- steers with the engine's default `SteeringSpec` or a per-call `metadata={"steering": {...}}`
  (`{"steering": None}` for an unsteered baseline),
- micro-batches concurrent calls (`dspy.Evaluate(num_threads=N)`) into one batched generate,
- keeps the prefilled system prompt (per steering) across calls instead of recomputing it,
- optionally records the SAE latents of the generated tokens in the same forward and returns the
  response's reasoning activation in `Response.provider_data["reasoning_dspy"]`, keeping recent
  reports so answers DSPy later serves from its cache report too (`report_for_call`),
- reports how far steering moved the residual (`Response.provider_data["reasoning_dspy"]["perturbation"]`:
  mean ‖δ‖ and ‖δ‖/‖x‖ over the generated tokens; `GenResult.perturbation` from `generate`).

DSPy's cache key is the model string + messages + call kwargs, so the model string carries a
fingerprint of the weights, the SAE, f_max and the default steering: a different model or SAE can
never be served another's cached answers, and per-call steering is part of the kwargs. The weights
part is refreshed whenever the weights change (`refresh_fingerprint`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any

from torch import Tensor, nn

from reasoning_dspy.engine import calls
from reasoning_dspy.engine.fingerprint import WeightsWatch, model_fingerprint, slug, tensors_fingerprint
from reasoning_dspy.engine.generate import GenResult, RowWatch
from reasoning_dspy.engine.jobs import (
    BatchJob,
    GenerateJob,
    LatentsJob,
    MeasureJob,
    ReportStore,
)
from reasoning_dspy.engine.microbatcher import MicroBatcher
from reasoning_dspy.engine.parsing import RequestParsing
from reasoning_dspy.engine.prefix_cache import PrefixCache
from reasoning_dspy.engine.requests import text_messages
from reasoning_dspy.engine.responses import ResponseBuilding
from reasoning_dspy.engine.state import (
    LIVE_ENGINES,
    EngineSources,
    dump_engine_state,
    load_engine_state,
    unrebuildable,
)
from reasoning_dspy.engine.worker import BatchWorker, Job
from reasoning_dspy.features.activation import ActivationReport
from reasoning_dspy.models import model_spec
from reasoning_dspy.sae import SAE
from reasoning_dspy.steering import (
    SteeringError,
    SteeringSpec,
    as_spec,
    load_max_activation,
)


class SteeredEngine(RequestParsing, BatchWorker, ResponseBuilding):
    """DSPy engine running a Hugging Face causal LM in process, with SAE steering and micro-batching.

    Build it with `SteeredEngine.from_pretrained("tiny-random", sae="runs/sae")` or from objects
    (`SteeredEngine(model, tokenizer, sae=sae, max_activation=fmax)`), or use `SteeredLM(...)`, which
    returns a ready `dspy.LM`.

    Every forward runs on the engine's worker thread (`engine/jobs.py`): DSPy calls, `generate`,
    and the teacher-forced measurements of `reasoning_activation` and `report_for_call`. Sibling
    engines on one model (`derive`) each have a worker and share one lock per model, so the model
    never runs on two threads at once. The model id carries a fingerprint of the weights that is
    refreshed whenever they change, so a model fine-tuned in place gets a new id.
    """

    #: What DSPy's adapters may ask of this engine (read through `dspy.LM.supported_params`).
    supported_params = frozenset({"max_tokens", "temperature", "top_p", "stop", "seed", "logprobs", "top_logprobs",
                                  "stream"})

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        sae: SAE | None = None,
        max_activation: Any = None,
        steering: SteeringSpec | dict | None = None,
        capture: bool = False,
        reasoning_features: Sequence[int] = (),
        capture_k: int = 10,
        max_tokens: int = 256,
        temperature: float = 0.0,
        max_batch_size: int = 16,
        max_wait_ms: float = 5.0,
        prefix_cache_size: int = 4,
        truncate_prompt: bool = False,
        name: str | None = None,
        sources: EngineSources | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.model_spec = model_spec(model)
        self.sae_raw = sae
        self.sae = sae.unit_norm_view().to(next(model.parameters()).device).eval() if sae is not None else None
        if self.sae is not None and self.sae.d_in != self.model_spec.d_model:
            raise SteeringError(
                f"the SAE expects d_in={self.sae.d_in} but {self.model_spec.name} has d_model={self.model_spec.d_model}; "
                "use an SAE trained on this model"
            )
        self.max_activation = load_max_activation(max_activation, sae.d_sae) if (
            max_activation is not None and sae is not None) else None
        self.default_steering = as_spec(steering)
        self.capture = bool(capture)
        self.reasoning_features = tuple(int(f) for f in reasoning_features)
        if (self.capture or self.reasoning_features) and self.sae is None:
            raise SteeringError("capturing reasoning activation needs an SAE: pass sae=")
        self.capture_k = capture_k
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.prefix_cache = PrefixCache(prefix_cache_size)  # used only under the model lock
        self.truncate_prompt = truncate_prompt
        self.sources = sources or EngineSources(model=self.model_spec.name, dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
                                                device=str(next(model.parameters()).device))
        self.name = slug(name or self.model_spec.name)
        if self.default_steering is not None:
            self._resolve(self.default_steering)  # fail at construction, not on the first call
        self._watch = WeightsWatch(model)
        self._fingerprint_lock = threading.Lock()
        self._weights_fingerprint = model_fingerprint(model, tokenizer)
        self._prefix_cache_weights = self._weights_fingerprint
        self.fingerprint = self._fingerprint()
        self.reports = ReportStore()
        self._tok_lock = threading.Lock()
        self._worker_tokenizer = _clone_tokenizer(tokenizer)
        self._batcher: MicroBatcher[Job, Any] = MicroBatcher(
            self._run_batch, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, name=f"engine-{self.name}"
        )
        LIVE_ENGINES[self.fingerprint] = self

    # -- construction helpers --------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        model: str = "tiny-random",
        *,
        dtype: str | None = None,
        device: str = "cpu",
        seed: int = 0,
        sae: str | SAE | None = None,
        max_activation: Any = None,
        **kwargs: Any,
    ) -> SteeredEngine:
        """Load the model (and SAE folder) by name/path; the paths are kept for `dump_state`."""
        from reasoning_dspy.models import load_model
        from reasoning_dspy.sae import load_sae

        loaded = load_model(model, dtype=dtype, device=device, seed=seed)
        sae_obj = load_sae(sae, device=device) if isinstance(sae, (str, bytes)) or hasattr(sae, "__fspath__") else sae
        fmax_path = str(max_activation) if isinstance(max_activation, str) or hasattr(max_activation, "__fspath__") else None
        sources = EngineSources(model=model, dtype=str(next(loaded.model.parameters()).dtype).removeprefix("torch."),
                                device=str(device), seed=seed,
                                sae=str(sae) if sae_obj is not sae else None, max_activation=fmax_path)
        return cls(loaded.model, loaded.tokenizer, sae=sae_obj, max_activation=max_activation, sources=sources,
                   **kwargs)

    def derive(self, **changes: Any) -> SteeredEngine:
        """A sibling engine on the same model (e.g. another SAE or default steering).

        Engines on one model share a lock, so the model still runs on one thread at a time.
        """
        params = dict(sae=self.sae_raw, max_activation=self.max_activation, sources=self.sources, **self._settings())
        if "sae" in changes and "max_activation" not in changes:
            params["max_activation"] = None
        if "sae" in changes or "max_activation" in changes:
            params["sources"] = self.sources.model_copy(update={"sae": None, "max_activation": None})
        params.update(changes)
        return SteeredEngine(self.model, self.tokenizer, **params)

    def _fingerprint(self) -> str:
        h = hashlib.sha256(self._weights_fingerprint.encode())
        if self.sae is not None:
            h.update(tensors_fingerprint(self.sae_raw.state_dict().items()).encode())
            h.update(json.dumps(self.sae.cfg.model_dump(mode="json"), sort_keys=True).encode())
        if self.max_activation is not None:
            h.update(self.max_activation.numpy().tobytes())
        h.update((self.default_steering.fingerprint() if self.default_steering else "unsteered").encode())
        h.update(f"capture={self.capture}|{self.reasoning_features}|{self.capture_k}".encode())
        h.update(f"truncate_prompt={self.truncate_prompt}".encode())
        return h.hexdigest()[:12]

    @property
    def model_id(self) -> str:
        """`<model>-<fingerprint>`: the name DSPy sees (as `local/<model_id>`) and caches under."""
        return f"{self.name}-{self.fingerprint}"

    def refresh_fingerprint(self) -> str:
        """Re-fingerprint the weights if they may have changed (fine-tuned in place); returns `model_id`.

        `SteeredLM` calls this before every DSPy call, so the cache key follows the weights.
        """
        with self._fingerprint_lock:
            if self._watch.changed():
                weights = model_fingerprint(self.model, self.tokenizer)
                if weights != self._weights_fingerprint:
                    self._weights_fingerprint = weights
                    self.fingerprint = self._fingerprint()
                    self.reports.clear()
                    LIVE_ENGINES[self.fingerprint] = self
            return self.model_id

    # -- the DSPy engine API ---------------------------------------------------------------
    def complete(self, request: Any) -> Any:
        """Generate one response for a `dspy.lm15.Request` (blocks until the batch it joined is done)."""
        row = self._take(request)
        return self._response(_wait(row.future), row.job)

    def submit(self, request: Any) -> Future:
        """Queue a request; returns a `concurrent.futures.Future` of its `Response` (used by the async engine)."""
        row = self._take(request)
        outer: Future = Future()

        def done(f: Future) -> None:
            try:
                outer.set_result(self._response(f.result(), row.job))
            except BaseException as err:  # noqa: BLE001 - handed to the awaiting caller
                outer.set_exception(err)

        row.future.add_done_callback(done)
        return outer

    def stream(self, request: Any) -> Iterator[Any]:
        """The response as stream events: a text delta per token as it is decoded (`dspy.streamify`)."""
        row = self._take(request, calls.TokenFeed)
        events = self._stream_events(row.job)
        yield events.start()
        try:
            for token in row.feed or ():
                if (event := events.token(token)) is not None:
                    yield event
            yield from events.end(self._response(_wait(row.future), row.job))
        finally:
            row.withdraw()  # the consumer stopped early: the row stops too (a no-op once it is done)

    def _stream_events(self, job: GenerateJob) -> calls.StreamEvents:
        return calls.StreamEvents(self._decode, job.row.stop, self.model_id, whole=job.row.logprobs is not None)

    def _decode(self, ids: list[int]) -> str:
        with self._tok_lock:
            return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _take(self, request: Any, feed: Callable[[], Any] | None = None) -> calls.Row:
        """The row that answers `request`: the next candidate already running for the call DSPy
        announced (`n > 1`), or new rows, all the call's candidates submitted together."""
        announced = calls.announced_for(self)
        if announced is not None and announced.request is request and announced.rows:
            return announced.rows.popleft()
        n = announced.n if announced is not None and announced.request is None else 1
        first = self._parse(request)
        jobs = [first] + [GenerateJob(dataclasses.replace(first.row, seed=calls.candidate_seed(first.row.seed, i)),
                                      first.steering) for i in range(1, n)]
        if n == 1:
            return self._submit_row(first, feed() if feed is not None else None, watched=False)
        with self._batcher.expect(n):  # the candidates are gathered whole, into one batch
            rows = [self._submit_row(job, feed() if feed is not None else None, watched=True) for job in jobs]
        announced.request, announced.rows = request, deque(rows[1:])
        return rows[0]

    def _submit_row(self, job: GenerateJob, feed: Any, watched: bool) -> calls.Row:
        if feed is not None or watched:
            job.row.watch = RowWatch(on_token=feed.put if feed is not None else None)
        future = self._batcher.submit(job)
        if feed is not None:
            future.add_done_callback(lambda _f: feed.close())
        return calls.Row(job, future, feed)

    def expect(self, n: int, threads: int | None = None) -> AbstractContextManager[None]:
        """Announce `n` calls about to arrive from parallel threads (a context manager): they are
        gathered whole and run in model batches of `max_batch_size`, in an order fixed by their
        content, so the same calls always decode in the same batches. With `threads` (fewer than
        `n` callers, each waiting for its answer), each wave of `threads` calls runs as soon as it is in.

        >>> with engine.expect(len(jobs), threads=8):
        ...     results = executor.execute(run, jobs)
        """
        return self._batcher.expect(n, threads)

    def close(self) -> None:
        """Stop the worker thread (a new engine is needed afterwards)."""
        self._batcher.close()

    def generate(self, prompts: Sequence[str], *, steering: SteeringSpec | dict | None | str = "default",
                 max_tokens: int | None = None, temperature: float | None = None, capture: bool | None = None,
                 system: str | None = None, min_tokens: int = 0) -> list[GenResult]:
        """Generate for plain user prompts without DSPy (demo, benchmarks); batched like DSPy calls.

        `min_tokens > 0` runs the prompts as exactly one batch with EOS suppressed for that many
        tokens, so benchmarks compare equal amounts of decoding."""
        spec = self.default_steering if steering == "default" else as_spec(steering)
        jobs = [self._job(self._render([{"role": "user", "content": p}], system), spec, max_tokens or self.max_tokens,
                          self.temperature if temperature is None else temperature, 1.0, (),
                          self.capture if capture is None else bool(capture)) for p in prompts]
        if min_tokens:
            return _wait(self._batcher.submit(BatchJob([j.row for j in jobs], min_tokens)))
        return [_wait(f) for f in [self._batcher.submit(j) for j in jobs]]

    def reasoning_activation(self, texts: Sequence[str], features: Sequence[int] | None = None
                             ) -> list[ActivationReport]:
        """Reasoning activation of finished texts, each read on its own (no prompt before it).

        For metrics scoring predictions that carry no report (e.g. from a plain `dspy.Predict`).
        A response generated by this engine is better measured with `report_for_call`, in its prompt.
        """
        self._measure_config()  # fails clearly without an SAE
        features = self.reasoning_features if features is None else tuple(int(f) for f in features)
        special = set(self.tokenizer.all_special_ids)
        jobs = []
        for text in texts:
            with self._tok_lock:
                ids = self.tokenizer(text or " ")["input_ids"]
            start = next((i for i, t in enumerate(ids) if t not in special), len(ids))  # BOS: context, not measured
            jobs.append(MeasureJob(ids, start, None, features))
        return [_wait(f) for f in [self._batcher.submit(j) for j in jobs]]

    def token_latents(self, token_ids: Sequence[int], start: int = 0,
                      steering: SteeringSpec | dict | None = None) -> Tensor:
        """SAE latents `[len(token_ids) - start, d_sae]` (float32, CPU) of the tokens `token_ids[start:]`,
        each read at its own position in the context before it, with `steering` applied as during
        generation: what explanations and token heatmaps show. Runs on the worker like every forward,
        so it waits its turn instead of holding the model while batches queue."""
        self._measure_config()  # fails clearly without an SAE
        if not 0 <= start <= len(token_ids):
            raise ValueError(f"start must be within the {len(token_ids)} tokens, got {start}")
        spec = as_spec(steering)
        row = self._resolve(spec) if spec is not None else None
        return _wait(self._batcher.submit(LatentsJob(list(token_ids), start, row, ())))

    def report_for_call(self, messages: list[dict], kwargs: dict, text: str) -> ActivationReport | None:
        """The activation report of `text`, answered by this engine to a DSPy call (`messages`, `kwargs`).

        Taken from the reports of recent generations when it is there (DSPy cache hits included),
        else measured exactly by one teacher-forced forward. None when the engine has no SAE.
        """
        if self.sae is None:
            return None
        spec, features = self.call_steering(kwargs.get("metadata"))
        job = self._job(self._render(text_messages(messages, self.model_id), None), spec,
                        kwargs.get("max_tokens") or self.max_tokens, 0.0, 1.0, (), True, features)
        key = ReportStore.key(job.row.prompt_ids, spec, job.row.capture_features, text)
        report = self.reports.get(key)
        if report is None:
            with self._tok_lock:
                output_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            report = _wait(self._batcher.submit(
                MeasureJob.for_response(job.row.prompt_ids, output_ids, job.row.steering, job.row.capture_features)))
            self.reports.put(key, report)
        return report

    # -- save / load (program.save) --------------------------------------------------------
    def dump_state(self) -> dict:
        """JSON state for `program.save`; `load_state` rebuilds (or reuses) the same engine."""
        return dump_engine_state(self)

    def _settings(self) -> dict[str, Any]:
        """The constructor arguments that are not the model, SAE or f_max (saved, derived, restored)."""
        return dict(steering=self.default_steering, capture=self.capture, reasoning_features=self.reasoning_features,
                    capture_k=self.capture_k, max_tokens=self.max_tokens, temperature=self.temperature,
                    max_batch_size=self.max_batch_size, max_wait_ms=self.max_wait_ms,
                    prefix_cache_size=self.prefix_cache.size, truncate_prompt=self.truncate_prompt, name=self.name)

    @classmethod
    def load_state(cls, state: dict) -> SteeredEngine:
        """Rebuild the saved engine. A live engine with the same fingerprint lends its model and SAE (no
        reload), but the saved settings (max_tokens, temperature, batching, ...) always apply."""
        return load_engine_state(cls, state)

    def __reduce__(self) -> tuple:
        """Pickle (`program.save(..., save_program=True)`) as how the engine was built: its sources and
        settings, rebuilt by `load_state` (a live engine with the same fingerprint is reused)."""
        missing = unrebuildable(self)
        if missing:
            raise TypeError(
                f"this SteeredEngine cannot be pickled: {missing}. Save the program's state instead "
                "(program.save('program.json')) and set the LM again after loading, or build the LM from "
                "files: SteeredLM('<model name or folder>', sae='<SAE folder>', max_activation=...)")
        return (type(self).load_state, (self.dump_state(),))

    def __repr__(self) -> str:
        sae = f", sae={self.sae.d_sae} latents @ layer {self.sae.cfg.hook_layer}" if self.sae is not None else ""
        return f"SteeredEngine({self.model_id}{sae}, steering={self.default_steering})"


def _clone_tokenizer(tokenizer: Any) -> Any:
    """A private tokenizer for the worker thread: HF fast tokenizers are not safe to share across threads."""
    try:
        return copy.deepcopy(tokenizer)
    except Exception:  # noqa: BLE001 - fall back to sharing (slow tokenizers are pure Python)
        return tokenizer


def _wait(future: Future) -> Any:
    """The future's result; a caller interrupted while waiting (Ctrl-C) withdraws its queued job."""
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise
