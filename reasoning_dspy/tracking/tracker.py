"""`Tracker`: the one interface runs use to record themselves.

Every record goes to the JSONL journal first, then to the database in batches. When the database
goes away mid-run the records wait in the journal (a warning is logged once) and are replayed when
it answers again; ids are stable and writes are insert-or-ignore, so a replay stores each record
exactly once. Only bad input raises (a malformed URL, a database without pgvector, a vector of
the wrong length), and it raises before anything is written.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reasoning_dspy.tracking.config import TrackingConfig
from reasoning_dspy.tracking.embed import Embedder, HashingEmbedder, as_embedder
from reasoning_dspy.tracking.errors import StoreUnavailable, TrackingError
from reasoning_dspy.tracking.journal import Journal
from reasoning_dspy.tracking.records import Generation, RunEnd, RunStart, Trial, stable_id, trial_from
from reasoning_dspy.tracking.search import Match, VectorColumn, nearest, vector_of
from reasoning_dspy.tracking.store import RecordRejected, Store
from reasoning_dspy.tracking.urls import resolve_url, url_source
from reasoning_dspy.tracking.vector import as_vector

logger = logging.getLogger(__name__)

Record = RunStart | RunEnd | Trial | Generation


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, dict):
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return dict(value)
    raise TrackingError(f"expected a mapping or a pydantic model, got {type(value).__name__}")


class Tracker:
    """Record runs, trials and generations; search prompts and activation patterns.

    >>> with Tracker.open("runs/demo/tracking.jsonl") as tracker:        # SQLite at runs/tracking.sqlite
    ...     run = tracker.start_run("demo", config={"seed": 0})
    ...     tracker.log_generation(run, "Is 91 prime?", "No: 7 x 13.", correct=1.0)
    ...     tracker.finish_run(run, result={"accuracy": 1.0})
    """

    def __init__(self, journal: Journal, store: Store | None, *, embed: Embedder | None = None,
                 embedding_dim: int, activation_dim: int, batch_size: int = 64, retry_s: float = 2.0,
                 mlflow: Any = None):
        self.journal, self.store, self.mlflow = journal, store, mlflow
        self.embed, self.embedding_dim, self.activation_dim = embed, embedding_dim, activation_dim
        self.batch_size, self.retry_s = batch_size, retry_s
        self._pending: list[tuple[Record, int]] = list(journal.pending()) if store is not None else []
        self._lock = threading.RLock()
        self._retry_at = 0.0
        self._warned = False
        self._down_since: float | None = None
        self._backoff = retry_s
        self._offset_saved_at = self._flushed_at = time.monotonic()
        self.flush_s = 5.0  # a slow trickle of records still reaches the database within seconds
        self.rejected = 0

    @classmethod
    def open(cls, journal: str | os.PathLike, database_url: str | None = None, *,
             config: TrackingConfig | None = None, default_sqlite: str | os.PathLike | None = None,
             embed: Embedder | Any = None, retry_s: float = 2.0, connect_timeout: float = 5.0,
             **settings: Any) -> Tracker:
        """A tracker writing to `journal` and to the database at `database_url` (else the config's,
        else `$DATABASE_URL`, else SQLite at `default_sqlite`, `runs/tracking.sqlite`). `settings`
        override `config` fields (`mlflow=True`, `embedding_dim=8`, ...). `embed` turns prompts into
        vectors (a callable, or an object with `embed(texts)`; default: the config's `embedder`). Raises
        `TrackingError` before writing anything when the database cannot be used."""
        try:
            cfg = TrackingConfig.model_validate({**(config or TrackingConfig()).model_dump(), **settings})
        except ValueError as err:
            raise TrackingError(f"tracking settings: {err}") from None
        journal_path = Path(journal)
        if journal_path.is_dir():
            raise TrackingError(f"journal {str(journal_path)!r} is a folder; give a .jsonl file path")
        sink = None
        if cfg.mlflow:
            from reasoning_dspy.tracking.mlflow_sink import MlflowSink

            sink = MlflowSink.create()
        store = None
        if cfg.enabled:
            given = database_url if database_url is not None else cfg.database_url
            url = resolve_url(given, default_sqlite=default_sqlite)
            try:
                store = Store.open(url, embedding_dim=cfg.embedding_dim, activation_dim=cfg.activation_dim,
                                   connect_timeout=connect_timeout)
            except TrackingError as err:
                source = url_source(given)
                raise TrackingError(f"{source}: {err}" if source else str(err)) from None
        if embed is None and cfg.embedder == "minilm":
            from reasoning_dspy.rag import MiniLMEmbedder

            embed = MiniLMEmbedder()
        embedder = as_embedder(embed) if embed is not None else HashingEmbedder(cfg.embedding_dim)
        tracker = cls(Journal(journal_path, store.where if store is not None else None), store, embed=embedder,
                      embedding_dim=cfg.embedding_dim, activation_dim=cfg.activation_dim,
                      batch_size=cfg.batch_size, retry_s=retry_s, mlflow=sink)
        if tracker._pending:
            tracker.flush()
        return tracker

    # -- recording --------------------------------------------------------------------------------
    def start_run(self, name: str, *, kind: str = "run", config: Mapping[str, Any] | Any = None,
                  folder: str | os.PathLike | None = None, run_id: str | None = None) -> str:
        """Record a run's start; returns its id (give `run_id` to resume one: it is stored once)."""
        run_id = run_id or str(uuid.uuid4())
        self._submit([RunStart(id=run_id, name=name, kind=kind, config=_jsonable(config) or {},
                               folder=None if folder is None else str(folder))])
        return run_id

    def log_trial(self, run_id: str, trial: Any) -> None:
        """Record one optimizer trial (`optimizers.trials.TrialRecord` or a mapping of its fields)."""
        self.log_trials(run_id, [trial])

    def log_trials(self, run_id: str, trials: Iterable[Any]) -> None:
        try:
            records = [trial_from(run_id, t) for t in trials]
        except ValueError as err:
            raise TrackingError(f"trial: {err}") from None
        self._submit(records)

    def log_generation(self, run_id: str, prompt: str, output: str | None = None, *, id: str | None = None,
                       label: str | None = None, index: int | None = None, trial_number: int | None = None,
                       steering: Mapping[str, Any] | Any = None, reasoning_activation: float | None = None,
                       correct: float | None = None, tokens: int | None = None,
                       features: Mapping[int, float] | None = None, activation_vector: Sequence[float] | None = None,
                       prompt_embedding: Sequence[float] | None = None, extra: Mapping[str, Any] | None = None,
                       replace: bool = False) -> str:
        """Record one generated answer; returns its id. The id is stable for a given
        (run, label, index), so re-recording the same example stores it once (`replace=True`: the
        latest record replaces it). Without `prompt_embedding` the tracker's embedder embeds the prompt."""
        if id is None:
            id = stable_id(run_id, "generation", label, index) if index is not None else str(uuid.uuid4())
        try:
            embedding = (as_vector(prompt_embedding, self.embedding_dim, "prompt_embedding")
                         if prompt_embedding is not None else
                         as_vector(self.embed(prompt), self.embedding_dim, "the embedder's vector")
                         if self.embed is not None else None)
            activations = (as_vector(activation_vector, self.activation_dim, "activation_vector")
                           if activation_vector is not None else None)
            record = Generation(
                id=id, run_id=run_id, prompt=prompt, output=output, label=label, index=index,
                trial_number=trial_number, steering=_jsonable(steering), reasoning_activation=reasoning_activation,
                correct=correct, tokens=tokens, features={int(f): float(v) for f, v in (features or {}).items()},
                prompt_embedding=None if embedding is None else embedding.tolist(),
                activation_vector=None if activations is None else activations.tolist(), extra=dict(extra or {}),
                replace=replace)
        except ValueError as err:
            raise TrackingError(f"generation: {err}") from None
        self._submit([record])
        return id

    def finish_run(self, run_id: str, *, status: str = "finished", result: Mapping[str, Any] | None = None,
                   artifacts: Sequence[str | os.PathLike] = ()) -> None:
        """Record the run's end; `artifacts` (e.g. the best program file) go to MLflow when enabled."""
        if self.mlflow is not None:
            self.mlflow.artifacts(run_id, artifacts)
        self._submit([RunEnd(id=run_id, status=status, result=dict(result or {}))])
        self.flush()

    # -- the write path ---------------------------------------------------------------------------
    def _submit(self, records: list[Record]) -> None:
        with self._lock:
            try:
                ends = self.journal.append(records)
            except OSError as err:
                self._warn(f"cannot append to the tracking journal {self.journal.path}: {err}")
                return
            if self.mlflow is not None:
                self.mlflow.send(records)
            if self.store is None:
                return
            self._pending.extend(zip(records, ends, strict=True))
            if len(self._pending) >= self.batch_size or time.monotonic() - self._flushed_at > self.flush_s:
                self._flush(force=False)

    def flush(self) -> bool:
        """Write every waiting record to the database now; True when none is left waiting."""
        with self._lock:
            return self._flush(force=True)

    def _flush(self, *, force: bool) -> bool:
        if self.store is None:
            return True
        self._flushed_at = time.monotonic()
        if not self._pending:
            return True
        if not force and time.monotonic() < self._retry_at:
            return False
        replayed = len(self._pending) if self._down_since is not None else 0
        try:
            while self._pending:
                batch = self._pending[: self.batch_size]
                self._write(batch)
                self.journal.confirm(batch[-1][1])
                del self._pending[: len(batch)]
        except StoreUnavailable as err:
            if self._down_since is None:
                self._down_since, self._backoff = time.monotonic(), self.retry_s
            else:  # an unreachable host costs a connect timeout per try: try less often the longer it lasts
                self._backoff = min(2 * self._backoff, 60.0)
            self._retry_at = time.monotonic() + self._backoff
            self._warn(f"tracking database unavailable ({err}); records wait in {self.journal.path} and are "
                       "replayed when it is back")
            return False
        except Exception as err:  # noqa: BLE001 - tracking never fails a run
            self._retry_at = time.monotonic() + self.retry_s
            self._warn(f"tracking write failed ({type(err).__name__}: {err}); records wait in {self.journal.path}")
            return False
        if replayed:
            logger.info("tracking database back after %.1fs: %d waiting records written to %s",
                        time.monotonic() - (self._down_since or 0.0), replayed, self.store.where)
            self._down_since = None
        if time.monotonic() - self._offset_saved_at > 1.0:
            self._save_offset()
        return True

    def _write(self, batch: list[tuple[Record, int]]) -> None:
        records = [r for r, _ in batch]
        try:
            self.store.write(records)
        except RecordRejected:
            for record in records:  # find the record the database refuses; keep the others
                try:
                    self.store.write([record])
                except RecordRejected as err:
                    self.rejected += 1
                    logger.warning("tracking database refused %s %s (%s); it stays in %s only",
                                   record.type, record.id, err, self.journal.path)

    def _save_offset(self) -> None:
        try:
            self.journal.save_offset()
        except OSError as err:
            self._warn(f"cannot save the journal offset: {err}")
        self._offset_saved_at = time.monotonic()

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(message)
        else:
            logger.debug(message)

    @property
    def pending(self) -> int:
        """Records in the journal that the database does not hold yet."""
        return len(self._pending)

    def close(self) -> None:
        """Write what is waiting (one try), then close the journal, the database and MLflow."""
        with self._lock:
            done = self._flush(force=True)
            try:
                self.journal.close()
            except OSError as err:
                self._warn(f"cannot close the tracking journal: {err}")
            if not done:
                logger.warning("%d tracking records are not in the database yet; they are kept in %s and load "
                               "with: reasoning-dspy db replay %s", len(self._pending), self.journal.path,
                               self.journal.path)
            if self.store is not None:
                self.store.close()
            if self.mlflow is not None:
                self.mlflow.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- queries ----------------------------------------------------------------------------------
    def _search(self, column: VectorColumn, query: Any, k: int, *, run_id: str | None, exact: bool,
                exclude_id: str | None = None) -> list[Match]:
        if self.store is None:
            raise TrackingError("tracking is disabled: there is no database to search")
        self.flush()
        with self.store.engine.begin() as conn:
            if isinstance(query, str) and column == "activation_vector":
                exclude_id = query
                query = vector_of(conn, self.store.schema, column, query)
            return nearest(conn, self.store.schema, column, query, k, run_id=run_id, exclude_id=exclude_id,
                           exact=exact)

    def similar_prompts(self, prompt: str | Sequence[float] | np.ndarray, k: int = 5, *, run_id: str | None = None,
                        exact: bool = False) -> list[Match]:
        """Stored generations whose prompt is nearest `prompt` (text is embedded with the tracker's
        embedder), nearest first. PostgreSQL searches the HNSW index (`exact=True`: every row)."""
        if isinstance(prompt, str):
            if self.embed is None:
                raise TrackingError("this tracker has no embedder: pass the prompt's embedding vector")
            prompt = self.embed(prompt)
        return self._search("prompt_embedding", prompt, k, run_id=run_id, exact=exact)

    def similar_activations(self, query: str | Sequence[float] | np.ndarray, k: int = 5, *,
                            run_id: str | None = None, exact: bool = False) -> list[Match]:
        """Generations whose feature-activation vector is nearest `query`: a vector, or the id of a
        stored generation (which is then left out of the answer)."""
        return self._search("activation_vector", query, k, run_id=run_id, exact=exact)
