"""`SAESteeringModule`: a DSPy module that answers its signature with SAE steering switched on.

It returns a `dspy.Prediction` with the signature's outputs plus the response's reasoning activation
(measured in the same forward that generated it), its strongest SAE features, and optionally the
unsteered baseline side by side. It is an ordinary DSPy module: optimizers tune its predictor's
instructions and demos, `program.save`/`load` work, and `Evaluate` batches its calls.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import Any, Literal

import dspy

from reasoning_dspy.engine import SteeredEngine
from reasoning_dspy.engine.fingerprint import tensors_fingerprint
from reasoning_dspy.program.lm import SteeredLM, collect_reports, derived_lm, engine_of
from reasoning_dspy.sae import SAE
from reasoning_dspy.steering import SteeringSpec, Units


def _feature_list(features: Any, n_features: int) -> list[int]:
    """Feature indices from a list or a ReasonScore result (its `n_features` best features)."""
    if features is None:
        return []
    if hasattr(features, "top"):
        return [int(i) for i in features.top(n_features)]
    return [int(i) for i in features]


class SAESteeringModule(dspy.Module):
    """Run `signature` with `features` steered at `strength` (γ, in multiples of each feature's f_max;
    with `units="residual"`, in multiples of each token's residual norm, and no f_max needed).

    Two ways to build it:

    >>> SAESteeringModule(signature="question -> answer", sae=sae, features=[12, 40], strength=2.0)
    >>> SAESteeringModule(model, tokenizer, sae, top_features=[12, 40])   # then module({"instruction": ...})

    Without a model, it uses `lm=` or DSPy's configured LM, which must be a `SteeredLM`; if that LM
    carries another SAE, a sibling engine on the same model is made for this one. With a model, it
    builds its own `SteeredLM` (default signature `instruction -> response`), and any further keyword
    arguments (`max_tokens=`, `cache=`, ...) go to that LM.

    The prediction carries `reasoning_activation` (mean activation of `features` over the generated
    tokens, read before the steering vector is added, so it measures the text the model wrote and
    compares fairly with the baseline rather than echoing the injected direction), `topk_activation`,
    `top_features` (`[(feature, mean activation)]`) and `steering`; with `baseline=True` also
    `baseline`, the same prediction without steering.
    """

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        sae: SAE | str | None = None,
        *,
        signature: str | type[dspy.Signature] | None = None,
        features: Sequence[int] | Any = None,
        top_features: Sequence[int] | None = None,
        strength: float = 2.0,
        mode: Literal["add", "clamp"] = "add",
        units: Units = "fmax",
        layer: int | None = None,
        max_activation: Any = None,
        lm: Any = None,
        baseline: bool = False,
        chain_of_thought: bool = False,
        n_features: int = 4,
        **lm_options: Any,
    ):
        super().__init__()
        if features is not None and top_features is not None:
            raise TypeError("give features= or top_features= (its other name), not both")
        if lm_options and model is None:
            raise TypeError(f"unexpected keyword arguments {sorted(lm_options)}: SAESteeringModule passes LM options "
                            "(max_tokens=, cache=, ...) only to the LM it builds from model=; set them on your "
                            "SteeredLM instead")
        chosen = features if features is not None else top_features
        if max_activation is None and hasattr(chosen, "max_activation"):
            max_activation = chosen.max_activation
        self.features = _feature_list(chosen, n_features)
        if not self.features:
            raise ValueError("SAESteeringModule needs features to steer: features=[...] (SAE latent indices) "
                             "or a ReasonScore result")
        self.strength = float(strength)
        if not math.isfinite(self.strength):
            raise ValueError(f"strength must be a finite number (a multiple of each feature's f_max), got {strength}")
        self.mode = mode
        self.units = units
        self.layer = layer
        self.steering  # noqa: B018 - validates mode, units and strength together, here rather than on the first call
        self.baseline = baseline
        self._sae = sae
        self._max_activation = max_activation
        # LMs derived for this module's SAE, per user LM: weak keys, so a collected LM's entry goes with
        # it and a new LM can never be mistaken for it.
        self._derived: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        signature = signature or ("instruction -> response" if model is not None else "question -> answer")
        self.predict = dspy.ChainOfThought(signature) if chain_of_thought else dspy.Predict(signature)
        if model is not None:
            if sae is None:
                raise ValueError("steering needs the SAE: SAESteeringModule(model, tokenizer, sae, top_features=[...])")
            if max_activation is None and units == "fmax":
                max_activation = self._estimate_max_activation(model, tokenizer, sae)
            lm = SteeredLM(model, tokenizer, sae=sae, max_activation=max_activation, capture=True,
                           reasoning_features=self.features, **lm_options)
            self._sae = self._max_activation = None  # the module's own LM carries them
        self._lm = lm

    @property
    def steering(self) -> SteeringSpec:
        """The steering this module applies: its features at `strength`, in `mode` and `units`."""
        return SteeringSpec.from_features(self.features, self.strength, mode=self.mode, layer=self.layer,
                                          units=self.units)

    @property
    def spec(self) -> SteeringSpec:
        """Deprecated name of `steering`."""
        import warnings

        warnings.warn("SAESteeringModule.spec is deprecated; use .steering", DeprecationWarning, stacklevel=2)
        return self.steering

    # -- calling -----------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> dspy.Prediction:
        inputs = self._inputs(args, kwargs)
        lm = self._resolve_lm()
        steered = self._run(lm, inputs, self.steering)
        if self.baseline:
            steered.baseline = self._run(lm, inputs, None)
        return steered

    def _run(self, lm: Any, inputs: dict, spec: SteeringSpec | None) -> dspy.Prediction:
        meta = {"steering": spec.model_dump(mode="json") if spec is not None else None, "capture": True,
                "reasoning_features": list(self.features)}
        with collect_reports() as collector:
            pred = self.predict(**inputs, lm=lm, config={"metadata": meta})
        reports = [r for r in collector.reports() if r.activation is not None]
        act = reports[-1].activation if reports else None
        out = dict(pred.items())
        out["reasoning_activation"] = None if act is None else act.features_mean
        out["topk_activation"] = None if act is None else act.topk_mean
        out["top_features"] = [] if act is None else act.top_features
        out["steering"] = meta["steering"]
        result = dspy.Prediction(**out)
        if getattr(pred, "completions", None) is not None:
            result._completions = pred.completions
        return result

    def _inputs(self, args: tuple, kwargs: dict) -> dict:
        if len(args) == 1 and isinstance(args[0], dict):
            return {**args[0], **kwargs}
        if args:
            names = list(self.predict_signature.input_fields)
            if len(args) > len(names):
                raise TypeError(f"{len(args)} positional inputs for the input fields {names}")
            return {**dict(zip(names[: len(args)], args, strict=True)), **kwargs}
        return kwargs

    @property
    def predict_signature(self) -> type[dspy.Signature]:
        pred = self.predict.predict if isinstance(self.predict, dspy.ChainOfThought) else self.predict
        return pred.signature

    # -- which LM --------------------------------------------------------------------------
    def _resolve_lm(self) -> Any:
        lm = self._lm or dspy.settings.lm
        if lm is None:
            raise RuntimeError("no LM: pass lm=SteeredLM(...) or dspy.configure(lm=SteeredLM(...))")
        engine = engine_of(lm)
        sae = self._sae_object()
        same_sae = sae is None or (engine.sae_raw is not None and (
            engine.sae_raw is sae or _sae_fp(engine.sae_raw) == _sae_fp(sae)))
        needs_fmax = self.units == "fmax"
        if same_sae and self._max_activation is None:
            if engine.sae is None:
                raise ValueError(f"{lm.model} has no SAE to steer with: pass sae= to the module or the LM")
            if engine.max_activation is None and needs_fmax:
                raise ValueError("steering needs each feature's f_max: pass max_activation= (or a ReasonScore "
                                 "result as features=) to the module or the LM")
            return lm
        fmax = self._max_activation if self._max_activation is not None else (
            engine.max_activation if same_sae else None)
        if fmax is None and needs_fmax:
            raise ValueError("this module's SAE differs from the LM's, so it needs its own f_max: pass "
                             "max_activation= (or a ReasonScore result as features=)")
        return self._derive(lm, engine, sae=sae if sae is not None else engine.sae_raw, max_activation=fmax)

    def _derive(self, lm: Any, engine: SteeredEngine, **changes: Any) -> Any:
        if lm not in self._derived:
            self._derived[lm] = derived_lm(lm, engine.derive(**changes))
        return self._derived[lm]

    def _sae_object(self) -> SAE | None:
        if isinstance(self._sae, str):
            from reasoning_dspy.sae import load_sae

            self._sae = load_sae(self._sae)
        return self._sae

    @staticmethod
    def _estimate_max_activation(model: Any, tokenizer: Any, sae: Any) -> Any:
        from reasoning_dspy.steering import estimate_max_activation

        if isinstance(sae, str):
            from reasoning_dspy.sae import load_sae

            sae = load_sae(sae)
        if tokenizer is None and hasattr(model, "tokenizer"):
            model, tokenizer = model.model, model.tokenizer
        return estimate_max_activation(model, tokenizer, sae)

    def __deepcopy__(self, memo: dict) -> SAESteeringModule:
        # Optimizers deep-copy programs; the LM, SAE and derived engines are shared, not copied.
        import copy

        new = object.__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            shared = key in {"_lm", "_sae", "_max_activation", "_derived"}
            new.__dict__[key] = value if shared else copy.deepcopy(value, memo)
        return new


def _sae_fp(sae: SAE) -> str:
    return tensors_fingerprint(sae.state_dict().items())
