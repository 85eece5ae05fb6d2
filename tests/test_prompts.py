import json

import pytest

from reasoning_dspy.prompts import PromptError, load_prompts


def test_bundled_prompts_are_many_and_unique(bundled_prompts):
    assert len(bundled_prompts) >= 300
    assert len(set(bundled_prompts)) == len(bundled_prompts)


def test_bundled_traces_hold_reasoning_words():
    traces = load_prompts("bundled-traces")
    assert len(traces) >= 100 and all(t.strip() == t and t for t in traces)
    text = " ".join(traces).lower()
    for word in ["wait", "hmm", "therefore", "alternatively", "let me"]:
        assert text.count(word) >= 20, word


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "txt", "parquet"])
def test_local_formats(tmp_path, kind):
    rows = ["first prompt", "second, with a comma", "third"]
    path = tmp_path / f"p.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps({"question": r, "id": i}) + "\n" for i, r in enumerate(rows)))
    elif kind == "json":
        path.write_text(json.dumps(rows))
    elif kind == "csv":
        import csv

        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "text"])
            w.writerows([[i, r] for i, r in enumerate(rows)])
    elif kind == "txt":
        path.write_text("\n".join(rows) + "\n\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"body": rows, "n": [1, 2, 3]}), path)
    column = "body" if kind == "parquet" else None
    assert load_prompts(path, column=column) == rows
    assert load_prompts(path, column=column, limit=2) == rows[:2]


def test_missing_file():
    with pytest.raises(PromptError, match="not found"):
        load_prompts("does/not/exist.jsonl")


def test_empty_prompts(tmp_path):
    (tmp_path / "e.txt").write_text("\n  \n")
    with pytest.raises(PromptError, match="no prompts"):
        load_prompts(tmp_path / "e.txt")
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(PromptError, match="no prompts"):
        load_prompts(tmp_path / "e.jsonl")


def test_unknown_column(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(PromptError, match="no column 'text'.*available columns: \\['body'\\]"):
        load_prompts(path, column="text")
    with pytest.raises(PromptError, match="cannot tell which column"):
        load_prompts(path)


def test_bad_jsonl_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n{oops\n')
    with pytest.raises(PromptError, match="p.jsonl:2 is not valid JSON"):
        load_prompts(path)


def test_unreachable_dataset_id_is_a_clear_error():
    with pytest.raises(PromptError, match="neither a local file nor a loadable dataset"):
        load_prompts("no-such-user/no-such-dataset-xyz")
