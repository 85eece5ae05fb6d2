"""The bodies of `/v1/chat/completions` and `/v1/completions`: plan the rows, queue them, answer as
JSON or as an SSE stream, and remember the completion for `/v1/explain`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from reasoning_dspy.serve import openai_format as fmt
from reasoning_dspy.serve.bridge import EngineBridge
from reasoning_dspy.serve.errors import APIError, bad_request
from reasoning_dspy.serve.generation import ClientDisconnected, Rows, make_jobs, plan
from reasoning_dspy.serve.state import ServerState
from reasoning_dspy.serve.store import CompletionRecord

STATUS_CLIENT_CLOSED = 499  # nginx's "client closed request": logged, never seen by a client


async def generate_response(request: Request, state: ServerState, req: Any, prompts: list[list[int]], spec: Any,
                            echo: dict, *, chat: bool) -> Response:
    """Run a checked request's rows (n per prompt) and answer; 4xx/503 are raised before anything is sent."""
    bridge, served = state.bridge, state.served
    params = plan(state.config, req, prompts, served.context_length)
    jobs = make_jobs(bridge, prompts, spec, params)
    rows = Rows(bridge, state.admission, state.metrics, jobs, params, state.config.retry_after_s, stream=req.stream)
    cid = fmt.new_id("chatcmpl" if chat else "cmpl")
    prompt_tokens = sum(len(p) for p in prompts)
    request.scope["state"]["log"].update(model=served.name, completion_id=cid, rows=len(jobs),
                                         prompt_tokens=prompt_tokens, stream=req.stream,
                                         steering=echo.get("applied"))

    def remember(results: list) -> None:
        state.store.put(CompletionRecord(cid, [j.row.prompt_ids for j in jobs], [r.token_ids for r in results],
                                         [r.text for r in results], spec, echo))
        request.scope["state"]["log"]["completion_tokens"] = sum(len(r.token_ids) for r in results)

    if req.stream:
        return StreamingResponse(_stream(state, rows, cid, prompt_tokens, echo, req.include_usage(), chat, remember),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    try:
        results = await rows.results(request)
    except ClientDisconnected:
        request.scope["state"]["log"]["disconnected"] = True
        return Response(status_code=STATUS_CLIENT_CLOSED)
    remember(results)
    build = fmt.chat_completion if chat else fmt.text_completion
    return fmt.FiniteJSONResponse(build(cid, served.name, bridge.fingerprint, results, prompt_tokens, echo))


async def _stream(state: ServerState, rows: Rows, cid: str, prompt_tokens: int, echo: dict, include_usage: bool,
                  chat: bool, remember) -> AsyncIterator[bytes]:
    """SSE events: the first at once, then each row's text as the engine decodes it, then its finish."""
    name, fp, created = state.served.name, state.bridge.fingerprint, int(time.time())
    n = len(rows.jobs)

    def chunk(i: int, piece: str, finish: str | None = None, **extras: Any) -> bytes:
        return fmt.sse(fmt.chat_chunk(cid, created, name, fp, i, {"content": piece} if piece or not finish else {},
                                      finish, **extras) if chat
                       else fmt.text_chunk(cid, created, name, fp, i, piece, finish, **extras))

    if chat:
        for i in range(n):
            yield fmt.sse(fmt.chat_chunk(cid, created, name, fp, i, {"role": "assistant", "content": ""},
                                         **({"steering": echo} if i == 0 else {})))
    texts = [fmt.StreamedText(state.bridge.decode, job.row.stop) for job in rows.jobs]
    finished = asyncio.ensure_future(rows.results())
    try:
        while True:
            arrived = asyncio.ensure_future(rows.tokens.get())
            await asyncio.wait({arrived, finished}, return_when=asyncio.FIRST_COMPLETED)
            if not arrived.done():
                arrived.cancel()
                break
            batch = [arrived.result()]
            while not rows.tokens.empty():
                batch.append(rows.tokens.get_nowait())
            for i in dict.fromkeys(i for i, _ in batch):
                texts[i].extend(t for j, t in batch if j == i)
                piece = texts[i].ready()
                if piece:
                    yield chunk(i, piece)
        results = finished.result()
    except Exception as err:  # noqa: BLE001 - the status line is sent: report the error as an event
        if not isinstance(err, APIError):
            state.logger.exception("generation failed", extra={"fields": {"completion_id": cid}})
            err = APIError(500, f"generation failed: {type(err).__name__}: {err}", code="internal_error",
                           type="server_error")
        yield fmt.sse(err.body())
        yield fmt.sse("[DONE]")
        return
    finally:
        finished.cancel()  # the client went away: Starlette cancelled this generator; the rows stop
    remember(results)
    for i, (result, text) in enumerate(zip(results, texts, strict=True)):
        rest = text.rest(result.text)
        if rest:
            yield chunk(i, rest)
        extras = fmt.choice_extras(result)
        if not chat and i == 0:
            extras["steering"] = echo
        yield chunk(i, "", result.finish_reason, **extras)
    if include_usage:
        yield fmt.sse(fmt.usage_chunk(cid, created, name, fp, "chat.completion.chunk" if chat else "text_completion",
                                      prompt_tokens, sum(len(r.token_ids) for r in results)))
    yield fmt.sse("[DONE]")


def completion_prompts(bridge: EngineBridge, prompt: Any, vocab: int) -> list[list[int]]:
    """`prompt` as token ids: a string, a list of strings, a list of ids, or a list of id lists."""
    if isinstance(prompt, str) or (prompt and all(isinstance(p, str) for p in prompt)):
        texts = [prompt] if isinstance(prompt, str) else prompt
        prompts = []
        for i, text in enumerate(texts):
            ids = bridge.text_prompt(text) if text else []
            if not ids:
                which = f"prompt[{i}]" if len(texts) > 1 else "the prompt"
                raise bad_request(f"{which} is empty ({text!r} gives no tokens); give some text to complete",
                                  code="invalid_prompt", param="prompt")
            prompts.append(ids)
        return prompts
    lists = [prompt] if prompt and all(isinstance(t, int) for t in prompt) else list(prompt)
    for ids in lists:
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise bad_request(f"token ids {bad[:5]} are outside the vocabulary (0..{vocab - 1})", code="invalid_prompt",
                              param="prompt")
        if not ids:
            raise bad_request("a prompt of token ids is empty", code="invalid_prompt", param="prompt")
    return [list(ids) for ids in lists]
