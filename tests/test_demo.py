"""The README's main command runs the whole offline pipeline: keep it working."""

import pytest

from reasoning_dspy.demo import run_demo


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    state = run_demo(tmp_path / "demo", limit=48)
    assert state.cache.manifest.complete and state.cache.n_tokens > 500
    # Running it again resumes from the finished outputs instead of failing.
    again = run_demo(tmp_path / "demo", limit=48)
    assert again.cache.n_tokens == state.cache.n_tokens
