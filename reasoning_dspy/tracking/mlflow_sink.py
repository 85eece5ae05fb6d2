"""Optional MLflow logging, off unless asked for: a run's params, each trial's metrics (step = trial
number) and its artifacts (the best program). MLflow problems are logged once and never stop a run;
only a missing `mlflow` package raises, when the tracker is opened."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from reasoning_dspy.tracking.errors import TrackingError
from reasoning_dspy.tracking.records import Generation, RunEnd, RunStart, Trial

logger = logging.getLogger(__name__)

Record = RunStart | RunEnd | Trial | Generation
RUN_TAG = "reasoning_dspy.run_id"
EXPERIMENT = "reasoning-dspy"
_TRIAL_METRICS = ("score", "activation", "accuracy", "tokens", "reflect", "word_rate", "wall_s")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (`metric.objective`), the form MLflow params take."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


class MlflowSink:
    """Forwards tracking records to MLflow through its client API (no global active run)."""

    def __init__(self, client: Any, experiment: str, experiment_id: str | None):
        self.client, self.experiment, self.experiment_id = client, experiment, experiment_id
        self._runs: dict[str, str] = {}
        self._warned = False

    @classmethod
    def create(cls, experiment: str = EXPERIMENT, tracking_uri: str | None = None) -> MlflowSink:
        """Connect to MLflow (`tracking_uri`, else `$MLFLOW_TRACKING_URI`, else MLflow's default);
        reads only: the experiment is created with the first run."""
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise TrackingError("mlflow=true needs the mlflow package: pip install mlflow (or mlflow-skinny)") from None
        client = MlflowClient(tracking_uri=tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
        try:
            found = client.get_experiment_by_name(experiment)
        except Exception as err:  # noqa: BLE001 - MLflow raises many kinds; all mean "cannot use it"
            raise TrackingError(f"cannot use MLflow at {client.tracking_uri}: {err}") from None
        return cls(client, experiment, found.experiment_id if found is not None else None)

    def send(self, records: Sequence[Record]) -> None:
        try:
            for record in records:
                if isinstance(record, RunStart):
                    self._start(record)
                elif isinstance(record, Trial) and record.run_id in self._runs:
                    from mlflow.entities import Metric

                    stamp = int(record.created_at * 1000)
                    metrics = [Metric(name, float(value), stamp, record.number) for name in _TRIAL_METRICS
                               if (value := getattr(record, name)) is not None]
                    self.client.log_batch(self._runs[record.run_id], metrics=metrics)
                elif isinstance(record, RunEnd) and record.id in self._runs:
                    run = self._runs[record.id]
                    for key, value in flatten(record.result).items():
                        if isinstance(value, int | float) and not isinstance(value, bool):
                            self.client.log_metric(run, f"result.{key}", float(value))
                    self.client.set_terminated(run, "FINISHED" if record.status == "finished" else "FAILED")
        except Exception as err:  # noqa: BLE001 - MLflow never stops a run
            self._warn(err)

    def _start(self, record: RunStart) -> None:
        from mlflow.entities import Param

        if self.experiment_id is None:
            self.experiment_id = self.client.create_experiment(self.experiment)
        existing = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{record.id}'",
                                           max_results=1)
        if existing:
            self._runs[record.id] = existing[0].info.run_id
            return
        run = self.client.create_run(self.experiment_id, run_name=record.name,
                                     tags={RUN_TAG: record.id, "reasoning_dspy.kind": record.kind})
        self._runs[record.id] = run.info.run_id
        params = [Param(k, str(v)[:500]) for k, v in flatten(record.config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run.info.run_id, params=params[i:i + 100])

    def artifacts(self, run_id: str, paths: Sequence[str | os.PathLike]) -> None:
        if run_id not in self._runs:
            return
        for path in paths:
            try:
                self.client.log_artifact(self._runs[run_id], str(path))
            except Exception as err:  # noqa: BLE001
                self._warn(err)

    def close(self) -> None:
        """Nothing to release: each run is ended by its RunEnd record."""

    def _warn(self, err: BaseException) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("MLflow logging failed (%s: %s); the run goes on without it", type(err).__name__, err)
