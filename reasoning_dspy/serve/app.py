"""The FastAPI application: OpenAI-compatible routes, `/v1/explain`, `/health` and `/metrics`.

`create_app(config)` loads the model (`catalog.py`), builds a `SteeredEngine` on it and wires the
routes; `run.py` serves it with uvicorn. Each route parses and checks its request (`schemas.py`,
`steering_field.py`, `generation.plan`), then queues its rows on the engine (`generation.Rows`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

try:
    from fastapi import FastAPI
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(f"reasoning-dspy serve needs fastapi and uvicorn ({err}): pip install fastapi uvicorn, "
                      "or reinstall reasoning-dspy") from None
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from reasoning_dspy.serve.admission import Admission
from reasoning_dspy.serve.bridge import EngineBridge, build_engine
from reasoning_dspy.serve.catalog import ServedModel, load_served_model
from reasoning_dspy.serve.completions import completion_prompts, generate_response
from reasoning_dspy.serve.config import ServeConfig
from reasoning_dspy.serve.errors import APIError, body_too_large, route_error
from reasoning_dspy.serve.explain import explain_request
from reasoning_dspy.serve.generation import check_text_size, token_chars, token_limit
from reasoning_dspy.serve.logs import LOGGER, log_event
from reasoning_dspy.serve.metrics import Metrics
from reasoning_dspy.serve.middleware import BodyTooLargeError, ObserveMiddleware
from reasoning_dspy.serve.openai_format import FiniteJSONResponse
from reasoning_dspy.serve.schemas import ChatCompletionRequest, CompletionRequest, ExplainRequest, parse_body
from reasoning_dspy.serve.state import ServerState
from reasoning_dspy.serve.steering_field import parse_steering
from reasoning_dspy.serve.store import CompletionStore


def create_app(config: ServeConfig | None = None, served: ServedModel | None = None) -> FastAPI:
    """The server for `config` (a `ServedModel` may be passed to reuse one already loaded)."""
    config = config or ServeConfig()
    served = served or load_served_model(config.model, config.sae, config.scores, name=config.name,
                                         dtype=config.dtype, device=config.device, seed=config.seed,
                                         reasoning_features=config.reasoning_features)
    bridge = EngineBridge(build_engine(served, max_batch_size=config.max_batch_size, max_wait_ms=config.max_wait_ms,
                                       max_tokens=config.default_max_tokens))
    state = ServerState(config, served, bridge, Admission(config.max_queue), Metrics(),
                        CompletionStore(config.completion_store), config.resolved_api_key(), logging.getLogger(LOGGER),
                        token_limit(config, served.context_length), token_chars(served.loaded.tokenizer))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        log_event(state.logger, "serving", model=served.name, engine=bridge.model_id, sae=served.sae_name,
                  host=config.host, port=config.port, api_key_required=state.api_key is not None)
        if (warning := config.exposure_warning()) is not None:
            log_event(state.logger, warning, logging.WARNING, host=config.host)
        yield
        bridge.close()
        log_event(state.logger, "stopped", model=served.name)

    app = FastAPI(title="reasoning-dspy serve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serve = state
    app.add_middleware(ObserveMiddleware, state=state)

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, err: APIError) -> Response:
        return err.response()

    @app.exception_handler(BodyTooLargeError)
    async def _too_large(_request: Request, _err: BodyTooLargeError) -> Response:
        return body_too_large(config.max_body_bytes).response()

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, err: HTTPException) -> Response:
        return route_error(request.method, request.url.path, err.status_code, err.detail, err.headers).response()

    _routes(app, state)
    return app


def _routes(app: FastAPI, state: ServerState) -> None:
    config, served, bridge = state.config, state.served, state.bridge

    @app.get("/health")
    async def health(request: Request) -> dict:
        """Open to all; with an API key set, what names files (model, SAE and scores paths, settings)
        is shown only to a client that sends the key."""
        report = {"status": "ok", **state.gauges(), "api_key_required": state.api_key is not None}
        if state.api_key is not None and not state.authorized(request):
            return report
        return {**report, "model": served.name, "engine": bridge.model_id, "sae": served.sae_name,
                "config": config.public()}

    @app.get("/metrics")
    async def metrics() -> Response:
        text = state.metrics.render(batches=bridge.batch_stats(), **state.gauges())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    def model_card() -> dict:
        return {"id": served.name, "object": "model", "created": 0, "owned_by": "reasoning-dspy",
                "engine": bridge.model_id, "sae": served.sae_name, "d_sae": served.d_sae,
                "context_length": served.context_length, "steering_ranking": served.ranking_source,
                "reasoning_features": served.reasoning_features}

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        state.authorize(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> dict:
        state.authorize(request)
        state.check_model(model_id)
        return model_card()

    async def generation_request(request: Request, schema: type) -> tuple[Any, Any, Any]:
        """The checks both generation endpoints make, in order: key, body, model, options, steering."""
        state.authorize(request)
        req = parse_body(await request.body(), schema)
        state.check_model(req.model)
        req.check_supported()
        spec, echo = parse_steering(req.steering, served)
        return req, spec, echo

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        req, spec, echo = await generation_request(request, ChatCompletionRequest)
        chat = req.chat()
        check_text_size(["".join(m["content"] for m in chat)], state.prompt_tokens, state.token_chars, "messages")
        prompt = await asyncio.to_thread(bridge.chat_prompt, chat)
        return await generate_response(request, state, req, [prompt], spec, echo, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        req, spec, echo = await generation_request(request, CompletionRequest)
        texts = [req.prompt] if isinstance(req.prompt, str) else [p for p in req.prompt if isinstance(p, str)]
        check_text_size(texts, state.prompt_tokens, state.token_chars, "prompt")
        prompts = await asyncio.to_thread(completion_prompts, bridge, req.prompt, len(served.loaded.tokenizer))
        return await generate_response(request, state, req, prompts, spec, echo, chat=False)

    @app.post("/v1/explain")
    async def explain_route(request: Request) -> Response:
        state.authorize(request)
        req = parse_body(await request.body(), ExplainRequest)
        if req.model is not None:
            state.check_model(req.model)
        return FiniteJSONResponse(await explain_request(state, req))


