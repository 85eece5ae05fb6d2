"""A steerable in-process language model for DSPy: `SteeredEngine` and `SteeredLM(...)`.

DSPy 3.4's engine contract: `complete(request: dspy.lm15.Request) -> dspy.lm15.Response`, passed as
`dspy.LM("local/<name>", engine=..., async_engine=...)`. DSPy owns caching, retries, history and
`n > 1` (it calls `complete` n times); the engine owns the model. This one

- renders the chat template (the system prompt arrives in `request.system`),
- honours max_tokens, temperature, top_p and stop,
- steers with the engine's default `SteeringSpec` or a per-call `metadata={"steering": {...}}`
  (`{"steering": None}` for an unsteered baseline),
- micro-batches concurrent calls (`dspy.Evaluate(num_threads=N)`) into one batched generate,
- keeps the prefilled system prompt (per steering) across calls instead of recomputing it,
- optionally records the SAE latents of the generated tokens in the same forward and returns the
  response's reasoning activation in `Response.provider_data["reasoning_dspy"]`.

DSPy's cache key is the model string + messages + call kwargs, so the model string carries a
fingerprint of the weights, the SAE, f_max and the default steering: a different model or SAE can
never be served another's cached answers, and per-call steering is part of the kwargs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import uuid
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import BaseModel, Field
from torch import nn

from reasoning_dspy.batching import GenResult, GenRow, MicroBatcher, PrefixCache, generate_rows, model_lock
from reasoning_dspy.models import LoadedModel, model_spec
from reasoning_dspy.sae import SAE
from reasoning_dspy.steering import (
    ActivationReport,
    CaptureConfig,
    SteeringError,
    SteeringSpec,
    as_spec,
    load_max_activation,
    resolve,
)

PROVIDER_KEY = "reasoning_dspy"  # our key inside Response.provider_data
_FINGERPRINT_SAMPLE = 4096  # elements sampled per tensor for weight fingerprints


# -- fingerprints ---------------------------------------------------------------------------

def tensors_fingerprint(named: Iterator[tuple[str, torch.Tensor]] | Sequence[tuple[str, torch.Tensor]]) -> str:
    """Hash names, shapes, dtypes and an evenly strided sample of each tensor's values.

    Reading every byte of a 1B-parameter model would take seconds; a strided sample of every
    tensor changes whenever the weights are re-initialised, fine-tuned or swapped.
    """
    h = hashlib.sha256()
    for name, t in named:
        flat = t.detach().reshape(-1)
        step = max(1, flat.numel() // _FINGERPRINT_SAMPLE)
        sample = flat[::step][:_FINGERPRINT_SAMPLE].float().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()


_MODEL_FP: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_fingerprint(model: nn.Module, tokenizer: Any = None) -> str:
    """Fingerprint of a model's weights (+ tokenizer vocabulary and chat template); cached per object."""
    fp = _MODEL_FP.get(model)
    if fp is None:
        fp = _MODEL_FP[model] = tensors_fingerprint(model.state_dict().items())
    if tokenizer is not None:
        extra = f"{len(tokenizer)}|{getattr(tokenizer, 'chat_template', None)}"
        fp = hashlib.sha256((fp + extra).encode()).hexdigest()
    return fp


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("/", "--")).strip("-") or "model"


# -- configuration --------------------------------------------------------------------------

class EngineSources(BaseModel):
    """Where the engine's parts came from, so `load_state` can rebuild it in another process."""

    model: str | None = Field(None, description="model id, local folder or offline name passed to load_model")
    dtype: str | None = Field(None, description="model dtype")
    device: str = Field("cpu", description="device the model runs on")
    seed: int = Field(0, description="seed of offline random models")
    sae: str | None = Field(None, description="SAE folder (cfg.json + sae_weights.safetensors)")
    max_activation: str | None = Field(None, description="file or ReasonScore folder holding max_activation")


@dataclass
class _Pending:
    """A parsed request waiting for the worker."""

    row: GenRow
    spec: SteeringSpec | None


_LIVE: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # fingerprint -> engine (load_state)


class SteeredEngine:
    """DSPy engine running a Hugging Face causal LM in process, with SAE steering and micro-batching.

    Build it with `SteeredEngine.from_pretrained("tiny-random", sae="runs/sae")` or from objects
    (`SteeredEngine(model, tokenizer, sae=sae, max_activation=fmax)`), or use `SteeredLM(...)`, which
    returns a ready `dspy.LM`. Only the engine's worker thread ever runs the model.
    """

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
        self.spec = model_spec(model)
        self.sae_raw = sae
        self.sae = sae.unit_norm_view().to(next(model.parameters()).device).eval() if sae is not None else None
        if self.sae is not None and self.sae.d_in != self.spec.d_model:
            raise SteeringError(
                f"the SAE expects d_in={self.sae.d_in} but {self.spec.name} has d_model={self.spec.d_model}; "
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
        self.sources = sources or EngineSources(model=self.spec.name, dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
                                                device=str(next(model.parameters()).device))
        self.name = _slug(name or self.spec.name)
        if self.default_steering is not None:
            self._resolve(self.default_steering)  # fail at construction, not on the first call
        self.fingerprint = self._fingerprint()
        self._tok_lock = threading.Lock()
        self._worker_tokenizer = _clone_tokenizer(tokenizer)
        self._batcher: MicroBatcher[_Pending, GenResult] = MicroBatcher(
            self._run_batch, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, name=f"engine-{self.name}"
        )
        _LIVE[self.fingerprint] = self

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
        params = dict(sae=self.sae_raw, max_activation=self.max_activation, steering=self.default_steering,
                      capture=self.capture, reasoning_features=self.reasoning_features, capture_k=self.capture_k,
                      max_tokens=self.max_tokens, temperature=self.temperature, max_batch_size=self.max_batch_size,
                      max_wait_ms=self.max_wait_ms, prefix_cache_size=self.prefix_cache.size,
                      truncate_prompt=self.truncate_prompt, name=self.name,
                      sources=self.sources)
        if "sae" in changes and "max_activation" not in changes:
            params["max_activation"] = None
        if "sae" in changes or "max_activation" in changes:
            params["sources"] = self.sources.model_copy(update={"sae": None, "max_activation": None})
        params.update(changes)
        return SteeredEngine(self.model, self.tokenizer, **params)

    def _fingerprint(self) -> str:
        h = hashlib.sha256(model_fingerprint(self.model, self.tokenizer).encode())
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

    # -- the DSPy engine API ---------------------------------------------------------------
    def complete(self, request: Any) -> Any:
        """Generate one response for a `dspy.lm15.Request` (blocks until the batch it joined is done)."""
        pending = self._parse(request)
        result = self._batcher.submit(pending).result()
        return self._response(result, pending)

    def submit(self, request: Any):
        """Queue a request; returns a `concurrent.futures.Future` of its `Response` (used by the async engine)."""
        from concurrent.futures import Future

        pending = self._parse(request)
        inner = self._batcher.submit(pending)
        outer: Future = Future()

        def done(f: Future) -> None:
            try:
                outer.set_result(self._response(f.result(), pending))
            except BaseException as err:  # noqa: BLE001
                outer.set_exception(err)

        inner.add_done_callback(done)
        return outer

    def stream(self, request: Any) -> Iterator[Any]:
        """No token streaming: the whole response as one event sequence."""
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        """Stop the worker thread (a new engine is needed afterwards)."""
        self._batcher.close()

    def generate(self, prompts: Sequence[str], *, steering: SteeringSpec | dict | None | str = "default",
                 max_tokens: int | None = None, temperature: float | None = None, capture: bool | None = None,
                 system: str | None = None, min_tokens: int = 0) -> list[GenResult]:
        """Generate for plain user prompts without DSPy (demo, benchmarks); batched like DSPy calls.

        `min_tokens > 0` runs the prompts as one batch directly (not via the batcher) with EOS
        suppressed for that many tokens, so benchmarks compare equal amounts of decoding."""
        spec = self.default_steering if steering == "default" else as_spec(steering)
        if min_tokens:
            rows = [self._pending(self._render([{"role": "user", "content": p}], system), spec,
                                  max_tokens or self.max_tokens, self.temperature if temperature is None else
                                  temperature, 1.0, (), bool(capture)).row for p in prompts]
            with model_lock(self.model):
                return generate_rows(self.model, self._worker_tokenizer, rows, sae=self.sae, spec=self.spec,
                                     min_new_tokens=min_tokens, capture=self._capture_config(rows),
                                     prefix_cache=self.prefix_cache)
        futures = [self._batcher.submit(self._pending(
            self._render([{"role": "user", "content": p}], system), spec, max_tokens or self.max_tokens,
            self.temperature if temperature is None else temperature, 1.0, (),
            self.capture if capture is None else capture)) for p in prompts]
        return [f.result() for f in futures]

    @torch.inference_mode()
    def reasoning_activation(self, texts: Sequence[str], features: Sequence[int] | None = None
                             ) -> list[ActivationReport]:
        """Reasoning activation of finished texts (a second pass; generation reports it for free).

        For metrics scoring predictions that carry no report (e.g. from a plain `dspy.Predict`).
        """
        from reasoning_dspy.activations import residual_at
        from reasoning_dspy.steering import summarize_latents

        if self.sae is None or self.sae.cfg.hook_layer is None:
            raise SteeringError("reasoning activation needs an SAE with a hook_layer: build the engine with sae=")
        features = self.reasoning_features if features is None else tuple(features)
        cfg = CaptureConfig(self.sae, self.sae.cfg.hook_layer, k=self.capture_k)
        device = next(self.model.parameters()).device
        out = []
        for text in texts:
            with self._tok_lock:
                ids = self.tokenizer(text or " ", return_tensors="pt")["input_ids"].to(device)
            with model_lock(self.model):
                acts = residual_at(self.model, self.sae.cfg.hook_layer, ids, spec=self.spec)[0]
            special = torch.isin(ids[0], torch.tensor(sorted(set(self.tokenizer.all_special_ids)), device=device))
            latents = self.sae.encode(acts[~special].to(self.sae.W_enc.dtype))
            out.append(summarize_latents(latents, cfg, features))
        return out

    # -- request parsing (caller thread) ---------------------------------------------------
    def _parse(self, request: Any) -> _Pending:
        from dspy.clients.engines.base import validate_request
        from dspy.lm15 import InvalidRequestError, UnsupportedFeatureError

        validate_request(request)
        if request.tools:
            raise UnsupportedFeatureError(f"{self.model_id} runs in process and does not call tools")
        messages = []
        for m in request.messages:
            if m.text is None:
                raise UnsupportedFeatureError(f"{self.model_id} takes text messages only, got parts "
                                              f"{[p.type for p in m.parts]} in a {m.role} message")
            messages.append({"role": "system" if m.role == "developer" else m.role, "content": m.text})
        system = request.system
        if system is not None and not isinstance(system, str):
            system = "".join(getattr(p, "text", "") or "" for p in system)
        cfg = request.config
        meta = dict((cfg.extensions or {}).get("metadata") or {})
        try:
            spec = self.default_steering if "steering" not in meta else as_spec(meta["steering"])
        except SteeringError as err:
            raise InvalidRequestError(str(err)) from None
        capture = bool(meta.get("capture", self.capture))
        features = meta.get("reasoning_features")
        return self._pending(
            self._render(messages, system), spec,
            cfg.max_tokens or self.max_tokens,
            self.temperature if cfg.temperature is None else cfg.temperature,
            1.0 if cfg.top_p is None else cfg.top_p,
            tuple(cfg.stop or ()), capture,
            tuple(int(f) for f in features) if features is not None else None,
        )

    def _pending(self, prompt_ids: list[int], spec: SteeringSpec | None, max_tokens: int, temperature: float,
                 top_p: float, stop: tuple[str, ...], capture: bool, features: tuple[int, ...] | None = None
                 ) -> _Pending:
        from dspy.lm15 import ContextLengthError, InvalidRequestError

        if capture and self.sae is None:
            raise InvalidRequestError("capture needs an SAE: build the engine with sae=")
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit is not None and self.truncate_prompt and len(prompt_ids) + max_tokens > limit:
            max_tokens = min(max_tokens, limit // 4)
            bos = prompt_ids[:1] if prompt_ids and prompt_ids[0] == self.tokenizer.bos_token_id else []
            prompt_ids = bos + prompt_ids[len(prompt_ids) - (limit - max_tokens - len(bos)):]
        if limit is not None and len(prompt_ids) >= limit:
            raise ContextLengthError(
                f"the prompt is {len(prompt_ids)} tokens but {self.spec.name} holds {limit} positions "
                "(SteeredLM(..., truncate_prompt=True) keeps the prompt's end instead)")
        if limit is not None:
            max_tokens = min(max_tokens, limit - len(prompt_ids))
        try:
            steering = self._resolve(spec) if spec is not None else None
        except SteeringError as err:
            raise InvalidRequestError(str(err)) from None
        if features is None:
            features = self.reasoning_features or (tuple(spec.features) if spec is not None else ())
        row = GenRow(prompt_ids, max_tokens, float(temperature), float(top_p), stop, steering, capture,
                     features if capture else ())
        return _Pending(row, spec)

    def _resolve(self, spec: SteeringSpec):
        return resolve(spec, d_model=self.spec.d_model, n_layers=self.spec.n_layers, sae=self.sae,
                       max_activation=self.max_activation)

    def _render(self, messages: list[dict], system: str | None) -> list[int]:
        msgs = ([{"role": "system", "content": system}] if system else []) + messages
        with self._tok_lock:
            tok = self.tokenizer
            if getattr(tok, "chat_template", None):
                text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            else:
                text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in msgs) + "Assistant:"
            bos = tok.bos_token
            return tok(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"]

    # -- the worker ------------------------------------------------------------------------
    def _run_batch(self, items: list[_Pending]) -> list[GenResult]:
        rows = [it.row for it in items]
        with model_lock(self.model):
            return generate_rows(self.model, self._worker_tokenizer, rows, sae=self.sae,
                                 capture=self._capture_config(rows), spec=self.spec, prefix_cache=self.prefix_cache)

    def _capture_config(self, rows: list[GenRow]) -> CaptureConfig | None:
        if self.sae is None or not any(r.capture for r in rows):
            return None
        layer = self.sae.cfg.hook_layer if self.sae.cfg.hook_layer is not None else self._capture_layer()
        return CaptureConfig(self.sae, layer, k=self.capture_k)

    def _capture_layer(self) -> int:
        spec = self.default_steering
        if spec is not None and spec.layer is not None:
            return spec.layer
        raise SteeringError("the SAE records no hook_layer: set SAEConfig.hook_layer so activations are read at its layer")

    def _response(self, result: GenResult, pending: _Pending) -> Any:
        from dspy.lm15 import Message, Response, TextPart, Usage

        data = {
            "steering": pending.spec.model_dump(mode="json") if pending.spec is not None else None,
            "activation": result.report.to_dict() if result.report is not None else None,
        }
        return Response(
            id=f"rdspy-{uuid.uuid4().hex[:16]}", model=self.model_id,
            message=Message.assistant((TextPart(result.text),)), finish_reason=result.finish_reason,
            usage=Usage(input_tokens=result.prompt_tokens, output_tokens=len(result.token_ids)),
            provider_data={PROVIDER_KEY: data},
        )

    # -- save / load (program.save) --------------------------------------------------------
    def dump_state(self) -> dict:
        """JSON state for `program.save`; `load_state` rebuilds (or reuses) the same engine."""
        state = {
            "fingerprint": self.fingerprint, "name": self.name, "sources": self.sources.model_dump(),
            "steering": self.default_steering.model_dump(mode="json") if self.default_steering else None,
            "capture": self.capture, "reasoning_features": list(self.reasoning_features),
            "capture_k": self.capture_k, "max_tokens": self.max_tokens, "temperature": self.temperature,
            "max_batch_size": self.max_batch_size, "max_wait_ms": self.max_wait_ms,
            "prefix_cache_size": self.prefix_cache.size,
            "truncate_prompt": self.truncate_prompt,
        }
        if self.max_activation is not None and self.sources.max_activation is None:
            state["max_activation_values"] = self.max_activation.tolist()
        return state

    @classmethod
    def load_state(cls, state: dict) -> SteeredEngine:
        live = _LIVE.get(state.get("fingerprint", ""))
        if live is not None:
            return live
        sources = EngineSources.model_validate(state.get("sources") or {})
        if sources.model is None:
            raise ValueError("this saved engine records no model source; pass the LM again after loading")
        needs_sae = state.get("capture") or state.get("steering", {}) and state["steering"].get("features")
        if needs_sae and sources.sae is None:
            raise ValueError(
                "the saved engine used an SAE that was passed in memory, so it cannot be reloaded here: "
                "save it with reasoning_dspy.save_sae(sae, folder) and build the LM with SteeredLM(..., sae=folder)"
            )
        engine = cls.from_pretrained(
            sources.model, dtype=sources.dtype, device=sources.device, seed=sources.seed, sae=sources.sae,
            max_activation=sources.max_activation or state.get("max_activation_values"),
            steering=state.get("steering"), capture=state.get("capture", False),
            reasoning_features=state.get("reasoning_features", ()), capture_k=state.get("capture_k", 10),
            max_tokens=state.get("max_tokens", 256), temperature=state.get("temperature", 0.0),
            max_batch_size=state.get("max_batch_size", 16), max_wait_ms=state.get("max_wait_ms", 5.0),
            prefix_cache_size=state.get("prefix_cache_size", 4),
            truncate_prompt=state.get("truncate_prompt", False), name=state.get("name"),
        )
        if state.get("fingerprint") and engine.fingerprint != state["fingerprint"]:
            raise ValueError(
                f"the saved program was built with engine {state.get('name')}-{state['fingerprint']}, but "
                f"reloading {sources.model!r} gives {engine.model_id}: the weights, SAE or f_max changed"
            )
        return engine

    def __repr__(self) -> str:
        sae = f", sae={self.sae.d_sae} latents @ layer {self.sae.cfg.hook_layer}" if self.sae is not None else ""
        return f"SteeredEngine({self.model_id}{sae}, steering={self.default_steering})"


class AsyncSteeredEngine:
    """The async face of a `SteeredEngine` (`await lm.acall(...)`, `dspy.asyncify`): same worker, same batches."""

    def __init__(self, engine: SteeredEngine):
        self.engine = engine

    async def complete(self, request: Any) -> Any:
        import asyncio

        return await asyncio.wrap_future(self.engine.submit(request))

    async def stream(self, request: Any):
        from dspy.lm15 import response_to_events

        for event in response_to_events(await self.complete(request)):
            yield event

    async def aclose(self) -> None:
        pass

    def dump_state(self) -> dict:
        return self.engine.dump_state()

    @classmethod
    def load_state(cls, state: dict) -> AsyncSteeredEngine:
        return cls(SteeredEngine.load_state(state))


def _clone_tokenizer(tokenizer: Any) -> Any:
    """A private tokenizer for the worker thread: HF fast tokenizers are not safe to share across threads."""
    try:
        return copy.deepcopy(tokenizer)
    except Exception:  # noqa: BLE001 - fall back to sharing (slow tokenizers are pure Python)
        return tokenizer


# -- the dspy.LM ----------------------------------------------------------------------------

def SteeredLM(  # noqa: N802 - a factory that reads like the class it returns
    model: str | LoadedModel | nn.Module | tuple = "tiny-random",
    tokenizer: Any = None,
    *,
    sae: str | SAE | None = None,
    max_activation: Any = None,
    steering: SteeringSpec | dict | None = None,
    capture: bool = False,
    reasoning_features: Sequence[int] = (),
    dtype: str | None = None,
    device: str = "cpu",
    seed: int = 0,
    max_tokens: int = 256,
    temperature: float = 0.0,
    cache: bool = True,
    max_batch_size: int = 16,
    max_wait_ms: float = 5.0,
    prefix_cache_size: int = 4,
    truncate_prompt: bool = False,
    name: str | None = None,
    **lm_kwargs: Any,
):
    """A ready `dspy.LM` backed by a `SteeredEngine`.

    `model` is a name/path for `load_model`, a `LoadedModel`, a `(model, tokenizer)` pair, or a
    model with `tokenizer=`. `sae` is an SAE or its folder; `max_activation` its per-feature f_max
    (a `[d_sae]` tensor, a ReasonScore result or folder). `steering` is the default spec;
    per call, pass `config={"metadata": {"steering": {...}}}` to a DSPy module (or `None` to switch
    it off). Greedy (`temperature=0`) by default, so answers are reproducible. `truncate_prompt=True`
    keeps the end of prompts longer than the model's context (optimizers' long meta-prompts on small
    models) instead of raising `ContextLengthError`. `prefix_cache_size` prefilled prompt prefixes
    (the system prompt, per steering) are kept and reused by later calls; 0 turns that off.
    """
    import dspy

    common = dict(steering=steering, capture=capture, reasoning_features=reasoning_features, max_tokens=max_tokens,
                  temperature=temperature, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                  prefix_cache_size=prefix_cache_size,
                  truncate_prompt=truncate_prompt, name=name)
    if isinstance(model, SteeredEngine):
        engine = model
    elif isinstance(model, str):
        engine = SteeredEngine.from_pretrained(model, dtype=dtype, device=device, seed=seed, sae=sae,
                                               max_activation=max_activation, **common)
    else:
        if isinstance(model, LoadedModel):
            model, tokenizer = model.model, model.tokenizer
        elif isinstance(model, tuple):
            model, tokenizer = model
        if tokenizer is None:
            raise TypeError("pass the tokenizer too: SteeredLM(model, tokenizer, ...) or SteeredLM(load_model(...))")
        if isinstance(sae, str) or hasattr(sae, "__fspath__"):
            from reasoning_dspy.sae import load_sae

            sae_path, sae = str(sae), load_sae(sae, device=str(next(model.parameters()).device))
        else:
            sae_path = None
        sources = EngineSources(model=model_spec(model).name,
                                dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
                                device=str(next(model.parameters()).device), seed=seed, sae=sae_path,
                                max_activation=str(max_activation) if isinstance(max_activation, str) else None)
        engine = SteeredEngine(model, tokenizer, sae=sae, max_activation=max_activation, sources=sources, **common)
    return dspy.LM(f"local/{engine.model_id}", engine=engine, async_engine=AsyncSteeredEngine(engine),
                   max_tokens=engine.max_tokens, temperature=engine.temperature, cache=cache,
                   num_retries=0, **lm_kwargs)


def engine_of(lm: Any) -> SteeredEngine:
    """The `SteeredEngine` behind a `dspy.LM`, with a clear error for any other LM."""
    engine = getattr(lm, "engine", None)
    if isinstance(engine, AsyncSteeredEngine):
        engine = engine.engine
    if not isinstance(engine, SteeredEngine):
        raise TypeError(
            f"expected a SteeredLM (a dspy.LM with a SteeredEngine), got {type(lm).__name__} "
            f"{getattr(lm, 'model', '')!r}; build one with reasoning_dspy.SteeredLM(...)"
        )
    return engine


# -- reading the reports back inside DSPy programs ------------------------------------------

class _Collector:
    """Stands in DSPy's `caller_modules` so every LM call made inside records its history entry here."""

    def __init__(self) -> None:
        self.history: list[dict] = []


@dataclass
class CallReport:
    """What the engine reported for one LM call: the steering applied and the reasoning activation."""

    steering: SteeringSpec | None
    activation: ActivationReport | None
    text: str | None


class ReportCollector:
    def __init__(self, collector: _Collector):
        self._collector = collector

    def reports(self) -> list[CallReport]:
        """Reports of the calls made so far (cache hits included), in call order."""
        from dspy.lm15 import Response

        out: list[CallReport] = []
        for entry in self._collector.history:
            responses = entry.get("response")
            responses = responses if isinstance(responses, (list, tuple)) else [responses]
            for r in responses:
                if not isinstance(r, Response):
                    continue
                data = (r.provider_data or {}).get(PROVIDER_KEY) or {}
                spec = data.get("steering")
                act = data.get("activation")
                out.append(CallReport(SteeringSpec.model_validate(spec) if spec else None,
                                      ActivationReport.from_dict(act) if act else None, r.text))
        return out


@contextmanager
def collect_reports() -> Iterator[ReportCollector]:
    """Collect the engine reports of every LM call made inside the block, on this thread only.

    Uses DSPy's own history plumbing (`settings.caller_modules`), so cached answers report too.
    """
    import dspy

    collector = _Collector()
    callers = [*(dspy.settings.caller_modules or []), collector]
    with dspy.settings.context(caller_modules=callers):
        yield ReportCollector(collector)
