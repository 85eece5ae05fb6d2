"""From a DSPy request to a `GenerateJob`: which settings are honoured, refused by name, and how
metadata steering resolves against the engine's model and SAE."""

from __future__ import annotations

import dataclasses
from typing import Any

from reasoning_dspy.engine.generate import GenRow
from reasoning_dspy.engine.jobs import (
    GenerateJob,
)
from reasoning_dspy.engine.requests import render_chat, request_messages
from reasoning_dspy.steering import SteeringError, SteeringSpec, as_spec, resolve

#: The request settings the engine honours; any other one set on a request is refused by name.
HONOURED = ("max_tokens", "temperature", "top_p", "stop", "seed", "logprobs", "extensions")
#: What a call's `metadata` may hold.
METADATA_KEYS = ("steering", "capture", "reasoning_features")


class RequestParsing:
    """`SteeredEngine`'s request parsing, on the caller's thread: a DSPy request or call's metadata
    checked and turned into a `GenerateJob` (prompt ids, resolved steering, limits)."""

    def call_steering(self, metadata: dict | None) -> tuple[SteeringSpec | None, tuple[int, ...] | None]:
        """The steering and reasoning features a call's `metadata` asks for: `(spec, features)`.

        No `"steering"` key means the engine's default steering (`None` switches it off); no
        `"reasoning_features"` means None, i.e. the engine's own. Bad steering raises `SteeringError`.
        """
        meta = metadata or {}
        spec = self.default_steering if "steering" not in meta else as_spec(meta["steering"])
        features = meta.get("reasoning_features")
        return spec, tuple(int(f) for f in features) if features is not None else None

    def _parse(self, request: Any) -> GenerateJob:
        from dspy.lm15 import InvalidRequestError

        messages, system = request_messages(request, self.model_id)
        cfg = request.config
        _refuse_unsupported(cfg, self.model_id)
        meta = dict((cfg.extensions or {}).get("metadata") or {})
        try:
            spec, features = self.call_steering(meta)
        except SteeringError as err:
            raise InvalidRequestError(str(err)) from None
        return self._job(
            self._render(messages, system), spec,
            cfg.max_tokens or self.max_tokens,
            self.temperature if cfg.temperature is None else cfg.temperature,
            1.0 if cfg.top_p is None else cfg.top_p,
            tuple(cfg.stop or ()), bool(meta.get("capture", self.capture)), features,
            seed=cfg.seed, logprobs=cfg.logprobs,
        )

    def _job(self, prompt_ids: list[int], spec: SteeringSpec | None, max_tokens: int, temperature: float,
             top_p: float, stop: tuple[str, ...], capture: bool, features: tuple[int, ...] | None = None,
             *, seed: int | None = None, logprobs: int | None = None) -> GenerateJob:
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
                f"the prompt is {len(prompt_ids)} tokens but {self.model_spec.name} holds {limit} positions "
                "(SteeredLM(..., truncate_prompt=True) keeps the prompt's end instead)")
        if limit is not None:
            max_tokens = min(max_tokens, limit - len(prompt_ids))
        try:
            steering = self._resolve(spec) if spec is not None else None
        except SteeringError as err:
            raise InvalidRequestError(str(err)) from None
        if features is None:
            features = self.reasoning_features or (tuple(spec.features) if spec is not None else ())
        _check_seed_and_logprobs(seed, logprobs, len(self.tokenizer))
        row = GenRow(prompt_ids, max_tokens, float(temperature), float(top_p), stop, steering, capture,
                     features if capture else (), seed=seed, logprobs=logprobs)
        return GenerateJob(row, spec)

    def _resolve(self, spec: SteeringSpec):
        return resolve(spec, d_model=self.model_spec.d_model, n_layers=self.model_spec.n_layers, sae=self.sae,
                       max_activation=self.max_activation)

    def _render(self, messages: list[dict], system: str | None) -> list[int]:
        with self._tok_lock:
            return render_chat(self.tokenizer, messages, system)


def _refuse_unsupported(cfg: Any, model_id: str) -> None:
    """Refuse, by name, every request setting the engine would otherwise ignore."""
    from dspy.lm15 import UnsupportedFeatureError

    asked = [f"{f.name}={getattr(cfg, f.name)!r}" for f in dataclasses.fields(cfg)
             if f.name not in HONOURED and getattr(cfg, f.name) not in (None, ())]
    extensions = cfg.extensions or {}
    asked += [f"{key}={extensions[key]!r}" for key in sorted(extensions) if key != "metadata"]
    asked += [f"metadata key {key!r}" for key in sorted(extensions.get("metadata") or {}) if key not in METADATA_KEYS]
    if asked:
        raise UnsupportedFeatureError(
            f"{model_id} does not support {', '.join(asked)}: it honours max_tokens, temperature, top_p, stop, "
            f"seed, logprobs (and top_logprobs), and metadata keys {', '.join(METADATA_KEYS)}; drop the others")


def _check_seed_and_logprobs(seed: int | None, logprobs: int | None, vocab: int) -> None:
    from dspy.lm15 import InvalidRequestError

    if seed is not None and not 0 <= seed < 2**64:
        raise InvalidRequestError(f"seed must be an integer in [0, 2**64), got {seed}")
    if logprobs is not None and not 0 <= logprobs <= vocab:
        raise InvalidRequestError(f"top_logprobs must be between 0 and the vocabulary size {vocab}, got {logprobs}")
