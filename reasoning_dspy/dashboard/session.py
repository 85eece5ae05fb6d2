"""`Dashboard`: the app's state (workspace, backend, tracking database, map) and one method per user
action, returning plain values. `app.py` lays them out in Gradio; tests call them directly.

The tracking database is optional: when it cannot be opened the Experiments page says why and the
other pages work as usual.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reasoning_dspy.dashboard.backend import Answer, Backend, EngineBackend, ServerBackend
from reasoning_dspy.dashboard.config import DashboardConfig
from reasoning_dspy.dashboard.workspace import DashboardError, Workspace, open_workspace, with_sae

Progress = Callable[[float, str], None]


@dataclass
class MapState:
    html: str
    clusters: list[list[Any]]  # [cluster, features, top words, mean ReasonScore]
    note: str


class Dashboard:
    """Everything one running dashboard holds; every browser tab shares it (and its engine)."""

    def __init__(self, cfg: DashboardConfig, ws: Workspace, backend: Backend):
        self.cfg, self.ws, self.backend = cfg, ws, backend
        self.cache_dir = cfg.resolved_cache_dir()
        self._notes: Any = None
        self._map: MapState | None = None
        self._lock = threading.RLock()

    @classmethod
    def create(cls, cfg: DashboardConfig, progress: Progress | None = None) -> Dashboard:
        """Load the model, SAE and corpus, and connect the engine (or the server)."""
        ws = open_workspace(cfg.model, cfg.sae, cfg.scores, cache_dir=cfg.resolved_cache_dir(), dtype=cfg.dtype,
                            device=cfg.device, seed=cfg.seed, corpus_limit=cfg.corpus_texts, progress=progress)
        return cls(cfg, ws, _backend(cfg, ws))

    def close(self) -> None:
        self.backend.close()
        if self._notes is not None:
            self._notes.close()

    # -- header and SAE -----------------------------------------------------------------------
    def header(self) -> str:
        ws = self.ws
        sae = ws.sae
        scores = "ReasonScore table" if ws.scores is not None else "no ReasonScore table (f_max from the corpus)"
        if ws.pending.ready:
            corpus = ws.wait_corpus()
            about = f"{len(corpus.texts)} texts, {corpus.n_tokens:,} tokens"
        else:
            about = f"being prepared in the background ({ws.pending.message}, {100 * ws.pending.fraction:.0f}%)"
        return (f"**model** {ws.served.name} ({ws.loaded.model_spec.n_layers} layers, d_model {ws.loaded.model_spec.d_model}) · "
                f"**SAE** {ws.served.sae_name} ({sae.cfg.architecture}, {ws.d_sae} features, layer {ws.layer}; {scores}) · "
                f"**answers from** {self.backend.kind} · **corpus** {about} · **tracking** {self.tracking_where()}")

    def switch_sae(self, sae: str, scores: str | None = None, progress: Progress | None = None) -> str:
        """Use another SAE on the same model; returns the new header. The current one stays on any error."""
        if not (sae or "").strip():
            raise DashboardError("give an SAE: a folder, a shipped SAE name, or tiny-planted")
        if isinstance(self.backend, ServerBackend):
            raise DashboardError("the dashboard uses the server's SAE (--server): restart both with the other SAE")
        ws = with_sae(self.ws.loaded, sae, (scores or "").strip() or None, name=self.ws.served.name,
                      cache_dir=self.cache_dir, corpus_limit=self.cfg.corpus_texts, progress=progress)
        backend = _backend(self.cfg, ws)
        with self._lock:
            old, self.ws, self.backend, self._map = self.backend, ws, backend, None
        old.close()
        return self.header()

    # -- pages ----------------------------------------------------------------------------------
    def prompt(self, prompt: str, features: str, max_tokens: int) -> Any:
        from reasoning_dspy.dashboard.prompt_view import run_prompt

        return run_prompt(self.backend, self.ws, prompt, features, max_tokens=int(max_tokens))

    def steering_defaults(self) -> dict[str, Any]:
        """The Steering page's starting controls: the SAE's recommended steering, else sensible ones."""
        ws = self.ws
        spec = ws.recommended
        if spec is not None and spec.features:
            return {"source": "features", "top_n": len(spec.features), "features": ", ".join(map(str, spec.features)),
                    "strength": round(next(iter(spec.features.values())), 5), "mode": spec.mode, "units": spec.units}
        if ws.served.ranking_source == "planted candidates":
            from reasoning_dspy.sae import planted

            return {"source": "features", "top_n": 2, "features": str(planted.PUSH), "strength": 0.5, "mode": "add",
                    "units": "residual"}
        return {"source": "top" if ws.served.ranking else "features", "top_n": 3,
                "features": ", ".join(map(str, ws.served.ranking[:3])), "strength": 0.1, "mode": "add",
                "units": "residual"}

    def steer(self, prompt: str, source: str, top_n: Any, features: str, strength: Any, mode: str, units: str,
              max_tokens: int) -> Any:
        from reasoning_dspy.dashboard.steer_view import compare, steering_spec

        spec = steering_spec(self.ws, source=source, top_n=top_n, features_text=features, strength=strength,
                             mode=mode, units=units)
        return compare(self.backend, self.ws, prompt, spec, max_tokens=int(max_tokens))

    def sweep(self, prompt: str, source: str, top_n: Any, features: str, mode: str, units: str, strengths: str,
              max_tokens: int) -> tuple[list[list[Any]], Any]:
        from reasoning_dspy.dashboard.steer_view import parse_strengths, steering_spec, sweep, sweep_figure

        values = parse_strengths(strengths)
        spec = steering_spec(self.ws, source=source, top_n=top_n, features_text=features, strength=max(values, key=abs),
                             mode=mode, units=units)
        rows = sweep(self.backend, self.ws, prompt, spec, values, max_tokens=int(max_tokens))
        return rows, sweep_figure(rows, spec)

    def feature(self, feature: Any, progress: Progress | None = None) -> Any:
        from reasoning_dspy.dashboard.feature_view import feature_view

        self.ws.check_feature(feature)  # a bad index is refused before any wait
        self.ws.wait_corpus(progress)
        return feature_view(self.ws, feature, progress=progress)

    def feature_map(self, progress: Progress | None = None) -> MapState:
        """The map (computed once per SAE; the layout is also cached on disk)."""
        from reasoning_dspy.dashboard.feature_map import cluster_labels, map_html, map_layout

        with self._lock:
            if self._map is not None:
                return self._map
            ws = self.ws
        ws.wait_corpus(progress)
        try:
            layout = map_layout(ws.view.W_dec, self.cache_dir, progress=progress)
        except ValueError as err:  # an SAE too small to map
            raise DashboardError(str(err)) from None
        corpus_key = ws.corpus.folder.name if ws.corpus.folder is not None else "memory"
        clusters = cluster_labels(layout, ws.corpus, ws.view, ws.pieces, self.cache_dir, corpus_key=corpus_key,
                                  scores=ws.scores, progress=progress)
        html = map_html(layout, clusters, scores=ws.scores, labels=ws.served.labels,
                        highlight=ws.served.reasoning_features)
        how = "read from the cache" if layout.cached else "computed now"
        note = (f"UMAP of {ws.d_sae} decoder directions ({how}; computing it took {layout.seconds:.1f} s), "
                f"{layout.n_clusters} k-means clusters labelled by the corpus tokens they fire on. "
                + ("Colour: ReasonScore (red high, blue negative); ringed: the reasoning features. "
                   if ws.scores is not None else "No ReasonScore table: points are grey. ")
                + "Click a point to open its feature page.")
        rows = [[c.id, c.size, " / ".join(c.words), None if c.mean_score is None else round(c.mean_score, 6)]
                for c in sorted(clusters, key=lambda c: -(c.mean_score or 0.0))]
        state = MapState(html, rows, note)
        with self._lock:
            if self.ws is ws:
                self._map = state
        return state

    # -- tracking -------------------------------------------------------------------------------
    def notes(self) -> Any:
        """The tracking database's annotation store, opened on first use; `DashboardError` if it cannot be."""
        from reasoning_dspy.tracking.annotations import AnnotationStore
        from reasoning_dspy.tracking.errors import TrackingError

        with self._lock:
            if self._notes is None:
                try:
                    self._notes = AnnotationStore.open(self.cfg.database_url)
                except TrackingError as err:
                    raise DashboardError(f"the tracking database cannot be opened: {err}") from None
            return self._notes

    def tracking_where(self) -> str:
        from reasoning_dspy.tracking.errors import TrackingError
        from reasoning_dspy.tracking.urls import display, resolve_url

        try:
            return display(resolve_url(self.cfg.database_url))
        except TrackingError as err:
            return f"unusable ({err})"

    def annotate(self, kind: str, prompt: str, author: str, *, run_id: str | None = None,
                 generation_id: str | None = None, score: Any = None, note: str | None = None,
                 output: str | None = None, steering: dict | None = None) -> Any:
        from reasoning_dspy.tracking.errors import TrackingError

        if kind == "score":
            try:
                score = float(score)
            except (TypeError, ValueError):
                raise DashboardError(f"give the score as a number, got {score!r}") from None
        try:
            return self.notes().add(kind, prompt, author=author, run_id=run_id, generation_id=generation_id,
                                    score=score, note=note, output=output, steering=steering)
        except TrackingError as err:
            raise DashboardError(str(err)) from None

    def rescore(self, prompt: str, author: str, *, run_id: str | None = None, generation_id: str | None = None,
                note: str | None = None, max_tokens: int = 64) -> tuple[Answer, Any]:
        """Answer `prompt` again (unsteered) and store its reasoning activation as a `rescore` annotation."""
        if not (prompt or "").strip():
            raise DashboardError("pick a prompt first: select a generation, or type one")
        if not (author or "").strip():
            raise DashboardError("an annotation needs its author: give your name at the top of the page")
        answer = self.backend.generate([(prompt, None)], int(max_tokens))[0]
        if answer.reasoning_activation is None:
            raise DashboardError("this SAE has no reasoning features to measure (no ReasonScore table)")
        row = self.annotate("rescore", prompt, author, run_id=run_id, generation_id=generation_id,
                            score=answer.reasoning_activation, note=note, output=answer.text)
        return answer, row


def _backend(cfg: DashboardConfig, ws: Workspace) -> Backend:
    if cfg.server:
        return ServerBackend(cfg.server, ws, api_key=cfg.api_key)
    return EngineBackend(ws, max_tokens=cfg.max_tokens)
