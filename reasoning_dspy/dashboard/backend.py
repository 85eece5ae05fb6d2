"""Where the dashboard's answers and per-token activations come from: the in-process micro-batched
engine (`EngineBackend`) or a running `reasoning-dspy serve` (`ServerBackend`).

Both answer the same three questions: generate answers (each with its own steering, concurrent
calls batched by the engine), explain an answer (`/v1/explain`'s JSON: per-token top features,
reasoning activation, evidence tokens), and give the activation of chosen features on every token.

In process, generation goes through `SteeredEngine.generate` (the engine's worker, shared by every
browser tab) and explanations through `serve.explain` on the same engine, one teacher-forced
forward each, exactly as the server computes them. Through a server, the same calls are HTTP
requests; the prompt's tokens are then read on their own after BOS (the server explains texts that
way) and the answer's in its prompt's context.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from reasoning_dspy.dashboard.workspace import DashboardError, Workspace
from reasoning_dspy.steering import SteeringSpec

_EXPLAIN_EVIDENCE_CAP = 200  # the server's largest n_evidence


@dataclass
class Answer:
    """One generated answer and what the engine measured while generating it."""

    prompt: str
    text: str
    n_tokens: int
    finish_reason: str
    reasoning_activation: float | None  # mean activation of the reasoning features over the answer
    perturbation_ratio: float | None  # mean ‖δ‖/‖x‖ of the steering; None when unsteered
    steering: SteeringSpec | None = None
    prompt_ids: list[int] | None = None  # in process: the rendered chat prompt
    token_ids: list[int] | None = None  # in process: the answer's tokens
    completion_id: str | None = None  # through a server: the id /v1/explain takes


@dataclass
class TokenValues:
    """The chosen features' activation on each shown token."""

    pieces: list[str]  # token texts, prompt first, then the answer
    answer_start: int  # index of the answer's first token in `pieces`
    features: list[int]
    values: np.ndarray  # [len(pieces), len(features)] float32


class Backend(Protocol):
    kind: str

    def generate(self, jobs: list[tuple[str, SteeringSpec | None]], max_tokens: int) -> list[Answer]: ...

    def explain(self, answer: Answer, features: list[int], *, top_k: int = 5, n_evidence: int = 10) -> dict: ...

    def token_values(self, answer: Answer, features: list[int]) -> TokenValues: ...

    def close(self) -> None: ...


class EngineBackend:
    """The in-process `SteeredEngine` (micro-batched; concurrent tabs share its batches)."""

    kind = "in-process engine"

    def __init__(self, ws: Workspace, *, max_tokens: int = 64, max_batch_size: int = 16, max_wait_ms: float = 5.0):
        from reasoning_dspy.serve.bridge import EngineBridge, build_engine

        self.ws = ws
        self.engine = build_engine(ws.served, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                                   max_tokens=max_tokens)
        self.bridge = EngineBridge(self.engine)
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="dashboard-generate")

    def generate(self, jobs: list[tuple[str, SteeringSpec | None]], max_tokens: int) -> list[Answer]:
        """Answers to `(prompt, steering)` pairs, submitted together so the engine batches them."""
        def one(job: tuple[str, SteeringSpec | None]) -> Answer:
            prompt, spec = job
            result = self.engine.generate([prompt], steering=spec, max_tokens=max_tokens, capture=True)[0]
            prompt_ids = self.bridge.chat_prompt([{"role": "user", "content": prompt}])  # as generate rendered it
            report, moved = result.report, result.perturbation
            return Answer(prompt, result.text, len(result.token_ids), result.finish_reason,
                          report.features_mean if report is not None else None,
                          moved.ratio if moved is not None else None, spec, prompt_ids, list(result.token_ids))

        return list(self._pool.map(one, jobs))

    def explain(self, answer: Answer, features: list[int], *, top_k: int = 5, n_evidence: int = 10) -> dict:
        """`/v1/explain` of the answer in its prompt's context, with the steering that generated it."""
        from reasoning_dspy.serve.explain import explain

        ids = list(answer.prompt_ids) + list(answer.token_ids)
        return explain(self.ws.served, self.bridge, ids, len(answer.prompt_ids), spec=answer.steering,
                       features=features, top_k=top_k, n_evidence=n_evidence)

    def token_values(self, answer: Answer, features: list[int]) -> TokenValues:
        """Every token of the chat (template included, BOS left out) and of the answer, read at its own
        position in one forward, as `/v1/explain` reads tokens."""
        from reasoning_dspy.serve.explain import token_latents

        ids = list(answer.prompt_ids) + list(answer.token_ids)
        special = self.bridge.special_ids
        start = next((i for i, t in enumerate(ids) if t not in special), len(ids))
        latents = token_latents(self.bridge, ids, start, answer.steering)  # [T, d_sae]
        values = latents[:, features].numpy().astype(np.float32) if features else np.zeros((len(latents), 0), np.float32)
        pieces = self.ws.pieces  # leading spaces kept, also for SentencePiece tokenizers
        shown = [pieces[i] if i < len(pieces) else self.bridge.pieces([i])[0] for i in ids[start:]]
        return TokenValues(shown, len(answer.prompt_ids) - start, list(features), values)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.engine.close()


class ServerBackend:
    """A running `reasoning-dspy serve`: chat completions with `steering`, and `/v1/explain`."""

    kind = "server"

    def __init__(self, url: str, ws: Workspace, *, api_key: str | None = None, timeout_s: float = 600.0):
        import httpx

        self.url, self.ws = url.rstrip("/"), ws
        key = api_key or os.environ.get("REASONING_DSPY_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="dashboard-http")
        card = self._card()
        self.model = card["id"]
        if card.get("d_sae") != ws.d_sae:
            raise DashboardError(f"the server at {self.url} serves {self.model} with an SAE of {card.get('d_sae')} "
                                 f"features, but the dashboard loaded {ws.served.sae_name!r} with {ws.d_sae}: start "
                                 "both with the same model and SAE")
        self.kind = f"server {self.url}"

    def _card(self) -> dict:
        import httpx

        try:
            models = self._get("/v1/models")["data"]
        except httpx.HTTPError as err:
            raise DashboardError(f"cannot reach the server at {self.url}: {err}; start it with "
                                 "`reasoning-dspy serve` or leave out --server") from None
        return models[0]

    def _get(self, path: str) -> dict:
        reply = self.client.get(path)
        return self._json(reply)

    def _post(self, path: str, body: dict) -> dict:
        import httpx

        try:
            reply = self.client.post(path, json=body)
        except httpx.HTTPError as err:
            raise DashboardError(f"the server at {self.url} did not answer: {err}") from None
        return self._json(reply)

    def _json(self, reply: Any) -> dict:
        if reply.status_code >= 400:
            try:
                message = reply.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = reply.text[:300]
            raise DashboardError(f"the server refused the request ({reply.status_code}): {message}")
        return reply.json()

    def generate(self, jobs: list[tuple[str, SteeringSpec | None]], max_tokens: int) -> list[Answer]:
        def one(job: tuple[str, SteeringSpec | None]) -> Answer:
            prompt, spec = job
            body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                    "temperature": 0, "steering": spec.model_dump(mode="json") if spec is not None else None}
            data = self._post("/v1/chat/completions", body)
            choice = data["choices"][0]
            extra = choice.get("reasoning_dspy") or {}
            moved = extra.get("perturbation") or {}
            return Answer(prompt, choice["message"]["content"] or "", int(extra.get("completion_tokens") or 0),
                          choice.get("finish_reason") or "", extra.get("reasoning_activation"), moved.get("ratio"),
                          spec, completion_id=data["id"])

        return list(self._pool.map(one, jobs))

    def explain(self, answer: Answer, features: list[int], *, top_k: int = 5, n_evidence: int = 10) -> dict:
        return self._post("/v1/explain", {"completion_id": answer.completion_id, "features": list(features),
                                          "top_k": top_k, "n_evidence": n_evidence})

    def token_values(self, answer: Answer, features: list[int]) -> TokenValues:
        prompt_part = self._values({"text": answer.prompt}, features)
        answer_part = self._values({"completion_id": answer.completion_id}, features)
        pieces = prompt_part[0] + answer_part[0]
        values = np.concatenate([prompt_part[1], answer_part[1]]) if pieces else np.zeros((0, len(features)), np.float32)
        return TokenValues(pieces, len(prompt_part[0]), list(features), values)

    def _values(self, source: dict, features: list[int]) -> tuple[list[str], np.ndarray]:
        """Tokens and the features' activation on each, from /v1/explain's evidence (every token where a
        feature fired, when they fit in one answer; else one request per feature)."""
        if not features:
            why = self._post("/v1/explain", {**source, "top_k": 1, "n_evidence": 0})
            return [t["token"] for t in why["tokens"]], np.zeros((len(why["tokens"]), 0), np.float32)
        why = self._post("/v1/explain", {**source, "features": list(features), "top_k": 1,
                                         "n_evidence": _EXPLAIN_EVIDENCE_CAP})
        pieces = [t["token"] for t in why["tokens"]]
        values = np.zeros((len(pieces), len(features)), np.float32)
        col = {f: j for j, f in enumerate(features)}
        if len(why["evidence"]) < _EXPLAIN_EVIDENCE_CAP:
            for e in why["evidence"]:
                values[e["position"], col[e["feature"]]] = e["activation"]
            return pieces, values
        for f in features:  # more fired tokens than one answer holds: ask per feature
            part = self._post("/v1/explain", {**source, "features": [f], "top_k": 1,
                                              "n_evidence": _EXPLAIN_EVIDENCE_CAP})
            if len(part["evidence"]) >= _EXPLAIN_EVIDENCE_CAP and len(pieces) > _EXPLAIN_EVIDENCE_CAP:
                raise DashboardError(f"feature {f} fired on more than {_EXPLAIN_EVIDENCE_CAP} tokens, more than the "
                                     "server's /v1/explain returns: use a shorter answer, or the in-process engine")
            for e in part["evidence"]:
                values[e["position"], col[f]] = e["activation"]
        return pieces, values

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
