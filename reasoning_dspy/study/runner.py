"""Run the study stage by stage; every stage writes its results atomically and is skipped when they
are already there, so an interrupted run continues where it stopped.

    traces -> activations -> SAE -> ReasonScore -> conditions -> steered generations -> report

Every generation goes through a `SteeredLM`, with each condition's steering passed per call as
DSPy metadata, so the study measures exactly what a DSPy user of the library gets. The program is
`dspy.ChainOfThought(signatures.WordProblem)` (or `Predict`), or, for models too small to follow
DSPy's field format, `chat`: the question and `CHAT_SUFFIX` as one user message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from reasoning_dspy._io import atomic_write_json, atomic_write_text
from reasoning_dspy.study.conditions import Condition, build_conditions
from reasoning_dspy.study.config import StudyConfig, StudyConfigError

console = Console(stderr=True)

#: Problems generated between two atomic saves of a condition's results.
CHUNK = 64


def _stable_id(*parts: Any) -> str:
    from reasoning_dspy.tracking.records import stable_id

    return stable_id(*parts)


def default_layer(n_layers: int) -> int:
    """60% of the depth: the paper steers layer 19 of DeepSeek-R1-Distill-Llama-8B's 32."""
    return round(0.6 * n_layers)


class Study:
    """The state shared by the stages: config, output folder, model, problems."""

    def __init__(self, cfg: StudyConfig, *, progress: bool = True):
        from reasoning_dspy.models import load_model
        from reasoning_dspy.problems import make_problems

        self.cfg = cfg
        self.out = Path(cfg.out)
        self.progress = progress
        self._check_out()  # everything is checked before the folder or its config.json is written
        self.loaded = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
        spec = self.loaded.model_spec
        try:
            self.layer = spec.check_layer(cfg.layer) if cfg.layer is not None else default_layer(spec.n_layers)
        except IndexError as err:
            raise StudyConfigError(f"layer: {err}") from None
        self.train = make_problems(cfg.n_train, split="train", seed=cfg.seed, difficulty=cfg.difficulty,
                                   families=cfg.families)
        self.test = make_problems(cfg.n_test, split="test", seed=cfg.seed, difficulty=cfg.difficulty,
                                  families=cfg.families)
        self.tracker = self._open_tracker()
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / "config.json", cfg.model_dump(exclude={"tracking"}))  # not where it is tracked
        self.run_id = self.tracker.start_run(self.out.name, kind="study", config=cfg.model_dump(exclude={"tracking"}),
                                             folder=self.out, run_id=_stable_id("study", self.out.resolve()))
        self.sae: Any = None
        self.scores: Any = None
        self.conditions: list[Condition] = []

    def _check_out(self) -> None:
        """Refuse an output folder that cannot be written, or that holds another study (only where and
        how fast may change)."""
        from reasoning_dspy._io import NotWritableError, check_writable

        try:
            check_writable(self.out, "the study's out folder")
        except NotWritableError as err:
            raise StudyConfigError(f"out: {err}") from None
        path = self.out / "config.json"
        mine = self.cfg.model_dump(exclude={"out", "device", "batch_size", "bootstrap_resamples", "confidence",
                                            "tracking"})
        if path.is_file():
            theirs = json.loads(path.read_text())
            # a setting its config.json does not name is one the study ran with at its default
            defaults = type(self.cfg).model_construct().model_dump()
            changed = sorted(k for k in mine if theirs.get(k, defaults.get(k)) != mine[k])
            if changed:
                raise StudyConfigError(
                    f"{str(self.out)!r} holds a study with different settings ({', '.join(changed)}); "
                    "resume it with the same config, or pass another out="
                )

    def _open_tracker(self) -> Any:
        """The study's tracker (journal OUT/tracking.jsonl; database: the config's, else $DATABASE_URL,
        else a SQLite file beside OUT); a database it cannot use stops the study here."""
        from reasoning_dspy.tracking import Tracker, TrackingError

        try:
            return Tracker.open(self.out / "tracking.jsonl", config=self.cfg.tracking,
                                default_sqlite=self.out.parent / "tracking.sqlite")
        except TrackingError as err:
            raise StudyConfigError(f"tracking: {err}") from None

    def track(self, label: str, rows: Sequence[dict], problems: Sequence[Any], steering: Any) -> None:
        """Record generated rows: prompt, answer, steering, reasoning activation, correctness, and the
        SAE features most active over the answer (stable ids: a resumed study records each once)."""
        index = {p.id: i for i, p in enumerate(problems)}
        spec = steering.model_dump(mode="json") if hasattr(steering, "model_dump") else steering
        for r in rows:
            self.tracker.log_generation(
                self.run_id, r["question"], r["text"], label=label, index=index[r["id"]], steering=spec,
                reasoning_activation=r.get("features_mean"), correct=float(r["correct"]), tokens=r["n_tokens"],
                features={int(f): float(v) for f, v in r.get("top_features") or []},
                extra={"problem": r["id"], "instruction": r.get("instruction", self.cfg.instruction),
                       "parsed": r["parsed"], "answer": r["answer"]})

    # -- generation through DSPy -----------------------------------------------------------------
    def lm(self, **kwargs: Any) -> Any:
        from reasoning_dspy.program.lm import SteeredLM

        return SteeredLM(self.loaded, max_tokens=self.cfg.max_tokens, cache=False,
                         max_batch_size=self.cfg.batch_size, **kwargs)

    def generate(self, lm: Any, problems: Sequence[Any], steering: Any, path: Path, desc: str,
                 instructions: Sequence[str | None] | None = None) -> list[dict]:
        """Answer `problems` with the study's program on `lm` under `steering`, saving rows to `path`
        every `CHUNK` problems; rows already in `path` are kept, not generated again. `instructions`
        are dealt to the problems in turn (default: the study's one instruction)."""
        from tqdm.auto import tqdm

        from reasoning_dspy.program.evaluation import solve

        rows = _read_jsonl(path)
        done = {r["id"] for r in rows}
        todo = [p for p in problems if p.id not in done]
        instructions = list(instructions or [self.cfg.instruction])
        dealt = {p.id: instructions[i % len(instructions)] for i, p in enumerate(problems)}
        bar = tqdm(total=len(problems), initial=len(rows), desc=desc, disable=not self.progress, unit="problem")
        for instruction in instructions:
            mine = [p for p in todo if dealt[p.id] == instruction]
            for start in range(0, len(mine), CHUNK):
                batch = solve(lm, mine[start:start + CHUNK], program=self.cfg.program, instruction=instruction,
                              steering=steering, threads=self.cfg.batch_size, on_done=bar.update)
                rows += [{**r, "instruction": instruction} for r in batch] if len(instructions) > 1 else batch
                _write_jsonl(path, rows)
                self.track(desc, rows[-len(batch):], problems, steering)
        bar.close()
        order = {p.id: i for i, p in enumerate(problems)}
        return sorted((r for r in rows if r["id"] in order), key=lambda r: order[r["id"]])

    # -- stages ----------------------------------------------------------------------------------
    def stage_traces(self) -> None:
        """Unsteered chain-of-thought traces on the training problems: the text the SAE learns from."""
        lm = self.lm()
        try:
            self.traces = self.generate(lm, self.train, None, self.out / "traces.jsonl", "training traces",
                                        self.cfg.trace_instructions)
        finally:
            _close(lm)

    def stage_activations(self) -> None:
        from reasoning_dspy.activations import extract_activations
        from reasoning_dspy.prompts import load_prompts

        texts = [f"{r['question']}\n{r['text']}" for r in self.traces if r["text"].strip()]
        for source in self.cfg.extra_texts:
            texts += load_prompts(source)
        self.cache = extract_activations(
            self.loaded.model, self.loaded.tokenizer, texts, self.layer, self.out / "activations",
            model_name=self.loaded.model_spec.name, dtype="float32", max_length=384, progress=self.progress)
        console.print(f"{self.cache!r}")

    def stage_sae(self) -> None:
        from reasoning_dspy.sae import load_sae
        from reasoning_dspy.sae.train import CONFIG_FILE, train_sae

        folder = self.out / "sae"
        if (folder / CONFIG_FILE).is_file():
            self.sae = load_sae(folder)
        else:
            cfg = self.cfg.sae_config(cache=str(self.cache.path), out=str(folder))
            self.sae = train_sae(cfg, self.cache, progress=self.progress).sae
        self.sae_summary = json.loads((folder / CONFIG_FILE).read_text())
        final = self.sae_summary.get("final_eval", {})
        console.print(f"SAE: {self.sae_summary.get('tokens')} training tokens; "
                      + ", ".join(f"{k} {v:.4g}" for k, v in final.items() if isinstance(v, float)))

    def stage_scores(self) -> None:
        from reasoning_dspy.features.analysis import analyze_features, write_analysis
        from reasoning_dspy.features.reasonscore import FeatureScores, score_features

        folder = self.out / "scores"
        if (folder / "top_features.json").is_file():
            self.scores = FeatureScores.load(folder)
        else:
            tokenizer = self.loaded.tokenizer
            self.scores = score_features(self.cache, self.sae, tokenizer=tokenizer, top_n=20, progress=self.progress)
            self.scores.save(folder)
            reports = analyze_features(self.cache, self.sae, self.scores, tokenizer=tokenizer, n_features=20,
                                       n_contexts=3, progress=self.progress)
            write_analysis(folder, self.scores, reports)
            atomic_write_json(folder / "top_features.json", [_feature_row(r) for r in reports])
        self.top_features = json.loads((folder / "top_features.json").read_text())

    def stage_conditions(self) -> None:
        path = self.out / "conditions.json"
        if path.is_file():
            self.conditions = [Condition.from_dict(c) for c in json.loads(path.read_text())]
            return
        c = self.cfg
        self.conditions = build_conditions(self.scores, top_features=c.top_features, strengths=c.strengths,
                                           negative_strengths=c.negative_strengths, random_sets=c.random_sets,
                                           density_cap=c.density_cap, seed=c.seed)
        atomic_write_json(path, [x.to_dict() for x in self.conditions])

    def stage_steer(self) -> None:
        """Every condition on the test problems, `CHUNK` problems at a time in turn: an interrupted
        study has every condition measured on the same problems so far, and `partial_summary.json`
        says what they show (the final `summary.json` replaces it)."""
        top = next(c.features for c in self.conditions if c.kind == "top")
        lm = self.lm(sae=self.sae, max_activation=self.scores, capture=True, reasoning_features=list(top))
        self.generations: dict[str, list[dict]] = {}
        try:
            for end in range(CHUNK, len(self.test) + CHUNK, CHUNK):
                for condition in self.conditions:
                    steering = condition.steering(self.cfg.units, self.layer, **self.cfg.steer_window)
                    path = self.out / "generations" / f"{condition.name}.jsonl"
                    self.generations[condition.name] = self.generate(lm, self.test[:end], steering, path,
                                                                     condition.name)
                if end < len(self.test):
                    self.summarize(self.out / "partial_summary.json")
        finally:
            _close(lm)

    def summarize(self, path: Path) -> dict[str, Any]:
        """The conditions' measures with intervals, over the problems every condition has answered."""
        from reasoning_dspy.study.report import summarize

        summary = summarize(self.conditions, self.generations, n_resamples=self.cfg.bootstrap_resamples,
                            confidence=self.cfg.confidence, seed=self.cfg.seed)
        atomic_write_json(path, summary)
        return summary

    def stage_report(self) -> None:
        from reasoning_dspy.study.report import write_report

        summary = self.summarize(self.out / "summary.json")
        (self.out / "partial_summary.json").unlink(missing_ok=True)
        md, page = write_report(self, summary)
        console.print(f"report: [bold]{page}[/] (open it in a browser; Markdown: {md})")

    STAGES = ("traces", "activations", "sae", "scores", "conditions", "steer", "report")

    def run(self) -> Path:
        finished = False
        try:
            for name in self.STAGES:
                console.rule(f"[bold]{name}")
                start = time.perf_counter()
                getattr(self, f"stage_{name}")()
                console.print(f"[dim]{name} took {time.perf_counter() - start:.1f}s[/]")
            finished = True
        finally:
            self.tracker.finish_run(self.run_id, status="finished" if finished else "stopped",
                                    result={"report": str(self.out / "report.md")} if finished else None)
            self.tracker.close()
        return self.out / "report.md"


def run_study(cfg: StudyConfig, *, progress: bool = True) -> Path:
    """Run (or resume) the study `cfg` describes; returns the path of `report.md`."""
    return Study(cfg, progress=progress).run()



def _feature_row(report: Any) -> dict:
    return {"index": report.index, "rank": report.rank, "score": report.score, "density": report.density,
            "max_activation": report.max_activation, "top_words": [w for w, _ in report.top_words[:5]],
            "contexts": [c.text for c in report.contexts]}


def _close(lm: Any) -> None:
    from reasoning_dspy.program.lm import engine_of

    engine_of(lm).close()


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
