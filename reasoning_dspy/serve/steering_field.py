"""The `steering` extra field of a request (`extra_body={"steering": {...}}` with the openai client).

Two forms, both with optional `mode` ("add" or "clamp") and `units` ("fmax" or "residual"):

- explicit features: `{"features": {"12": 0.1}, "mode": "add", "units": "residual"}` (any
  `SteeringSpec` field, `layer` and `vector` included);
- the top N features by ReasonScore at one strength: `{"top": 3, "strength": 0.2, "units": "residual"}`.

`null`, `{}` or `"off"` means unsteered. The response echoes what was applied (`steering_echo`).
"""

from __future__ import annotations

import math
from typing import Any

from reasoning_dspy.serve.catalog import ServedModel
from reasoning_dspy.serve.errors import APIError, bad_request
from reasoning_dspy.steering import SteeringError, SteeringSpec, as_spec

_TOP_KEYS = {"top", "strength", "mode", "units", "layer"}

#: Largest norm of a raw steering vector added as is (units "fmax"). Residual streams have norms of
#: tens to a few thousands; a vector far beyond that only overflows the model into NaN.
MAX_VECTOR_NORM = 1e4


def parse_steering(value: Any, served: ServedModel) -> tuple[SteeringSpec | None, dict[str, Any]]:
    """`(spec, echo)` for a request's `steering` value; raises a 400 `APIError` naming the problem."""
    if value is None or value == {} or (isinstance(value, str) and value.lower() in {"off", "none", "baseline"}):
        return None, {"applied": None, "source": "none"}
    if not isinstance(value, dict):
        raise bad_request(f"steering must be an object such as {{'features': {{'12': 0.1}}}} or {{'top': 3, "
                          f"'strength': 0.2}}, or null; got {type(value).__name__}", code="invalid_steering",
                          param="steering")
    if "top" in value:
        spec, source = _top_spec(value, served), "top"
    else:
        spec, source = _explicit_spec(value, served), "features"
    if spec is None:
        return None, {"applied": None, "source": "none"}
    _check_features(spec, served)
    echo = {"applied": spec.model_dump(mode="json"), "source": source,
            "features": [{**served.labels.describe(i), "strength": g} for i, g in spec.features.items()]}
    if source == "top":
        echo["ranking"] = served.ranking_source
    return spec, echo


def _explicit_spec(value: dict, served: ServedModel) -> SteeringSpec | None:
    features = value.get("features")
    if isinstance(features, dict):
        bad = [k for k in features if not _is_index(k)]
        if bad:
            raise bad_request(f"steering.features keys must be feature indices (integers), got {bad[:5]}",
                              code="invalid_steering", param="steering.features")
        negative = [int(k) for k in features if int(k) < 0]
        if negative:
            raise _out_of_range(negative, served)
    try:
        spec = as_spec(value)
    except SteeringError as err:
        raise bad_request(str(err), code="invalid_steering", param="steering") from None
    if spec is not None and spec.vector is not None and spec.units == "fmax":
        norm = math.sqrt(sum(v * v for v in spec.vector))
        if not norm <= MAX_VECTOR_NORM:
            raise bad_request(f"steering.vector has norm {norm:.3g}, beyond the {MAX_VECTOR_NORM:g} this server adds "
                              "as is (residual streams have norms of tens to thousands); scale it down, or send "
                              "\"units\": \"residual\" to give only its direction", code="invalid_steering",
                              param="steering.vector")
    return spec


def _top_spec(value: dict, served: ServedModel) -> SteeringSpec:
    unknown = sorted(set(value) - _TOP_KEYS)
    if unknown:
        also = " (give either top or features, not both)" if "features" in unknown else ""
        raise bad_request(f"steering with top takes {sorted(_TOP_KEYS)}; unexpected {unknown}{also}",
                          code="invalid_steering", param="steering")
    if not served.ranking:
        raise bad_request(f"{served.name} has no ReasonScore table, so top-N steering is unavailable; name the "
                          "features instead ({'features': {'12': 0.1}}) or serve with --scores",
                          code="steering_unavailable", param="steering.top")
    top = value["top"]
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= len(served.ranking):
        raise bad_request(f"steering.top must be an integer from 1 to {len(served.ranking)}, got {top!r}",
                          code="invalid_steering", param="steering.top")
    strength = value.get("strength", 2.0)
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise bad_request(f"steering.strength must be a number, got {strength!r}", code="invalid_steering",
                          param="steering.strength")
    try:
        return SteeringSpec.from_features(served.ranking[:top], float(strength), mode=value.get("mode", "add"),
                                          layer=value.get("layer"), units=value.get("units", "fmax"))
    except ValueError as err:  # pydantic: mode, units or strength out of range
        raise bad_request(f"invalid steering {value!r}: {err}", code="invalid_steering", param="steering") from None


def _check_features(spec: SteeringSpec, served: ServedModel) -> None:
    if not spec.features:
        return
    if served.sae is None:
        raise bad_request(f"{served.name} is served without an SAE, so it cannot steer features; serve it with "
                          "--sae, or steer with a raw vector", code="steering_unavailable", param="steering.features")
    bad = [i for i in spec.features if not 0 <= i < served.sae.d_sae]
    if bad:
        raise _out_of_range(bad, served)
    if spec.units == "fmax" and served.max_activation is not None:
        dead = [i for i in spec.features if float(served.max_activation[i]) <= 0]
        if dead:
            raise bad_request(
                f"features {dead} never fired on the reference text (f_max = 0), so in f_max units (the default) "
                "steering them adds nothing; use \"units\": \"residual\" (strength in multiples of the "
                "residual norm, 0.05-0.5 is useful) or other features", code="feature_never_fires",
                param="steering.features")


def _out_of_range(bad: list[int], served: ServedModel) -> APIError:
    if served.sae is None:
        where = f"{served.name} is served without an SAE"
    else:
        where = f"the SAE {served.sae_name!r} has {served.sae.d_sae} features (valid 0..{served.sae.d_sae - 1})"
    return APIError(400, f"steering feature indices {bad[:5]} are out of range: {where}",
                    code="feature_out_of_range", param="steering.features")


def _is_index(key: Any) -> bool:
    if isinstance(key, int) and not isinstance(key, bool):
        return True
    return isinstance(key, str) and key.strip().lstrip("-").isdigit()
