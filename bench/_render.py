"""docs/benchmarks.md from one run folder of `run_all.py`: the machine, a summary of every ratio, and a
section per benchmark with its settings and figures (or, for a bench that failed, its last lines).

Everything on the page comes from the run's JSON records; the prose is what the bench scripts say
about their own method. Analysis from earlier runs lives in docs/benchmark-notes.md, linked per
section where that page has a heading with the benchmark's title. Imports nothing heavy, so a page
re-renders in well under a second.
"""

from __future__ import annotations

import json
import math
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _machine import cpu_line

DEVICE_NAMES = {"cpu": "CPU", "cuda": "GPU"}
COMMAND = "python bench/run_all.py"


# -- formatting -------------------------------------------------------------------------------------
def fmt(value: Any) -> str:
    """A table cell: thousands separators for big numbers, 3 significant digits for small ones."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        a = abs(value)
        if a >= 100:
            return f"{value:,.0f}"
        if a >= 10:
            return f"{value:.1f}"
        if a >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, list):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in value.items())
    return str(value)


def cell(value: Any) -> str:
    return fmt(value).replace("|", "\\|").replace("\n", " ")


def ratio_text(r: float | None) -> str:
    return "-" if r is None or not math.isfinite(r) else f"{r:.2f}×"


def table(columns: list[str], rows: list[list[Any]], align: list[str] | None = None) -> list[str]:
    align = align or ["---:" if any(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in rows)
                      else "---" for i in range(len(columns))]
    out = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return out


def slug(title: str) -> str:
    """The anchor both GitHub and MkDocs give a heading made of words, spaces, `:` and `-`."""
    text = re.sub(r"[^\w\s-]", "", title).strip().lower()
    return re.sub(r"\s+", "-", text)


def settings_text(settings: dict[str, Any]) -> str:
    return "; ".join(f"`{k}` {fmt(v)}" for k, v in settings.items())


def shown_command(command: list[str]) -> str:
    """The bench's command line as a reader would type it: `python bench/x.py ...`, without `--json PATH`."""
    args, skip = [], False
    for a in command:
        if skip:
            skip = False
        elif a == "--json":
            skip = True
        elif not a.startswith("--json="):
            args.append(a)
    return "python " + " ".join(args)


def target_text(target: dict[str, Any] | None) -> str:
    if not target:
        return "-"
    at = ", ".join(f"{k} {fmt(v)}" for k, v in target["settings"].items())
    return f"≥ {target['ratio']:g}×" + (f" at {at}" if at else "")


def met_text(ratio: dict[str, Any]) -> str:
    target = ratio.get("target")
    if not target:
        return "-"
    met = "yes" if ratio.get("met") else "**no**"
    return met if target.get("applies", True) else f"{met}, but at other settings than the target's"


# -- run records ------------------------------------------------------------------------------------
def record_files(run_dir: Path) -> list[Path]:
    """The bench records of a run folder: `<bench>.<device>.json`."""
    return sorted(f for f in run_dir.glob("*.json") if re.fullmatch(r"\w+\.\w+\.json", f.name))


def load_records(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's metadata (`run.json`) and its bench records, in run order."""
    meta_file = run_dir / "run.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    records = [json.loads(f.read_text()) for f in record_files(run_dir)]
    order = {name: i for i, name in enumerate(meta.get("benches", []))}
    records.sort(key=lambda r: (order.get(r["bench"], len(order)), r["bench"], r["device"] != "cpu", r["device"]))
    return meta, records


def title_of(bench: str, records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    for r in records:
        if r["bench"] == bench and r.get("result"):
            return r["result"]["title"]
    return meta.get("titles", {}).get(bench) or f"bench_{bench}.py"


# -- page parts -------------------------------------------------------------------------------------
def header(meta: dict[str, Any], run_dir: Path, page: Path, notes: Path | None) -> list[str]:
    started = meta.get("started")
    when = (datetime.fromtimestamp(started, timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if started else "unknown")
    minutes = meta.get("seconds")
    out = ["# Benchmarks", "",
           f"<!-- Generated by `{COMMAND}` from {run_dir.name}/: edit the bench scripts or bench/_render.py, "
           "not this file. -->", "",
           f"This page is generated by `{COMMAND}`, which runs every `bench/bench_*.py` script and rewrites the "
           "page from their results. Each script measures ours against the obvious alternative on the same "
           "workload in the same run, so the **ratio** is the figure to read: absolute rates move with the "
           "machine and with whatever else it runs, ratios much less. Each section gives the settings its "
           "figures were measured with; `run_all.py` runs some benchmarks at smaller settings than their "
           "scripts' defaults so that the whole run fits in 30 minutes on 2 cores, and a target stated at "
           "other settings is marked so in the summary."]
    if notes is not None:
        out += ["", f"Analysis and figures from earlier runs, at their own settings and machines: "
                    f"[benchmark notes]({rel(notes, page)})."]
    out += ["", f"Run `{run_dir.name}`: started {when}"
                + (f"; its benchmarks ran {minutes / 60:.1f} min in all" if minutes else "")
                + (f", preset `{meta['preset']}`" if meta.get("preset") else "")
                + (f": `{' '.join(meta['command'])}`" if meta.get("command") else "") + "."]
    if meta.get("preset") and meta["preset"] != "standard":
        out += ["", f"**Preset `{meta['preset']}`: tiny settings that check the scripts run, not meaningful "
                    "figures.**"]
    return out


def machine_section(meta: dict[str, Any]) -> list[str]:
    m = meta.get("machine")
    if not m:
        return ["## Machine", "", "Not recorded."]
    gpu = m.get("gpu")
    rows = [["CPU", cpu_line(m)], ["memory", f"{m['memory_gib']:.1f} GiB" if m.get("memory_gib") else "unknown"],
            ["GPU", f"{gpu['name']} ({gpu['memory_gib']} GiB, {gpu['count']} device(s), CUDA {gpu['cuda']}): "
                    "GPU figures in their own columns and sections" if gpu else
             "none: torch sees no CUDA device, so this run has CPU figures only"],
            ["torch", f"{m['torch']}, {m['torch_threads']} threads by default (a bench may set its own; its "
                      "section says)"],
            ["Python, OS", f"{m['python']}, {m['os']}"],
            ["load average (1 min)", f"{fmt(m.get('load'))} at the start, {fmt(meta.get('load_after'))} at the end"]]
    return ["## Machine", "", *table(["what", "this run"], rows, ["---", "---"]), "",
            "The load average counts every runnable process: about 2 is a benchmark's own two threads, more means "
            "other work shared the CPU; each section gives the load around its own run."]


def summary_section(benches: list[str], records: list[dict[str, Any]], meta: dict[str, Any]) -> list[str]:
    devices = sorted({r["device"] for r in records}, key=lambda d: (d != "cpu", d)) or ["cpu"]
    cols = ["benchmark", "compares", "case", *(f"ratio ({DEVICE_NAMES.get(d, d)})" for d in devices),
            "target", "met"]
    rows: list[list[Any]] = []
    not_run = []
    for bench in benches:
        title = title_of(bench, records, meta)
        link = f"[{title}](#{slug(title)})"
        by_device = {r["device"]: r for r in records if r["bench"] == bench}
        if not by_device:
            not_run.append(f"`bench_{bench}.py`")
            continue
        keyed: dict[tuple[str, str], dict[str, dict]] = {}
        for device, rec in by_device.items():
            for ratio in (rec.get("result") or {}).get("ratios", []):
                if ratio.get("summary", True):
                    keyed.setdefault((ratio["label"], ratio["case"]), {})[device] = ratio
        if not keyed:
            status = "; ".join(f"{DEVICE_NAMES.get(d, d)}: {status_text(r)}" for d, r in by_device.items())
            parsed = [f"{r['parsed_ratio']:.2f}× (from its printout)" if r.get("parsed_ratio") else "-"
                      for r in (by_device.get(d) or {} for d in devices)]
            rows.append([link, status, "", *parsed, "-", "-"])
            continue
        for (label, case), per_device in keyed.items():
            first = next(iter(per_device.values()))
            mets = [f"{DEVICE_NAMES.get(d, d)} {met_text(r)}" if len(per_device) > 1 else met_text(r)
                    for d, r in per_device.items() if r.get("target")]
            rows.append([link, label, case,
                         *(f"**{ratio_text(per_device[d]['ratio'])}**" if d in per_device else
                           "CPU only" if d != "cpu" and bench in meta.get("cpu_only", []) else
                           "failed" if by_device.get(d, {}).get("status") not in (None, "ok") else "-"
                           for d in devices),
                         target_text(first.get("target")), "; ".join(mets) or "-"])
    align = ["---", "---", "---", *["---:"] * len(devices), "---", "---"]
    out = ["## Summary", "", *table(cols, rows, align), "",
           "Ratios are oriented so that above 1× means ours is better (faster, or less memory)."]
    if not_run:
        out += ["", f"Not run in this run: {', '.join(not_run)} (`{COMMAND} --resume --only NAME` adds one)."]
    return out


def status_text(rec: dict[str, Any]) -> str:
    status = rec.get("status")
    if status == "ok":
        return "ok"
    if status == "no-json":
        return "ran, but wrote no JSON result"
    if status == "timeout":
        return "timed out"
    return f"failed (exit code {rec.get('returncode')})"


def bench_section(bench: str, records: list[dict[str, Any]], meta: dict[str, Any], notes: Path | None,
                  notes_anchors: set[str], page: Path) -> list[str]:
    title = title_of(bench, records, meta)
    mine = [r for r in records if r["bench"] == bench]
    result = next((r["result"] for r in mine if r.get("result")), None)
    script = f"bench/bench_{bench}.py"
    out = [f"## {title}", ""]
    if result:
        out += [f"`{script}`: {result['compares']}.", "", result["method"]]
    else:
        out += [f"`{script}`" + (f": {meta['docs'][bench]}" if meta.get("docs", {}).get(bench) else "")]
    preset = meta.get("presets", {}).get(bench)
    if preset and preset.get("why"):
        out += ["", f"Preset in `run_all.py`: {preset['why']}"]
    several = len(mine) > 1
    for rec in mine:
        device = DEVICE_NAMES.get(rec["device"], rec["device"])
        if several:
            gpu = ((rec.get("result") or {}).get("gpu") or {}).get("name")
            out += ["", f"### {title}: {device}" + (f" ({gpu})" if gpu else "")]
        out += ["", *device_part(rec)]
    if notes is not None and slug(title) in notes_anchors:
        out += ["", f"Notes and figures from earlier runs: [{title}]({rel(notes, page)}#{slug(title)})."]
    return out


def device_part(rec: dict[str, Any]) -> list[str]:
    res = rec.get("result")
    out: list[str] = []
    command = shown_command(res["command"]) if res else "python " + " ".join(rec.get("command", [])[1:])
    if rec.get("status") != "ok":
        status = status_text(rec)
        out += [f"**{status[0].upper() + status[1:]}** on {DEVICE_NAMES.get(rec['device'], rec['device'])} after "
                f"{fmt(rec.get('seconds'))} s: `{command}`."]
        if rec.get("parsed_ratio"):
            out += ["", f"Its printout ends with a ratio of {rec['parsed_ratio']:.2f}×."]
        tail = (rec.get("output_tail") or "").replace("```", "'''").rstrip()
        if tail:
            out += ["", "Last lines of its output:", "", "```text", tail, "```"]
        if rec.get("log"):
            out += ["", f"Full output: `{rec['log']}`."]
        if not res:
            return out
        out += [""]
    load = f"load average {fmt(res.get('load_before'))} → {fmt(res.get('load_after'))}"
    took = f"{res['seconds']:.0f} s" if res["seconds"] < 120 else f"{res['seconds'] / 60:.1f} min"
    out += [f"Command: `{command}`. Measured in {took}; {load}; torch "
            f"{res['torch_threads']} thread{'s' if res['torch_threads'] != 1 else ''}.", "",
            f"Settings: {settings_text(res['settings'])}."]
    if res["ratios"]:
        rows = [[r["label"], r["case"], f"{fmt(r['ours'])} {r['unit']}", f"{fmt(r['baseline'])} {r['unit']}",
                 f"**{ratio_text(r['ratio'])}**", target_text(r.get("target")), met_text(r)] for r in res["ratios"]]
        has_target = any(r.get("target") for r in res["ratios"])
        cols = ["compares", "case", "ours", "alternative", "ratio"] + (["target", "met"] if has_target else [])
        out += ["", *table(cols, [row[:len(cols)] for row in rows], ["---", "---", "---:", "---:", "---:", "---", "---"]
                           [:len(cols)])]
    for t in res.get("tables", []):
        out += [""] + ([f"{t['title']}:", ""] if t.get("title") else []) + table(t["columns"], t["rows"])
    if res.get("notes"):
        out += ["", *(f"- {note}" for note in res["notes"])]
    return out


def rel(target: Path, page: Path) -> str:
    return Path(os.path.relpath(target, page.parent)).as_posix()


def headings(markdown: Path) -> set[str]:
    return {slug(line[3:].strip()) for line in markdown.read_text().splitlines() if line.startswith("## ")}


def render(run_dir: Path, page: Path, notes: Path | None = None) -> str:
    """The whole page for the run in `run_dir`, written as if it were at `page`."""
    meta, records = load_records(run_dir)
    benches = list(meta.get("benches") or dict.fromkeys(r["bench"] for r in records))
    benches += [b for b in dict.fromkeys(r["bench"] for r in records) if b not in benches]
    notes = notes if notes is not None and notes.is_file() else None
    anchors = headings(notes) if notes else set()
    out = header(meta, run_dir, page, notes)
    out += ["", *machine_section(meta), "", *summary_section(benches, records, meta)]
    for bench in benches:
        if any(r["bench"] == bench for r in records):
            out += ["", *bench_section(bench, records, meta, notes, anchors, page)]
    return "\n".join(out).rstrip() + "\n"
