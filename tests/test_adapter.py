"""LenientChatAdapter on what a small instruct model really writes when it cannot follow DSPy's field
format (texts modelled on SmolLM2-135M-Instruct's completions): reasoning and answer are split
sensibly, echoed markers never leak into fields, and the prediction says how it was salvaged."""

from __future__ import annotations

import logging
import uuid

import dspy
import pytest
from dspy.adapters.chat_adapter import ChatAdapter

from reasoning_dspy.program import adapter as adapter_module
from reasoning_dspy.program.adapter import LenientChatAdapter

COT = dspy.ChainOfThought("question -> answer").predict.signature  # reasoning, answer: str
COT_INT = dspy.ChainOfThought("question -> answer: int").predict.signature
PREDICT_INT = dspy.Predict("question -> answer: int").signature

PROSE = ("Tom has 3 bags with 12 apples in each bag.\n3 x 12 = 36 apples.\n"
         "He eats 5 apples, so 36 - 5 = 31.\nSo the answer is 31.")
ECHOED = ("[## question ##]\nA book costs 7 dollars. How much do 4 books cost?\n\n[## reasoning ##]\n"
          "4 books cost 4 x 7 = 28 dollars.\nThe answer is 28.")
PARTIAL = "[[ ## reasoning ## ]]\nSara had 20 candies and gave 8 away. 20 - 8 = 12.\n\n[[ ## answer"
CODE = ('```python\n# Given the fields\nquestion = "Tom has 3 bags of 12 apples and eats 5"\n\n'
        '# Given the output\nanswer = 31\n```\n\nOutput: 31')
MARKERS = ("[[", "##", "]]")


def _no_markers(parsed: dict) -> bool:
    return not any(m in str(v) for v in parsed.values() for m in MARKERS)


@pytest.mark.parametrize(("signature", "text", "reasoning", "answer"), [
    (COT, PROSE, PROSE.rsplit("\n", 1)[0], "31"),
    (COT_INT, PROSE, PROSE.rsplit("\n", 1)[0], 31),
    (COT, ECHOED, "4 books cost 4 x 7 = 28 dollars.\nThe answer is 28.", "28"),
    (COT_INT, ECHOED, "4 books cost 4 x 7 = 28 dollars.\nThe answer is 28.", 28),
    (COT, PARTIAL, "Sara had 20 candies and gave 8 away. 20 - 8 = 12.", ""),
    (COT_INT, PARTIAL, "Sara had 20 candies and gave 8 away. 20 - 8 = 12.", 12),
    (COT_INT, CODE, None, 31),
    (COT, "Let me think.\n#### 1,250", "Let me think.", "1,250"),  # a text answer as written
    (COT_INT, "Let me think.\n#### 1,250", "Let me think.", 1250),
    (COT_INT, "We add them: \\boxed{42}. Done, 7 steps.", "", 42),
    (COT, "Paris is in France.\nAnswer: **Paris**.", "Paris is in France.", "Paris"),
    (COT, "First, note the sky scatters blue light.\nBlue", "First, note the sky scatters blue light.", "Blue"),
    (COT_INT, "Three bags, twelve each, minus five: 36 then 31 left", "Three bags, twelve each, minus five: 36 then 31 left",
     31),
    (COT, "", "", ""),
    (COT_INT, "", "", None),
])
def test_salvage_splits_reasoning_from_the_final_answer(signature, text, reasoning, answer):
    adapter = LenientChatAdapter()
    parsed = adapter.parse(signature, text)
    assert parsed["answer"] == answer
    if reasoning is not None:
        assert parsed["reasoning"] == reasoning
    assert _no_markers(parsed) and adapter.n_salvaged == 1


def test_predict_int_without_reasoning_field_and_numeric_by_name():
    adapter = LenientChatAdapter()
    assert adapter.parse(PREDICT_INT, PROSE) == {"answer": 31}
    assert adapter.parse(PREDICT_INT, CODE) == {"answer": 31}
    total = dspy.Signature("question -> total_count")  # a str field whose name asks for a number
    assert adapter.parse(total, "There were 36, then 5 were eaten, leaving 31 in all") == {"total_count": "31"}
    assert adapter.parse(PREDICT_INT, "no digits at all") == {"answer": None}


def test_well_formed_output_parses_as_chat_adapter_does():
    text = "[[ ## reasoning ## ]]\n3 x 12 = 36; 36 - 5 = 31\n\n[[ ## answer ## ]]\n31\n\n[[ ## completed ## ]]"
    for signature in (COT, COT_INT):
        assert LenientChatAdapter().parse(signature, text) == ChatAdapter().parse(signature, text)


class _ScriptedEngine:
    """A DSPy engine that answers with the given texts in turn (what a small model wrote)."""

    def __init__(self, texts: list[str]):
        self.texts = list(texts)

    def complete(self, request):
        from dspy.lm15 import Message, Response, TextPart, Usage

        return Response(id=f"t-{uuid.uuid4().hex[:8]}", model="scripted", message=Message.assistant(
            (TextPart(self.texts.pop(0)),)), finish_reason="stop", usage=Usage(input_tokens=1, output_tokens=1))


def test_through_real_dspy_modules_the_prediction_says_how_it_was_salvaged(caplog, monkeypatch):
    monkeypatch.setattr(adapter_module, "_warned", type(adapter_module._warned)())
    well_formed = "[[ ## reasoning ## ]]\n36 - 5\n\n[[ ## answer ## ]]\n31\n\n[[ ## completed ## ]]"
    lm = dspy.LM("local/scripted", engine=_ScriptedEngine([ECHOED, PROSE, well_formed]), cache=False)
    with dspy.context(lm=lm, adapter=LenientChatAdapter()), caplog.at_level(logging.INFO, "reasoning_dspy.adapter"):
        cot = dspy.ChainOfThought("question -> answer")(question="How much do 4 books cost?")
        typed = dspy.Predict("question -> answer: int")(question="How many apples are left?")
        clean = dspy.ChainOfThought("question -> answer: int")(question="How many apples are left?")
    assert (cot.reasoning, cot.answer) == ("4 books cost 4 x 7 = 28 dollars.\nThe answer is 28.", "28")
    assert "split at echoed markers for reasoning" in cot.salvaged and "explicit 'answer is" in cot.salvaged
    assert typed.answer == 31 and "explicit 'answer is" in typed.salvaged
    assert (clean.reasoning, clean.answer) == ("36 - 5", 31) and "salvaged" not in clean.keys()
    records = [r for r in caplog.records if r.name == "reasoning_dspy.adapter"]
    assert [r.levelname for r in records] == ["WARNING", "INFO"]
    assert "split at echoed markers" in records[0].getMessage() and "pred.salvaged" in records[0].getMessage()


def test_an_empty_completion_is_an_empty_salvaged_answer():
    lm = dspy.LM("local/scripted", engine=_ScriptedEngine([""]), cache=False)
    with dspy.context(lm=lm, adapter=LenientChatAdapter()):
        pred = dspy.ChainOfThought("question -> answer: int")(question="How many?")
    assert (pred.reasoning, pred.answer) == ("", None) and pred.salvaged
