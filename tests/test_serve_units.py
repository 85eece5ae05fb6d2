"""The serve package's parts on their own: config and CLI flags, the steering field, admission,
metrics text, stream deltas, JSON logs. No server, no network."""

from __future__ import annotations

import inspect
import json
import logging
from concurrent.futures import Future

import pytest

from reasoning_dspy.engine.microbatcher import BatchStats
from reasoning_dspy.sae import planted
from reasoning_dspy.serve.admission import Admission, QueueFullError
from reasoning_dspy.serve.config import API_KEY_ENV, ServeConfig
from reasoning_dspy.serve.errors import APIError
from reasoning_dspy.serve.logs import JsonFormatter
from reasoning_dspy.serve.metrics import Metrics
from reasoning_dspy.serve.openai_format import StreamedText


@pytest.fixture(scope="module")
def served():
    from reasoning_dspy.serve import load_served_model

    return load_served_model("tiny-random", "tiny-planted")


def test_cli_flags_are_the_config_fields():
    from reasoning_dspy.cli.services import serve

    params = inspect.signature(serve).parameters
    assert set(params) == set(ServeConfig.model_fields)
    for name, field in ServeConfig.model_fields.items():
        assert params[name].default.default == field.default, name


def test_cli_refuses_bad_settings_before_loading():
    from typer.testing import CliRunner

    from reasoning_dspy.cli import app

    result = CliRunner().invoke(app, ["serve", "--port", "70000"])
    assert result.exit_code == 2 and "port" in result.output
    result = CliRunner().invoke(app, ["serve", "--model", "tiny-random", "--sae", "no/such/sae"])
    assert result.exit_code == 2 and "no SAE folder at 'no/such/sae'" in result.output


def test_api_key_from_the_environment(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "sk-env")
    assert ServeConfig().resolved_api_key() == "sk-env"
    assert ServeConfig(api_key="sk-flag").resolved_api_key() == "sk-flag"
    assert "api_key" not in ServeConfig(api_key="sk-flag").public()
    monkeypatch.delenv(API_KEY_ENV)
    assert ServeConfig().resolved_api_key() is None


def test_admission_is_bounded_and_released_by_futures():
    admission = Admission(3)
    admission.acquire(2)
    with pytest.raises(QueueFullError):
        admission.acquire(2)
    future: Future = Future()
    admission.release_when_done(future)
    admission.acquire(1)
    assert admission.admitted == 3 and admission.rejected == 1
    future.cancel()
    assert admission.admitted == 2
    admission.release(2)
    assert admission.admitted == 0


def test_steering_field_forms(served):
    from reasoning_dspy.serve.steering_field import parse_steering

    assert parse_steering(None, served) == (None, {"applied": None, "source": "none"})
    assert parse_steering("off", served)[0] is None
    spec, echo = parse_steering({"features": {"5": 0.5}, "units": "residual"}, served)
    assert spec.features == {5: 0.5} and spec.units == "residual" and echo["source"] == "features"
    spec, echo = parse_steering({"top": 3, "strength": 0.2, "mode": "add", "units": "residual"}, served)
    assert list(spec.features) == sorted(planted.CANDIDATES) and echo["ranking"] == "planted candidates"
    spec, _ = parse_steering({"features": {"9": 0.5}, "mode": "clamp"}, served)  # the detector fires: f_max > 0
    assert spec.mode == "clamp"
    for bad, code in [({"features": {"x": 1}}, "invalid_steering"), ({"top": 0}, "invalid_steering"),
                      ({"top": 1, "strength": "big"}, "invalid_steering"), ({"features": {"99": 1}}, "feature_out_of_range"),
                      ({"top": 1, "units": "fmax"}, "feature_never_fires"), ([1, 2], "invalid_steering")]:
        with pytest.raises(APIError) as info:
            parse_steering(bad, served)
        assert info.value.status == 400 and info.value.code == code, bad


def test_labels_come_from_the_reasonscore_table(served):
    detector = served.labels.describe(planted.DETECT)
    assert detector["top_words"][0] == "wait" and detector["label"].startswith("wait/")
    assert detector["kind"] is not None  # the analysis covers the planted SAE's live feature
    assert served.labels.label(planted.PUSH) == f"#{planted.PUSH}"  # never fires: no words


def _stream(ids, decode, stop=(), final=None):
    """What streaming sends for `ids` arriving one by one, and the text it ends on."""
    text = StreamedText(decode, stop)
    pieces = []
    for t in ids:
        text.extend([t])
        pieces.append(text.ready())
    pieces.append(text.rest(decode(ids) if final is None else final))
    return [p for p in pieces if p]


def test_streamed_text_joins_to_the_final_text_and_never_passes_a_stop_string(served):
    tok = served.loaded.tokenizer
    ids = tok(" wait, let me check the numbers again", add_special_tokens=False)["input_ids"]
    decode = lambda t: tok.decode(t, skip_special_tokens=True)  # noqa: E731
    whole = decode(ids)
    pieces = _stream(ids, decode)
    assert "".join(pieces) == whole and len(pieces) > 3
    # a stop string: nothing at or after it is ever sent, even its first characters while undecided
    stop = "the num"
    final = whole[: whole.index(stop)]
    pieces = _stream(ids, decode, stop=(stop, "zzz"), final=final)
    assert "".join(pieces) == final  # had any piece gone past the cut, the join would be longer
    assert _stream([], decode, final="") == []


def test_metrics_text_is_prometheus_exposition():
    metrics = Metrics()
    metrics.observe_request("/v1/chat/completions", 200, 0.25)
    metrics.observe_tokens(10, 5)
    metrics.observe_cancel("queued")
    batches = BatchStats()
    for size in (1, 4, 4, 32):
        batches.add(size)
    text = metrics.render(queue_depth=2, admitted=3, capacity=8, rejected=1, batches=batches)
    samples = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples["reasoning_dspy_queue_depth"] == 2 and samples["reasoning_dspy_rejected_total"] == 1
    assert samples['reasoning_dspy_batch_size_bucket{le="4"}'] == 3 and samples["reasoning_dspy_batch_size_count"] == 4
    assert samples["reasoning_dspy_batch_size_sum"] == 41 and samples["reasoning_dspy_batch_size_last"] == 32
    assert samples['reasoning_dspy_requests_total{endpoint="/v1/chat/completions",status="200"}'] == 1
    assert samples['reasoning_dspy_cancelled_total{stage="queued"}'] == 1
    assert samples["reasoning_dspy_generated_tokens_total"] == 5 and samples["reasoning_dspy_tokens_per_second"] > 0
    assert all(line.split()[3] in {"gauge", "counter", "histogram", "summary"}
               for line in text.splitlines() if line.startswith("# TYPE"))


def test_json_log_lines():
    record = logging.LogRecord("reasoning_dspy.serve", logging.INFO, __file__, 1, "request", None, None)
    record.fields = {"status": 200, "path": "/v1/models"}
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "request" and line["status"] == 200 and line["level"] == "info" and line["ts"].endswith("Z")
