"""`Dashboard`: the app's state (workspace, backend, tracking database, map) and one method per user
action, returning plain values. `app.py` lays them out in Gradio; tests call them directly.

The tracking database is optional: when it cannot be opened the Experiments page says why and the
other pages work as usual.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
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
        self._switching = threading.Lock()  # one SAE switch at a time
        self._users: dict[int, int] = {}  # requests using each backend, by id(backend)
        self._retired: dict[int, Backend] = {}  # switched-out backends, closed when their last request ends

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
        """Use another SAE on the same model; returns the new header. The current one stays on any error.

        The SAE box is open to every visitor, so it loads only the shipped SAEs and folders under the
        configured roots (`DashboardConfig.sae_roots`), and refuses anything else in the same words
        whether it exists or not. Switches run one at a time; requests already running finish on the
        old SAE, whose engine is closed when the last of them is done."""
        if not (sae or "").strip():
            raise DashboardError("give an SAE: a folder, a shipped SAE name, or tiny-planted")
        if isinstance(self.backend, ServerBackend):
            raise DashboardError("the dashboard uses the server's SAE (--server): restart both with the other SAE")
        sae_value = self._allowed(sae.strip(), "SAE", names=True)
        scores_value = self._allowed(scores.strip(), "scores folder") if (scores or "").strip() else None
        with self._switching:
            ws = with_sae(self.ws.loaded, sae_value, scores_value, name=self.ws.served.name,
                          cache_dir=self.cache_dir, corpus_limit=self.cfg.corpus_texts, progress=progress)
            backend = _backend(self.cfg, ws)
            with self._lock:
                old, self.ws, self.backend, self._map = self.backend, ws, backend, None
                if self._users.get(id(old)):
                    self._retired[id(old)] = old
                    old = None
            if old is not None:
                old.close()
        return self.header()

    def _allowed(self, value: str, what: str, *, names: bool = False) -> str:
        """`value` if the SAE box may load it: a shipped SAE name (`names`), or a path under a root."""
        from reasoning_dspy.sae import planted
        from reasoning_dspy.sae.io import SHIPPED_SAES

        if names and (value in SHIPPED_SAES or value == planted.NAME):
            return value
        roots = self.cfg.resolved_sae_roots()
        path = Path(value).expanduser()
        resolved = (path if path.is_absolute() else Path.cwd() / path).resolve()
        if any(resolved == root or root in resolved.parents for root in roots):
            return str(resolved)
        shipped = f"shipped SAEs ({', '.join(sorted(SHIPPED_SAES))}, {planted.NAME}) or " if names else ""
        raise DashboardError(f"the {what} box loads only {shipped}folders under {', '.join(map(str, roots))}; "
                             f"{value!r} is not one (start the dashboard with sae_roots to allow another folder)")

    @contextmanager
    def _using(self) -> Iterator[tuple[Workspace, Backend]]:
        """The current workspace and backend, kept open until the block ends even if the SAE switches."""
        with self._lock:
            ws, backend = self.ws, self.backend
            self._users[id(backend)] = self._users.get(id(backend), 0) + 1
        try:
            yield ws, backend
        finally:
            with self._lock:
                self._users[id(backend)] -= 1
                done = not self._users[id(backend)]
                if done:
                    del self._users[id(backend)]
                retired = self._retired.pop(id(backend), None) if done else None
            if retired is not None:
                retired.close()

    # -- pages ----------------------------------------------------------------------------------
    def prompt(self, prompt: str, features: str, max_tokens: int) -> Any:
        from reasoning_dspy.dashboard.prompt_view import run_prompt

        with self._using() as (ws, backend):
            return run_prompt(backend, ws, prompt, features, max_tokens=int(max_tokens))

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

        with self._using() as (ws, backend):
            spec = steering_spec(ws, source=source, top_n=top_n, features_text=features, strength=strength,
                                 mode=mode, units=units)
            return compare(backend, ws, prompt, spec, max_tokens=int(max_tokens))

    def sweep(self, prompt: str, source: str, top_n: Any, features: str, mode: str, units: str, strengths: str,
              max_tokens: int) -> tuple[list[list[Any]], Any]:
        from reasoning_dspy.dashboard.steer_view import parse_strengths, steering_spec, sweep, sweep_figure

        values = parse_strengths(strengths)
        with self._using() as (ws, backend):
            spec = steering_spec(ws, source=source, top_n=top_n, features_text=features,
                                 strength=max(values, key=abs), mode=mode, units=units)
            rows = sweep(backend, ws, prompt, spec, values, max_tokens=int(max_tokens))
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
        with self._using() as (_ws, backend):
            answer = backend.generate([(prompt, None)], int(max_tokens))[0]
        if answer.reasoning_activation is None:
            raise DashboardError("this SAE has no reasoning features to measure (no ReasonScore table)")
        row = self.annotate("rescore", prompt, author, run_id=run_id, generation_id=generation_id,
                            score=answer.reasoning_activation, note=note, output=answer.text)
        return answer, row


def _backend(cfg: DashboardConfig, ws: Workspace) -> Backend:
    if cfg.server:
        return ServerBackend(cfg.server, ws, api_key=cfg.api_key)
    return EngineBackend(ws, max_tokens=cfg.max_tokens)
