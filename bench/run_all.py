"""Run every benchmark in bench/ and rewrite docs/benchmarks.md from what they measured.

    python bench/run_all.py                        # every bench_*.py (about 23 min on 2 CPU cores), then the page
    python bench/run_all.py --only sae,engine      # some of them, as a new run
    python bench/run_all.py --resume               # continue the latest run: what is missing or failed
    python bench/run_all.py --resume --only sae    # run one bench again inside the latest run
    python bench/run_all.py --render-only          # rewrite the page from the latest run's results
    python bench/run_all.py --preset smoke --results /tmp/bench --page /tmp/benchmarks.md   # seconds each

Every bench runs in its own subprocess, so one that crashes or hangs (`--timeout`) costs only its own
figures: the page shows the end of its output instead. On the CPU always; when torch sees a CUDA GPU,
each bench that takes `--device` runs a second time with `--device cuda`, and the page gets GPU
columns and sections. Results go to runs/bench/<time>/ (gitignored), one `<bench>.<device>.json` per
run, each written atomically as soon as that bench ends, with its full output in `<bench>.<device>.log`;
the page is rewritten atomically at the end.

A bench joins by being a script named bench/bench_<name>.py. It should accept `--json PATH` and write
a `BenchResult` there (bench/_result.py: `add_result_args`, `ResultWriter`); one that does not still
runs, and the page shows the end of its printout. `PRESETS` below holds the settings each bench gets
in the standard run, chosen so that the whole run fits in 30 minutes on 2 cores; a bench without an
entry runs with `--quick` if its script has that flag, else with its defaults.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from _render import record_files, render
from _result import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
ORDER = ["extract", "sae", "reasonscore", "engine", "load", "finetune", "tracking", "serve", "optimizer", "dashboard_map"]


@dataclass(frozen=True)
class Preset:
    """The arguments a bench gets, the minutes it takes on 2 quiet cores, and why those settings."""

    args: tuple[str, ...] = ()
    minutes: float | None = None
    why: str = ""


PRESETS: dict[str, dict[str, Preset]] = {
    "standard": {
        "extract": Preset((), 1.5, "the script's defaults: 64 prompts, batch 8, max_length 64, best of 3, "
                                   "tinyllama-random (bf16) at layer 6 of 22 and tiny-random."),
        "sae": Preset(("--dtypes", "float32", "--tokens", "24576"), 3.5,
                      "the default SAE size (d_in 2,048, d_sae 16,384, k 32, batch 4,096), float32 only, 6 steps "
                      "(the script's default is 12 steps, and bf16 as well where the CPU has bf16 units)."),
        "reasonscore": Preset((), 1.0, "the script's defaults: caches of 16,384 and 131,072 tokens."),
        "engine": Preset(("--models", "tinyllama-random", "tiny-random", "--max-tokens", "32"), 3.5,
                         "tinyllama-random and tiny-random at max_tokens 32, 64 examples (16 one at a time); the "
                         "script's default also runs smollm2, at 64 tokens."),
        "load": Preset((), 1.5, "the script's defaults: best of 2 loads each."),
        "finetune": Preset(("--model", "smollm2", "--steps", "6"), 2.5,
                           "smollm2, 6 steps of 8 examples per run, max_length 384."),
        "tracking": Preset((), 2.5, "the script's defaults: 100,000 stored 384-dim vectors, 50 queries."),
        "serve": Preset((), 1.5, "the script's defaults: tiny-random with tiny-planted, 256 requests × 16 tokens, "
                                 "concurrency 1, 4, 16 and 64."),
        "optimizer": Preset(("--examples", "16", "--trials", "4"), 5.5,
                            "smollm2-reasoner, 4 trials × 16 problems, max_tokens 96: half the 8 trials of the "
                            "≥ 5× target's settings, so that the whole run fits in 30 minutes; both sides run the "
                            "same 4 trials (one batch of 4 candidates × 16 problems)."),
        "dashboard_map": Preset(("--no-umap-default",), 1.0,
                                "a random SAE of 16,384 features (d_in 2048), the size the map's one-minute target is "
                                "stated at; umap-learn's own neighbour search is left out (it adds half a minute)."),
    },
    "smoke": {
        "extract": Preset(("--models", "tiny-random", "--prompts", "8", "--repeats", "1"), 0.3),
        "sae": Preset(("--d-in", "64", "--d-sae", "256", "--k", "8", "--batch", "256", "--tokens", "1024",
                       "--dead-steps", "2", "--dtypes", "float32"), 0.4),
        "reasonscore": Preset(("--small", "1024", "--d-in", "64", "--d-sae", "256", "--shard-tokens", "512"), 0.6),
        "engine": Preset(("--models", "tiny-random", "--examples", "8", "--max-tokens", "8", "--repeats", "1",
                          "--sequential-examples", "4", "--threads", "4"), 0.4),
        "load": Preset(("--repeats", "1"), 1.0),
        "finetune": Preset(("--steps", "3", "--examples", "16", "--max-length", "128"), 0.3),
        "tracking": Preset(("--rows", "2000", "--dim", "16", "--writes", "200", "--single-writes", "50",
                            "--queries", "5"), 0.3),
        "serve": Preset(("--requests", "8", "--max-tokens", "4", "--concurrency", "1,4"), 0.4),
        "optimizer": Preset(("--model", "tiny-random", "--trials", "2", "--batch-trials", "2", "--examples", "2",
                             "--max-tokens", "16"), 0.4),
    },
}


@dataclass(frozen=True)
class Bench:
    """A bench script and what its source says it accepts."""

    name: str
    script: Path
    json: bool
    device: bool
    quick: bool
    doc: str = ""

    @classmethod
    def read(cls, script: Path) -> Bench:
        src = script.read_text(encoding="utf-8")
        calls = re.findall(r"add_result_args\(([^)]*)\)", src)
        try:
            doc = (ast.get_docstring(ast.parse(src)) or "").strip().split("\n\n")[0].replace("\n", " ")
        except SyntaxError:  # it will fail when run, and the page will say so
            doc = ""
        return cls(name=script.stem.removeprefix("bench_"), script=script, json='"--json"' in src or bool(calls),
                   device='"--device"' in src or any("device=False" not in c for c in calls),
                   quick='"--quick"' in src, doc=doc)

    def preset(self, preset: str) -> Preset:
        if self.name in PRESETS[preset]:
            return PRESETS[preset][self.name]
        if self.quick:
            return Preset(("--quick",), None, "its `--quick` settings.")
        return Preset((), None, "the script's defaults.")


def discover(bench_dir: Path) -> list[Bench]:
    found = {b.name: b for b in map(Bench.read, sorted(bench_dir.glob("bench_*.py")))}
    order = [n for n in ORDER if n in found] + sorted(n for n in found if n not in ORDER)
    return [found[n] for n in order]


@dataclass
class Job:
    bench: Bench
    device: str
    preset: Preset
    key: str = field(init=False)

    def __post_init__(self):
        self.key = f"{self.bench.name}.{self.device}"

    def command(self, result_path: Path | None) -> list[str]:
        script = self.bench.script
        shown = script.relative_to(ROOT).as_posix() if script.is_relative_to(ROOT) else str(script)
        cmd = [shown, *self.preset.args] + (["--device", self.device] if self.device != "cpu" else [])
        return cmd + (["--json", str(result_path)] if result_path and self.bench.json else [])


# -- running ------------------------------------------------------------------------------------------
def child_env(verbose: bool) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    if not verbose:
        env["TQDM_DISABLE"] = "1"  # progress bars only clutter the logs
    return env


def stop(proc: subprocess.Popen) -> None:
    """End the bench and everything it started (a server, a database): its whole process group. SIGINT
    first, so that a Python bench runs its `finally` blocks (stopping its server or database)."""
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def parsed_ratio(output: str) -> float | None:
    """For a bench without `--json`: the last `<number>x` on a line that speaks of a ratio or speed-up."""
    for line in reversed(output.splitlines()):
        if re.search(r"ratio|speed-?up|faster", line, re.I):
            found = re.findall(r"(\d+(?:\.\d+)?)\s*[x×](?![\w])", line)
            if found:
                return float(found[-1])
    return None


def run_job(job: Job, run_dir: Path, *, timeout: float, verbose: bool) -> dict:
    """Run one bench to its end (or its timeout) and return its record, written to `<bench>.<device>.json`."""
    tmp = run_dir / "partial"
    tmp.mkdir(exist_ok=True)
    result_path = tmp / f"{job.key}.json"
    result_path.unlink(missing_ok=True)
    log_path = run_dir / f"{job.key}.log"
    cmd = job.command(result_path)
    lines: list[str] = []
    start = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ python " + " ".join(cmd) + "\n")
        proc = subprocess.Popen([sys.executable, *cmd], cwd=ROOT, env=child_env(verbose), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)

        def pump() -> None:
            try:
                for line in proc.stdout:
                    log.write(line)
                    lines.append(line)
                    if verbose:
                        sys.stdout.write("    " + line)
                        sys.stdout.flush()
            except ValueError:  # the log was closed: a process the bench left behind still holds the pipe
                pass

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        status = None
        try:
            while proc.poll() is None:
                elapsed = time.time() - start
                if elapsed > timeout:
                    stop(proc)
                    status = "timeout"
                    break
                if not verbose and sys.stdout.isatty():
                    sys.stdout.write(f"\r    running {elapsed / 60:4.1f} min")
                    sys.stdout.flush()
                time.sleep(0.5)
        except KeyboardInterrupt:
            stop(proc)
            raise
        reader.join(timeout=10)
        if not verbose and sys.stdout.isatty():
            sys.stdout.write("\r" + " " * 30 + "\r")
    seconds = time.time() - start
    output = "".join(lines)
    result = json.loads(result_path.read_text()) if result_path.is_file() else None
    result_path.unlink(missing_ok=True)
    if status is None:
        status = "failed" if proc.returncode else ("ok" if result else "no-json")
    record = {"bench": job.bench.name, "device": job.device, "status": status, "returncode": proc.returncode,
              "seconds": round(seconds, 1), "started": start, "command": ["python", *job.command(None)],
              "log": log_path.relative_to(ROOT).as_posix() if log_path.is_relative_to(ROOT) else str(log_path),
              "output_tail": None if status == "ok" else "\n".join(output.splitlines()[-30:]),
              "parsed_ratio": None if result else parsed_ratio(output), "result": result}
    atomic_write_text(run_dir / f"{job.key}.json", json.dumps(record, indent=2))
    return record


def headline(record: dict) -> str:
    if record["status"] != "ok":
        last = next((line for line in reversed((record.get("output_tail") or "").splitlines()) if line.strip()), "")
        return f"{record['status'].upper()}" + (f": {last.strip()[:160]}" if last else "")
    ratios = [r for r in record["result"]["ratios"] if r.get("summary", True)]
    return "; ".join(f"{r['ratio']:.2f}× {r['label']}" + (f" ({r['case']})" if r["case"] else "")
                     for r in ratios[:3]) or "ok (no ratio)"


# -- run folders ----------------------------------------------------------------------------------------
def latest_run(root: Path) -> Path | None:
    runs = sorted(p for p in root.glob("*") if (p / "run.json").is_file()) if root.is_dir() else []
    return runs[-1] if runs else None


def has_records(run_dir: Path) -> bool:
    return (run_dir / "run.json").is_file() or bool(record_files(run_dir))


def write_meta(run_dir: Path, meta: dict) -> None:
    atomic_write_text(run_dir / "run.json", json.dumps(meta, indent=2))


def write_page(run_dir: Path, page: Path) -> None:
    atomic_write_text(page, render(run_dir, page, notes=ROOT / "docs" / "benchmark-notes.md"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=None, help="comma-separated bench names (bench_<name>.py) to run")
    ap.add_argument("--resume", action="store_true",
                    help="continue the latest run (or --results): run the benches it lacks or that failed, and "
                         "those named in --only even if they have results")
    ap.add_argument("--render-only", action="store_true", help="run nothing: rewrite the page from the results")
    ap.add_argument("--results", type=Path, default=None,
                    help="the run folder (default: a new runs/bench/<time>/, or the latest one with --resume "
                         "or --render-only)")
    ap.add_argument("--page", type=Path, default=ROOT / "docs" / "benchmarks.md", help="the page to write")
    ap.add_argument("--preset", default=None, choices=sorted(PRESETS),
                    help="standard (default; with --resume, the run's own): the settings of the published page; "
                         "smoke: tiny settings that only check the scripts and the page")
    ap.add_argument("--no-gpu", action="store_true", help="CPU figures only, even when a GPU is available")
    ap.add_argument("--timeout", type=float, default=12 * 60,
                    help="seconds one bench may take before it is stopped and marked timed out (default 720)")
    ap.add_argument("--bench-dir", type=Path, default=BENCH_DIR, help=argparse.SUPPRESS)
    ap.add_argument("-v", "--verbose", action="store_true", help="show each bench's output as it runs")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    benches = discover(args.bench_dir)
    by_name = {b.name: b for b in benches}
    only = [n.strip().removeprefix("bench_").removesuffix(".py") for n in args.only.split(",")] if args.only else None
    if only and (unknown := [n for n in only if n not in by_name]):
        sys.exit(f"run_all.py: no bench named {', '.join(unknown)}; the benches are: {', '.join(by_name)}")

    root = ROOT / "runs" / "bench"
    if args.results is not None:
        run_dir = args.results.resolve()
    elif args.resume or args.render_only:
        run_dir = latest_run(root)
        if run_dir is None:
            sys.exit(f"run_all.py: no earlier run in {root}: run `python bench/run_all.py` first")
    else:
        run_dir = root / time.strftime("%Y%m%d-%H%M%S")
    if args.render_only:
        if not has_records(run_dir):
            sys.exit(f"run_all.py: {run_dir} holds no results to render")
        write_page(run_dir, args.page)
        print(f"rewrote {args.page} from {run_dir}")
        return 0
    if not args.resume and has_records(run_dir):
        sys.exit(f"run_all.py: {run_dir} already holds results: pass --resume to continue that run, or choose "
                 "another --results folder")
    run_dir.mkdir(parents=True, exist_ok=True)

    import _machine  # imports torch: only when running benches

    machine = _machine.describe()
    devices = ["cpu"] + (["cuda"] if machine["gpu"] and not args.no_gpu else [])
    meta = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    meta.setdefault("started", time.time())
    meta.setdefault("machine", machine)
    args.preset = args.preset or meta.get("preset") or "standard"
    meta.update(preset=args.preset, command=["python", "bench/run_all.py", *(argv if argv is not None else sys.argv[1:])],
                benches=[b.name for b in benches],
                titles={**meta.get("titles", {})}, docs={b.name: b.doc for b in benches},
                cpu_only=[b.name for b in benches if not b.device],
                presets={b.name: asdict(b.preset(args.preset)) for b in benches})
    write_meta(run_dir, meta)

    jobs = [Job(b, d, b.preset(args.preset)) for d in devices for b in benches
            if (only is None or b.name in only) and (d == "cpu" or b.device)]
    if args.resume:
        def done(job: Job) -> bool:
            rec = run_dir / f"{job.key}.json"
            return rec.is_file() and json.loads(rec.read_text()).get("status") == "ok"

        jobs = [j for j in jobs if (only is not None and j.bench.name in only) or not done(j)]
    total = sum(j.preset.minutes or 1.0 for j in jobs)
    gpu = machine["gpu"]
    print(f"{len(jobs)} bench runs on {', '.join(devices)}" + (f" ({gpu['name']})" if gpu and "cuda" in devices else "")
          + f", preset {args.preset}, about {total:.0f} min on 2 quiet cores; results in {run_dir}")
    left = total
    for i, job in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {job.bench.name} ({job.device}): python {' '.join(job.command(None))}  "
              f"(≈ {job.preset.minutes or 1.0:.1f} min; ≈ {left:.0f} min left)", flush=True)
        try:
            record = run_job(job, run_dir, timeout=args.timeout, verbose=args.verbose)
        except KeyboardInterrupt:
            print(f"\ninterrupted: `python bench/run_all.py --resume` continues this run ({run_dir})")
            return 130
        left -= job.preset.minutes or 1.0
        print(f"    {record['seconds'] / 60:.1f} min: {headline(record)}", flush=True)
        if record["result"]:
            meta["titles"][job.bench.name] = record["result"]["title"]

    records = [json.loads(f.read_text()) for f in record_files(run_dir)]
    meta.update(seconds=sum(r["seconds"] for r in records), load_after=_machine.load_average())
    write_meta(run_dir, meta)
    if (run_dir / "partial").is_dir() and not any((run_dir / "partial").iterdir()):
        (run_dir / "partial").rmdir()
    write_page(run_dir, args.page)
    failed = [j.key for j in jobs if json.loads((run_dir / f"{j.key}.json").read_text())["status"] != "ok"]
    print(f"rewrote {args.page}" + (f"; not ok: {', '.join(failed)} (see the page and the logs)" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
