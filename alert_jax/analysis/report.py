"""`alert-jax report`: scores of one or more runs → ALERT-style markdown report, CSVs and figures.

Each run dir holds a `scores.jsonl` (one row per model × task × template, possibly of several
models and variants) and optionally an `overlap.json` (task → vocabulary-overlap fraction, see
`analysis.overlap`). ROUGE-L is the headline metric as in the paper; exact, relaxed and contains match
get their own per-skill tables and all metrics go to the CSVs.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from alert_jax.analysis.assessment import ASSESSMENT_FILE, assessment_section, load_assessment
from alert_jax.analysis.compare import ALL_TASKS, overall, scaling_deltas, variant_deltas
from alert_jax.analysis.gains import GainPoint, gain_correlations, gain_points
from alert_jax.analysis.memorisation import template_gaps
from alert_jax.analysis.overlap import experiment_overlap
from alert_jax.config import load_config
from alert_jax.data.templates import FINETUNE_TEMPLATE
from alert_jax.analysis.sensitivity import skill_sensitivity, task_sensitivity
from alert_jax.analysis.tables import fmt, grid_table, markdown_table, write_csv
from alert_jax.errors import AlertJaxError
from alert_jax.untrusted_json import decode_utf8, os_errors_as, parse_json, read_json
from alert_jax.metrics.aggregate import (
    SPLIT_ORDER, VARIANT_ORDER, GroupScore, ScoreRow, ScoreRowError, System, TaskScore,
    order_key, per_skill, per_split, per_task,
)
from alert_jax.metrics.scores import METRICS

HEADLINE = "rouge_l"
METRIC_LABELS = {"rouge_l": "ROUGE-L", "exact_match": "Exact match", "relaxed_match": "Relaxed match",
                 "contains_match": "Contains match"}
SCORES_FILE = "scores.jsonl"
OVERLAP_FILE = "overlap.json"
TRAINING_CONFIG = "config.yaml"  # what a training workdir keeps of its run (alert_jax.workdir.RunDir.config)

logger = logging.getLogger(__name__)


class ReportInputError(AlertJaxError):
    """A run dir, scores file or overlap file cannot be read; the message names the file (and line or key)."""


def load_scores(path: Path) -> list[ScoreRow]:
    """Rows of one `scores.jsonl`; blank lines are skipped, any other bad line is an error at file:line."""
    with os_errors_as(ReportInputError, path):
        data = path.read_bytes()
    text = decode_utf8(data, path, ReportInputError)
    rows = []
    # Split on "\n" only: JSON strings may legally hold U+2028 and friends, which str.splitlines breaks on.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(ScoreRow.from_dict(parse_json(line, path, ReportInputError, line=number)))
        except ScoreRowError as error:
            raise ReportInputError(f"{path}:{number}: {error}") from error
    return rows


def load_overlap(path: Path) -> dict[str, float]:
    """An `overlap.json`: a JSON object mapping task name → overlap fraction in [0, 1]."""
    data = read_json(path, ReportInputError)
    if not isinstance(data, dict):
        raise ReportInputError(f"{path}: must be a JSON object mapping task → overlap fraction")
    for task, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ReportInputError(f"{path}: key {task!r}: overlap must be a number in [0, 1], got {value!r}")
    return {task: float(value) for task, value in data.items()}


def _read_runs(run_dirs: Sequence[Path]) -> tuple[list[ScoreRow], dict[str, float]]:
    rows: list[ScoreRow] = []
    overlap: dict[str, float] = {}
    for run_dir in map(Path, run_dirs):
        scores = run_dir / SCORES_FILE
        if not scores.is_file():
            raise ReportInputError(f"{run_dir}: no {SCORES_FILE} in this run dir")
        rows += load_scores(scores)
        if (run_dir / OVERLAP_FILE).is_file():
            for task, value in load_overlap(run_dir / OVERLAP_FILE).items():
                if overlap.setdefault(task, value) != value:
                    raise ReportInputError(f"{run_dir / OVERLAP_FILE}: key {task!r}: conflicts with another "
                                           f"run's overlap {overlap[task]!r}")
    if not rows:
        raise ReportInputError(f"no score rows in {', '.join(str(d) for d in run_dirs) or 'no run dirs'}")
    return rows, overlap


def _read_assessments(run_dirs: Sequence[Path]) -> dict[str, dict[str, float]]:
    """label → assessment measure from the runs' `assessment.json` files (later runs win)."""
    entries: dict[str, dict[str, float]] = {}
    for run_dir in map(Path, run_dirs):
        if (run_dir / ASSESSMENT_FILE).is_file():
            entries.update(load_assessment(run_dir / ASSESSMENT_FILE))
    return entries


def _columns(systems: Sequence[System]) -> list[tuple[System, str]]:
    return [(system, system.label) for system in systems]


_MAX_AND_MEAN = (("best", "max over templates"), ("mean", "mean over templates"))


def _max_and_mean_tables(title: str, items: Sequence[GroupScore | TaskScore], group_of: Callable[[Any], str],
                         keys: Sequence[str], systems: Sequence[System], corner: str,
                         row_labels: Mapping[str, Sequence[str]] | None = None,
                         label_header: Sequence[str] = ()) -> str:
    sections = []
    for field, what in _MAX_AND_MEAN:
        values = {(item.system, group_of(item)): getattr(item, field) for item in items}
        sections.append(f"### {title} — {what}\n\n"
                        + grid_table(corner, keys, _columns(systems), values, row_labels, label_header))
    return "\n".join(sections)


def _group_tables(title: str, scores: Sequence[GroupScore], systems: Sequence[System],
                  corner: str, order: Sequence[str]) -> str:
    keys = sorted({s.group for s in scores}, key=lambda group: order_key(group, order))
    return _max_and_mean_tables(title, scores, lambda s: s.group, keys, systems, corner)


def _task_tables(title: str, tasks: Sequence[TaskScore], systems: Sequence[System]) -> str:
    labels = {t.task: (t.skill, t.split) for t in tasks}
    keys = sorted(labels, key=lambda task: (labels[task][0], order_key(labels[task][1], SPLIT_ORDER), task))
    return _max_and_mean_tables(title, tasks, lambda t: t.task, keys, systems, "task", labels, ("skill", "split"))


def _delta_section(skills: Sequence[GroupScore], tasks: Sequence[TaskScore]) -> str:
    values = {(s.system, s.group): s.best for s in skills}
    values |= {(s.system, s.group): s.best for s in overall(tasks)}
    deltas = variant_deltas(values)
    if not deltas:
        return "No two variants of the same model and size to compare.\n"
    columns = list(dict.fromkeys((d.heading, d.heading) for d in deltas))
    keys = sorted({s.group for s in skills}) + [ALL_TASKS]
    return grid_table("skill", keys, columns, {(d.heading, d.group): d.value for d in deltas})


def _scaling_section(tasks: Sequence[TaskScore]) -> str:
    scores = overall(tasks)
    deltas = scaling_deltas(tasks)
    bases = list(dict.fromkeys(s.system.base_label for s in scores))
    variants = sorted({s.system.variant for s in scores}, key=lambda v: order_key(v, VARIANT_ORDER))
    columns = [(v, v) for v in variants] + list(dict.fromkeys((d.label, d.label) for d in deltas))
    values = {(s.system.variant, s.system.base_label): s.best for s in scores}
    values |= {(d.label, d.minuend.base_label): d.value for d in deltas}
    return grid_table("model", bases, columns, values)


def _sensitivity_tables(tasks: Sequence[TaskScore], systems: Sequence[System]) -> str:
    by_skill = skill_sensitivity(tasks)
    keys = sorted({s.group for s in by_skill})
    sections = []
    for field, what in (("std", "std over templates"), ("spread", "max − min over templates")):
        values = {(s.system, s.group): getattr(s, field) for s in by_skill}
        sections.append(f"### Template sensitivity — {what} (mean over the skill's tasks)\n\n"
                        + grid_table("skill", keys, _columns(systems), values))
    return "\n".join(sections)


def _write_csvs(by_metric: Mapping[str, list[TaskScore]], out_dir: Path) -> None:
    templates = sorted({name for tasks in by_metric.values() for t in tasks for name, _ in t.by_template})
    task_rows: list[list[Any]] = []
    skill_rows: list[list[Any]] = []
    for metric, tasks in by_metric.items():
        for t, s in zip(tasks, task_sensitivity(tasks)):
            scores = dict(t.by_template)
            task_rows.append([t.system.model, t.system.size, t.system.variant, t.system.label, t.task, t.skill,
                              t.split, metric, t.best, t.mean, s.std, s.spread,
                              *(scores.get(name, "") for name in templates)])
        for g, s in zip(per_skill(tasks), skill_sensitivity(tasks)):
            skill_rows.append([g.system.model, g.system.size, g.system.variant, g.system.label, g.group, metric,
                               g.best, g.mean, s.std, s.spread, g.n_tasks])
    write_csv(out_dir / "per_task.csv",
              ["model", "size", "variant", "system", "task", "skill", "split", "metric", "best", "mean",
               "template_std", "template_spread", *templates], task_rows)
    write_csv(out_dir / "per_skill.csv",
              ["model", "size", "variant", "system", "skill", "metric", "best", "mean", "template_std",
               "template_spread", "n_tasks"], skill_rows)


def _figures(tasks: Sequence[TaskScore], skills: Sequence[GroupScore], points: Sequence[GainPoint],
             out_dir: Path) -> list[Path]:
    # Imported here so that `register` (called by the CLI for every command) does not load matplotlib.
    from alert_jax.analysis import plots

    paths = [plots.plot_skill_bars(skills, out_dir / "skill_bars.png"),
             plots.plot_template_spread(tasks, out_dir / "template_spread.png")]
    if points:
        paths.append(plots.plot_overlap_vs_gain(points, out_dir / "overlap_vs_gain.png"))
    return paths


def training_config_of(run_dir: Path) -> Optional[Path]:
    """The training config behind an evaluated run: RUN/config.yaml, or that of the training workdir whose
    `eval/` the run dir is; None when neither exists."""
    for candidate in (run_dir / TRAINING_CONFIG, run_dir.parent / TRAINING_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def variant_overlaps(configs: Sequence[Path], discovered: Sequence[Path] = ()) -> dict[str, dict[str, float]]:
    """Variant → task → overlap between that variant's finetuning text and each evaluation task.

    `configs` are experiment YAMLs or training workdirs given explicitly (an unreadable one is an error);
    `discovered` are the run dirs' own training configs, skipped with a warning when their data cannot be read
    here (a run trained elsewhere). Two configs of one variant (seeds) must train on the same text.
    """
    overlaps: dict[str, dict[str, float]] = {}
    origin: dict[str, Path] = {}
    for path, explicit in [*((Path(p), True) for p in configs), *((Path(p), False) for p in discovered)]:
        path = path / TRAINING_CONFIG if path.is_dir() else path
        try:
            cfg = load_config(path)
            overlap = experiment_overlap(cfg)
        except AlertJaxError as error:
            if explicit:
                raise ReportInputError(f"--finetune-config {path}: {error}") from error
            logger.warning("%s: no vocabulary overlap from this run's config: %s", path, error)
            continue
        variant = cfg.data.variant
        if overlaps.setdefault(variant, overlap) != overlap:
            raise ReportInputError(f"{path}: variant {variant!r} finetunes on other text than {origin[variant]}; "
                                   "report the two separately")
        origin.setdefault(variant, path)
    return overlaps


def _gain_section(points: Sequence[GainPoint], variant_overlap: Mapping[str, Mapping[str, float]]) -> str:
    if not points:
        return ("No vocabulary overlap for the evaluated tasks (no `overlap.json`, no training config), "
                "so no overlap-vs-gain figure.\n")
    correlations = gain_correlations(points)
    table = markdown_table(["gain", "tasks", "Pearson r", "Spearman r"],
                           [[c.heading, c.n_tasks, fmt(c.pearson), fmt(c.spearman)] for c in correlations])
    parts = [table]
    if variant_overlap:
        tasks = sorted({task for overlap in variant_overlap.values() for task in overlap})
        variants = sorted(variant_overlap, key=lambda v: order_key(v, VARIANT_ORDER))
        values = {(v, task): 100 * value for v in variants for task, value in variant_overlap[v].items()}
        parts.append("Vocabulary overlap (% of each task's word types seen in the variant's finetuning text):\n\n"
                     + grid_table("task", tasks, [(v, v) for v in variants], values))
    return "\n".join(parts)


def _memorisation_section(tasks: Sequence[TaskScore]) -> str:
    gaps = template_gaps(tasks)
    if not gaps:
        return f"No system was evaluated under {FINETUNE_TEMPLATE} and another template.\n"
    rows = [[g.system.label, fmt(g.seen), fmt(g.unseen), fmt(g.gap), g.n_tasks] for g in gaps]
    return markdown_table(["system", f"{FINETUNE_TEMPLATE} (finetuning template)", "other templates (mean)",
                           "difference", "tasks"], rows)


def write_report(run_dirs: Sequence[Path], out_dir: Path, overlap: Mapping[str, float] | None = None,
                 finetune_configs: Sequence[Path] = ()) -> Path:
    """Write `report.md`, `per_task.csv`, `per_skill.csv`, `overlap_gain.csv` and the PNGs to `out_dir`; return
    the report path.

    A task's overlap for a finetuned variant comes from that variant's finetuning text — given by
    `finetune_configs` (experiment YAMLs or training workdirs) or found as a run dir's training config
    (`training_config_of`) — else from `overlap` (task → fraction), else from the runs' `overlap.json` files;
    without any, the overlap-vs-gain figure and correlations are left out.
    """
    out_dir = Path(out_dir)
    rows, run_overlap = _read_runs(run_dirs)
    overlap = {**run_overlap, **(overlap or {})}
    discovered = list(dict.fromkeys(p for p in map(training_config_of, map(Path, run_dirs)) if p is not None))
    variant_overlap = variant_overlaps(finetune_configs, discovered)
    try:
        by_metric = {metric: per_task(rows, metric) for metric in METRICS}
        by_metric = {metric: tasks for metric, tasks in by_metric.items() if tasks}  # old rows lack later metrics
    except ScoreRowError as error:
        raise ReportInputError(f"{', '.join(str(Path(d) / SCORES_FILE) for d in run_dirs)}: {error}") from error
    tasks = by_metric[HEADLINE]
    systems = sorted({t.system for t in tasks}, key=System.sort_key)
    skills = per_skill(tasks)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csvs(by_metric, out_dir)
    points = gain_points(tasks, overlap, variant_overlap)
    write_csv(out_dir / "overlap_gain.csv", ["gain", "task", "overlap", "gain_rouge_l"],
              [[p.heading, p.task, p.overlap, p.gain] for p in points])
    figures = _figures(tasks, skills, points, out_dir)

    headline = METRIC_LABELS[HEADLINE]
    summary = {(s.system, f"{METRIC_LABELS[m]} {name}"): getattr(s, field)
               for m in by_metric for s in overall(by_metric[m]) for field, name in (("best", "max"), ("mean", "mean"))}
    parts = [
        "# ALERT-style evaluation report\n",
        "Runs: " + ", ".join(f"`{d}`" for d in run_dirs) + f" ({len(rows)} score rows, {len(systems)} systems).\n",
        "Scores are on a 0–100 scale. A task's *max* is its best template (ALERT's score), its *mean* the "
        "mean over templates; a skill's or split's value is the mean over its tasks. "
        "\"–\" marks a system without that task or skill.\n",
        "## Summary (mean over all tasks)\n",
        grid_table("metric", list(dict.fromkeys(k for _, k in summary)), _columns(systems), summary),
        f"## Per skill ({headline})\n",
        _group_tables(f"Per skill ({headline})", skills, systems, "skill", ()),
        f"## Per task ({headline})\n",
        _task_tables(f"Per task ({headline})", tasks, systems),
        f"## In-domain vs held-out ({headline})\n",
        _group_tables(f"Per split ({headline})", per_split(tasks), systems, "split", SPLIT_ORDER),
        f"## Deltas between variants ({headline}, max over templates)\n",
        _delta_section(skills, tasks),
        f"## Scaling across sizes ({headline}, mean over tasks of max over templates)\n",
        _scaling_section(tasks),
        f"## Template sensitivity ({headline})\n",
        _sensitivity_tables(tasks, systems),
        *(f"## Per skill ({METRIC_LABELS[m]})\n\n"
          + _group_tables(f"Per skill ({METRIC_LABELS[m]})", per_skill(by_metric[m]), systems, "skill", ())
          for m in by_metric if m != HEADLINE),
        f"## Template memorisation ({headline}, finetuning template vs the others)\n",
        _memorisation_section(tasks),
        f"## Vocabulary overlap vs finetuning gain ({headline}, best template)\n",
        _gain_section(points, variant_overlap),
        "## Figures\n",
        "\n".join(f"![{p.stem}]({p.name})" for p in figures) + "\n",
    ]
    assessment = _read_assessments(run_dirs)
    if assessment:
        parts += ["## Assessment: pairwise ranking accuracy of sampled CoTs\n",
                  "How often a model scores a correct sampled chain of thought above a wrong one for the same "
                  "question (length-normalised log-likelihood; 0.5 = chance), see `alert_jax/analysis/assessment.py`.\n",
                  assessment_section(assessment)]
    report = out_dir / "report.md"
    report.write_text("\n".join(parts), encoding="utf-8")
    return report
