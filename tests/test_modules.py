"""SAESteeringModule: steering through DSPy, reasoning activation in the prediction, both call styles."""

from __future__ import annotations

import gc

import dspy
import pytest

from reasoning_dspy.program.adapter import LenientChatAdapter
from reasoning_dspy.program.lm import SteeredLM, engine_of
from reasoning_dspy.program.modules import SAESteeringModule
from reasoning_dspy.sae import SAE, SAEConfig
from reasoning_dspy.steering import SteeringSpec


@pytest.fixture(scope="module")
def lm(tiny, steer_sae, steer_fmax):
    lm = SteeredLM(tiny, sae=steer_sae, max_activation=steer_fmax, max_tokens=8, cache=False)
    yield lm
    engine_of(lm).close()


def test_module_steers_and_reports(lm, steer_sae):
    module = SAESteeringModule(signature="question -> answer", sae=steer_sae, features=[5, 40], strength=6.0,
                               baseline=True)
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        pred = module(question="Is 91 prime?")
    assert isinstance(pred.answer, str)
    assert pred.steering == {"features": {"5": 6.0, "40": 6.0}, "vector": None, "layer": None, "mode": "add"}
    assert isinstance(pred.reasoning_activation, float) and pred.topk_activation >= 0
    assert pred.top_features and all(0 <= i < 128 for i, _ in pred.top_features)
    assert pred.baseline.steering is None and pred.baseline.answer != pred.answer
    # the same LM answered: no sibling engine was needed for the same SAE
    assert len(module._derived) == 0
    # activation is read before the steering vector is added (what the model computes on the text it
    # wrote, comparable with the baseline), so a different text gives a different activation
    assert pred.reasoning_activation != pred.baseline.reasoning_activation


def test_module_with_another_sae_derives_an_engine(lm, steer_fmax):
    other = SAE.from_config(SAEConfig(architecture="relu", d_in=64, d_sae=96, hook_layer=2))
    module = SAESteeringModule(sae=other, features=[3], strength=2.0, max_activation=steer_fmax[:96])
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        pred = module(question="Why?")
    (derived,) = module._derived.values()
    assert engine_of(derived).sae_raw is other and engine_of(derived).model is engine_of(lm).model
    assert derived.model != lm.model and pred.steering["features"] == {"3": 2.0}
    missing = SAESteeringModule(sae=other, features=[3])
    with dspy.context(lm=lm), pytest.raises(ValueError, match="its own f_max"):
        missing(question="Why?")


def test_model_tokenizer_sae_call_style(tiny, steer_sae):
    """`SAESteeringModule(model, tokenizer, sae, top_features=[...])` called with a dict."""
    module = SAESteeringModule(tiny.model, tiny.tokenizer, steer_sae, top_features=[7, 9], max_tokens=6, cache=False)
    with dspy.context(adapter=LenientChatAdapter()):
        pred = module({"instruction": "Explain why the sky is blue."})
    assert isinstance(pred.response, str) and pred.reasoning_activation is not None
    assert pred.steering["features"] == {"7": 2.0, "9": 2.0}
    engine_of(module._lm).close()


def test_module_errors(lm, steer_sae):
    with pytest.raises(ValueError, match="needs features"):
        SAESteeringModule(sae=steer_sae)
    with pytest.raises(TypeError, match="not both"):
        SAESteeringModule(features=[1], top_features=[2])
    with dspy.context(lm=dspy.LM("openai/gpt-4o-mini")), pytest.raises(TypeError, match="expected a SteeredLM"):
        SAESteeringModule(features=[1])(question="x")


def test_derived_lms_belong_to_their_lm(tiny, steer_sae, steer_fmax):
    """A module with its own SAE derives one LM per user LM, with that LM's settings; the entry goes
    away with the LM, so a later LM (which may reuse its memory address) gets its own."""
    other = SAE.from_config(SAEConfig(architecture="relu", d_in=64, d_sae=96, hook_layer=2))
    module = SAESteeringModule(sae=other, features=[3], strength=2.0, max_activation=steer_fmax[:96])

    def run(max_tokens):
        user_lm = SteeredLM(tiny, sae=steer_sae, max_activation=steer_fmax, max_tokens=max_tokens, cache=False)
        with dspy.context(lm=user_lm, adapter=LenientChatAdapter()):
            module(question="Why?")
        (derived,) = module._derived.values()
        assert derived.kwargs["max_tokens"] == max_tokens and engine_of(derived).sae_raw is other
        for each in (user_lm, derived):
            engine_of(each).close()

    run(3)
    gc.collect()
    assert len(module._derived) == 0
    run(5)


def test_steering_property_and_its_deprecated_name(steer_sae):
    module = SAESteeringModule(sae=steer_sae, features=[5, 40], strength=3.0, mode="clamp")
    assert module.steering == SteeringSpec(features={5: 3.0, 40: 3.0}, mode="clamp")
    with pytest.warns(DeprecationWarning, match="steering"):
        assert module.spec == module.steering


def test_residual_units_are_applied_and_need_no_fmax(tiny, steer_sae):
    """`units="residual"` steers by each token's residual norm, as a residual-units spec in metadata
    does, on an LM without f_max."""
    lm = SteeredLM(tiny, sae=steer_sae, max_tokens=8, cache=False)
    module = SAESteeringModule(sae=steer_sae, features=[5, 40], strength=0.5, units="residual")
    assert module.steering == SteeringSpec(features={5: 0.5, 40: 0.5}, units="residual")
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        pred = module(question="Is 91 prime?")
        direct = dspy.Predict("question -> answer")(
            question="Is 91 prime?", config={"metadata": {"steering": module.steering.model_dump(mode="json")}})
        plain = dspy.Predict("question -> answer")(question="Is 91 prime?")
    assert pred.steering["units"] == "residual" and pred.answer == direct.answer != plain.answer
    assert len(module._derived) == 0
    with pytest.raises(ValueError, match="units='fmax'"):
        SAESteeringModule(sae=steer_sae, features=[5], mode="clamp", units="residual")
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['unit'\]"):
        SAESteeringModule(sae=steer_sae, features=[5], unit="residual")
    engine_of(lm).close()
