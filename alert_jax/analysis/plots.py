"""The report's three figures, each written as a PNG whose path is returned.

Figures are drawn on explicit `Figure` objects with the Agg canvas rather than through pyplot, so
plotting works headless (CI, TPU hosts) and never changes the process-wide backend of a caller's
notebook or GUI session.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alert_jax.analysis.gains import GainPoint
from alert_jax.metrics.aggregate import GroupScore, System, TaskScore


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def _legend(axes: Any) -> None:
    # Outside the axes: with many systems an inside legend hides bars and points.
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _systems(items: Iterable[GroupScore | TaskScore]) -> list[System]:
    return sorted({item.system for item in items}, key=System.sort_key)


def plot_skill_bars(skill_scores: Sequence[GroupScore], path: Path, metric_label: str = "ROUGE-L") -> Path:
    """Grouped bars: one group per skill, one bar per system, height = mean over tasks of the best template."""
    systems = _systems(skill_scores)
    skills = sorted({s.group for s in skill_scores})
    value = {(s.system, s.group): s.best for s in skill_scores}
    width = 0.8 / max(len(systems), 1)
    figure = _new_figure(max(6.0, 0.9 * len(skills) * max(len(systems), 1) ** 0.5), 4.0)
    axes = figure.add_subplot()
    for i, system in enumerate(systems):
        present = [(k, value[(system, skill)]) for k, skill in enumerate(skills) if (system, skill) in value]
        shift = (i - (len(systems) - 1) / 2) * width
        axes.bar([k + shift for k, _ in present], [v for _, v in present], width=width, label=system.label)
    axes.set_xticks(range(len(skills)), skills, rotation=30, ha="right")
    axes.set_ylabel(f"{metric_label} (best template)")
    axes.set_title("Per-skill scores")
    _legend(axes)
    return _save(figure, path)


def plot_overlap_vs_gain(points: Iterable[GainPoint], path: Path) -> Path:
    """Scatter of per-task gain (y) against the task's vocabulary overlap with finetuning (x).

    One series per model, size and delta (`GainPoint.heading`).
    """
    series: dict[str, tuple[list[float], list[float]]] = {}
    for point in points:
        xs, ys = series.setdefault(point.heading, ([], []))
        xs.append(point.overlap)
        ys.append(point.gain)
    figure = _new_figure(6.0, 4.0)
    axes = figure.add_subplot()
    for label, (xs, ys) in series.items():
        axes.scatter(xs, ys, label=label)
    axes.axhline(0.0, color="grey", linewidth=0.8)
    axes.set_xlabel("vocabulary overlap with finetuning corpus")
    axes.set_ylabel("gain (best template)")
    axes.set_title("Overlap vs gain per task")
    if series:
        _legend(axes)
    return _save(figure, path)


def plot_template_spread(task_scores: Sequence[TaskScore], path: Path, metric_label: str = "ROUGE-L") -> Path:
    """Per task and system, every template's score as a dot on a min–max line: the spread over T1–T5."""
    systems = _systems(task_scores)
    tasks = sorted({t.task for t in task_scores})
    offset = 0.8 / max(len(systems), 1)
    figure = _new_figure(max(6.0, 0.5 * len(tasks) * max(len(systems), 1) ** 0.5), 4.5)
    axes = figure.add_subplot()
    for i, system in enumerate(systems):
        mine = [t for t in task_scores if t.system == system]
        color = f"C{i % 10}"
        for t in mine:
            x = tasks.index(t.task) + (i - (len(systems) - 1) / 2) * offset
            axes.vlines(x, min(t.values), max(t.values), color=color)
            axes.scatter([x] * len(t.values), t.values, color=color, s=10)
        axes.scatter([], [], color=color, label=system.label)
    axes.set_xticks(range(len(tasks)), tasks, rotation=60, ha="right", fontsize="small")
    axes.set_ylabel(f"{metric_label} per template")
    axes.set_title("Template spread (T1–T5)")
    _legend(axes)
    return _save(figure, path)
