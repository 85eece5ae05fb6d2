"""Reading the steps of a generated trace back, and counting what its checks did."""

import pytest

from reasoning_dspy.problems.steps import StepError, read_steps, result, step_measures


def test_step_measures_count_fixes_and_breaks_against_exact_arithmetic():
    trace = ("Task: Check.\nHmm, I should check each step.\n"
             "47 + 85 = 122. Let me check: 047 + 085: ones 7+5=12, write 2 carry 1; tens 4+8+1=13, write 3 "
             "carry 1; hundreds 0+0+1=1, write 1; so 132. Wait, 47 + 85 is 132, not 122.\n"  # a wrong quick answer, fixed
             "132 - 30 = 102. Let me check: 132 - 030: ones 2-0=2; tens 3-3=0; hundreds 1-0=1; so 102. It matches.\n"
             "102 / 3 = 34. Let me check: 102 / 3: 1/3=0 r1; 10/3=3 r1; 12/3=4 r0; so 35. Wait, 102 / 3 is 35, not 34.\n"
             "The answer is 35.")                                                          # a right one, broken
    assert step_measures(trace) == {"steps": 3, "steps_right": 2, "quick_right": 2, "checked": 3, "checked_right": 2,
                                    "fixed": 1, "broke": 1}
    assert step_measures("Task: Be brief.\n12 × 3 = 36.\n36 + 4 = 41.\nThe answer is 41.") == {
        "steps": 2, "steps_right": 1, "quick_right": 1, "checked": 0, "checked_right": 0, "fixed": 0, "broke": 0}


def test_an_inexact_division_has_no_right_value_and_bad_steps_say_why():
    (w,) = read_steps("Task: Check.\n50 / 3 = 16. Let me check: 50 / 3: 5/3=1 r2; 20/3=6 r2; so 16. It matches.")
    assert (w.step.a, w.step.op, w.step.b, w.quick, w.checked) == (50, "/", 3, 16, 16)
    assert step_measures("50 / 3 = 16.") == {"steps": 1, "steps_right": 0, "quick_right": 0, "checked": 0,
                                             "checked_right": 0, "fixed": 0, "broke": 0}
    with pytest.raises(StepError, match="does not divide exactly"):
        result(50, "/", 3)
    with pytest.raises(StepError, match="unknown operator '%'"):
        result(5, "%", 3)
