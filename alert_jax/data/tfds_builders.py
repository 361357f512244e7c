"""TFDS builders for the finetuning mix and the evaluation suites, over local files.

Both write array_record files, so the result is read by random access through
`tfds.data_source(...)` with no TensorFlow installed. Sources are read with the suite registry
(`suites.load_suite`) from a data root passed as TFDS's `manual_dir`; synthetic suite entries need
no files.

* `alert_finetune_mix` — configs `ft` and `cot` (targets: answer, or rationale + answer) over the
  suite's `finetune` entries; features `prompt`, `target`, `source` (the suite task), `id`; splits
  `train`/`validation` chosen by `splits.is_validation` — the same rule the trainer applies to raw
  files, so `data.tfds_dir` and raw files give a run the same rows. Prompts use
  `templates.FINETUNE_TEMPLATE`. The trainer reads a build through `load_finetune_split`.
* `alert_eval_suite` — one config per suite (named after it) over its non-finetune entries; one
  `test` split whose rows hold the template-independent fields of each instance plus its task,
  skill and suite split. Per-task fields (definition, demonstrations, categories, reasoning) are
  stored once, in the dataset's `metadata.json`, rather than repeated on every row. Absent
  rationales and answers are stored as "" and read back as None. `alert-jax evaluate` reads a build
  through `load_eval_tasks` when `eval.tfds_dir` is set.

Atomicity: TFDS writes into an `incomplete.*` directory but leaves the builder/config folders and a
`downloads/` folder behind when generation fails. We therefore build in a hidden sibling of
`out_dir` and swap the finished version directory into place (`alert_jax.atomic`); on any error
the temporary tree is removed and `out_dir` is left exactly as it was.
"""
from __future__ import annotations

from alert_jax.atomic import replace_dir
import dataclasses
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

import tensorflow_datasets as tfds

from alert_jax.data import suites, templates
from alert_jax.data.example import Demonstration, Example, Task
from alert_jax.data.splits import is_validation
from alert_jax.errors import AlertJaxError

Variant = Literal["ft", "cot"]
FINETUNE_BUILDER = "alert_finetune_mix"
EVAL_BUILDER = "alert_eval_suite"
EVAL_SPLIT = "test"
VERSION = "1.0.0"
DEFAULT_VALIDATION_PERCENT = 5
_MANUAL_INSTRUCTIONS = "Pass the data root (the folder suite paths are relative to) as manual_dir."


class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of builders that read only local files.

    TFDS looks up a builder's source file to find download checksums; ours download nothing, and
    that lookup needs `importlib_resources`, which TFDS imports lazily without declaring it.
    """

    VERSION = tfds.core.Version(VERSION)
    MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_INSTRUCTIONS
    code_path = None


class BuildError(AlertJaxError):
    """The suite yields nothing to build (e.g. every file skipped as missing)."""


def _suite_subset(suite_name: str, keep_finetune: bool) -> suites.Suite:
    suite = suites.load_suite(suite_name)
    entries = tuple(t for t in suite.tasks if (t.split == "finetune") == keep_finetune)
    return dataclasses.replace(suite, tasks=entries)


@dataclasses.dataclass
class FinetuneMixConfig(tfds.core.BuilderConfig):
    """Which target format and which suite's finetune entries."""

    variant: str = "ft"
    suite: str = "finetune_mix"
    validation_percent: int = DEFAULT_VALIDATION_PERCENT
    skip_missing: bool = False


class AlertFinetuneMix(_LocalBuilder):
    """(prompt, target) pairs of the finetuning corpus, FT or CoT."""

    BUILDER_CONFIGS = [FinetuneMixConfig(name="ft", variant="ft"), FinetuneMixConfig(name="cot", variant="cot")]

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text()
        return tfds.core.DatasetInfo(
            builder=self,
            description="ALERT finetuning mix rendered as prompt/target pairs.",
            features=tfds.features.FeaturesDict({"prompt": text, "target": text, "source": text, "id": text}),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        config: FinetuneMixConfig = self.builder_config
        suite = _suite_subset(config.suite, keep_finetune=True)
        loaded = suite.load_tasks(dl_manager.manual_dir, skip_missing=config.skip_missing)
        in_validation = [
            [is_validation(entry.task, example.input, config.validation_percent / 100) for example in task.examples]
            for entry, task in loaded
        ]
        sizes = {"validation": sum(map(sum, in_validation))}
        sizes["train"] = sum(map(len, in_validation)) - sizes["validation"]
        if not any(sizes.values()):
            raise BuildError(f"suite {config.suite!r} has no finetune examples to build")
        # TFDS cannot write an empty split; a split with no examples is simply absent.
        return {
            split: self._generate_examples(loaded, in_validation, split == "validation")
            for split in ("train", "validation")
            if sizes[split]
        }

    def _generate_examples(self, loaded, in_validation, validation: bool) -> Iterator[tuple[str, dict[str, str]]]:
        variant = self.builder_config.variant
        for entry_index, ((entry, task), flags) in enumerate(zip(loaded, in_validation)):
            for index, (example, flag) in enumerate(zip(task.examples, flags)):
                if flag != validation:
                    continue
                yield f"{entry_index:06d}/{index:08d}", {
                    "prompt": templates.render_prompt(templates.FINETUNE_TEMPLATE, task, example),
                    "target": templates.format_target(example, variant),
                    "source": entry.task,
                    "id": example.id,
                }


@dataclasses.dataclass
class EvalSuiteConfig(tfds.core.BuilderConfig):
    """Which suite (name or YAML path)."""

    suite: str = "alert"
    skip_missing: bool = False


class AlertEvalSuite(_LocalBuilder):
    """Instances of a suite's evaluation and dev tasks, template-independent."""

    BUILDER_CONFIGS = [EvalSuiteConfig(name="alert", suite="alert")]

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text()
        texts = tfds.features.Sequence(tfds.features.Text())
        features = {name: text for name in ("task", "skill", "split", "source", "input", "rationale", "answer", "id")}
        return tfds.core.DatasetInfo(
            builder=self,
            description="ALERT evaluation suite instances; task definitions live in the metadata.",
            features=tfds.features.FeaturesDict({**features, "references": texts, "choices": texts}),
            metadata=tfds.core.MetadataDict(),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        config: EvalSuiteConfig = self.builder_config
        suite = _suite_subset(config.suite, keep_finetune=False)
        loaded = suite.load_tasks(dl_manager.manual_dir, skip_missing=config.skip_missing)
        if not any(task.examples for _, task in loaded):
            raise BuildError(f"suite {config.suite!r} has no evaluation examples to build")
        self.info.metadata["tasks"] = [_task_header(entry, task) for entry, task in loaded]
        return {EVAL_SPLIT: self._generate_examples(loaded)}

    def _generate_examples(self, loaded) -> Iterator[tuple[str, dict[str, Any]]]:
        for entry_index, (entry, task) in enumerate(loaded):
            for index, example in enumerate(task.examples):
                yield f"{entry_index:06d}/{index:08d}", {
                    "task": task.name,
                    "skill": entry.skill,
                    "split": entry.split,
                    "source": example.source,
                    "input": example.input,
                    "references": list(example.references),
                    "rationale": example.rationale or "",
                    "answer": example.answer or "",
                    "choices": list(example.choices),
                    "id": example.id,
                }


def _task_header(entry: suites.SuiteTask, task: Task) -> dict[str, Any]:
    return {
        "task": task.name,
        "skill": entry.skill,
        "split": entry.split,
        "definition": task.definition,
        "demonstrations": [dataclasses.asdict(d) for d in task.demonstrations],
        "categories": list(task.categories),
        "reasoning": list(task.reasoning),
    }


def _check_data_root(suite: str, keep_finetune: bool, data_root: Optional[str | Path]) -> None:
    """Fail before building when file-backed entries have no data root to be found under."""
    needs_files = [t.task for t in _suite_subset(suite, keep_finetune).tasks if t.source != suites.SYNTHETIC_SOURCE]
    if data_root is None and needs_files:
        raise BuildError(f"suite {suite!r} reads files ({needs_files[0]}, ...): pass a data root")


def _config_name(text: str) -> str:
    """A TFDS-safe config name (suite names may be paths)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _build(builder_cls: type, config: tfds.core.BuilderConfig, data_root: Optional[Path], out_dir: Path) -> Path:
    """Build into a hidden sibling of `out_dir`, then move the version directory into place."""
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        manual_dir = Path(data_root) if data_root is not None else scratch  # synthetic-only suites
        builder = builder_cls(data_dir=str(scratch), config=config, file_format="array_record")
        builder.download_and_prepare(
            download_dir=str(scratch / "downloads"),
            download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)),
        )
        built = Path(builder.data_dir)
        final = out_dir / built.relative_to(scratch)
        replace_dir(built, final)  # a rebuild replaces the previous version only once the new one is complete
        return final
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def finetune_config_name(suite: str, variant: str) -> str:
    """The build's config name: the variant for the default suite (`ft`, `cot`), `<suite>-<variant>` otherwise, so
    mixes of different suites never overwrite each other."""
    return variant if suite == "finetune_mix" else _config_name(f"{Path(suite).stem}-{variant}")


def build_finetune_mix(
    data_root: str | Path | None,
    out_dir: str | Path,
    variant: Variant,
    suite: str = "finetune_mix",
    *,
    validation_percent: int = DEFAULT_VALIDATION_PERCENT,
    skip_missing: bool = False,
) -> Path:
    """Build `alert_finetune_mix/<finetune_config_name(suite, variant)>` under `out_dir` (a TFDS data_dir);
    returns the version dir."""
    if variant not in ("ft", "cot"):
        raise BuildError(f"variant must be 'ft' or 'cot', got {variant!r}")
    if isinstance(validation_percent, bool) or not isinstance(validation_percent, int) \
            or not 0 <= validation_percent <= 100:
        raise BuildError(f"--validation-percent {validation_percent!r}: expected an integer in [0, 100]")
    _check_data_root(suite, True, data_root)
    config = FinetuneMixConfig(
        name=finetune_config_name(suite, variant), variant=variant, suite=str(suite),
        validation_percent=validation_percent, skip_missing=skip_missing,
    )
    return _build(AlertFinetuneMix, config, data_root, out_dir)


def eval_config_name(suite: str) -> str:
    """The build's config name: the suite's name (the file stem of a suite given as a path)."""
    return _config_name(Path(suite).stem)


def build_eval_suite(
    data_root: str | Path | None, out_dir: str | Path, suite: str = "alert", *, skip_missing: bool = False
) -> Path:
    """Build `alert_eval_suite/<suite name>` under `out_dir`; returns the version dir."""
    _check_data_root(suite, False, data_root)
    config = EvalSuiteConfig(name=eval_config_name(suite), suite=str(suite), skip_missing=skip_missing)
    return _build(AlertEvalSuite, config, data_root, out_dir)


def _decode(value: Any) -> Any:
    """Text features come back as UTF-8 bytes (sequences of them as lists)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _data_source(out_dir: str | Path, builder: str, config: str, split: str):
    return tfds.data_source(f"{builder}/{config}", data_dir=str(out_dir), split=split, download=False)


def _split_names(out_dir: str | Path, builder: str, config: str) -> set[str]:
    """Splits a build holds (TFDS writes no empty split, so an empty one is absent); an error naming the
    directory when there is no such build."""
    version_dir = Path(out_dir) / builder / config / VERSION
    if not (version_dir / "dataset_info.json").exists():
        raise BuildError(f"{version_dir}: no {builder}/{config} build there (alert-jax data build --out {out_dir})")
    return set(tfds.builder_from_directory(str(version_dir)).info.splits)


def _decoded(source) -> list[dict[str, Any]]:
    return [{key: _decode(value) for key, value in record.items()} for record in source]


def load_built(out_dir: str | Path, builder: str, config: str, split: str) -> list[dict[str, Any]]:
    """All records of a built split, strings decoded, via `tfds.data_source` (no TensorFlow)."""
    return _decoded(_data_source(out_dir, builder, config, split))


def load_finetune_split(out_dir: str | Path, suite: str, variant: str, split: str) -> list[dict[str, str]]:
    """Records (`prompt`, `target`, `source`, `id`) of one split of a built finetuning mix, in build order
    (suite order, then file order); an empty list for a split the build holds nothing in."""
    config = finetune_config_name(suite, variant)
    if split not in _split_names(out_dir, FINETUNE_BUILDER, config):
        return []
    return load_built(out_dir, FINETUNE_BUILDER, config, split)


@dataclasses.dataclass(frozen=True)
class BuiltEvalTask:
    """A task read back from a built eval suite, with its suite assignment."""

    skill: str
    split: str
    task: Task


def load_eval_tasks(out_dir: str | Path, config: str) -> list[BuiltEvalTask]:
    """Rebuild the suite's `Task`s (in build order) from a built `alert_eval_suite/<config>`."""
    _split_names(out_dir, EVAL_BUILDER, config)  # a missing build is an error naming it
    source = _data_source(out_dir, EVAL_BUILDER, config, EVAL_SPLIT)
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in _decoded(source):
        rows.setdefault((record["task"], record["split"]), []).append(record)
    built = []
    for header in source.dataset_info.metadata["tasks"]:
        examples = tuple(
            Example(
                input=r["input"], references=tuple(r["references"]), rationale=r["rationale"] or None,
                answer=r["answer"] or None, choices=tuple(r["choices"]), source=r["source"], id=r["id"],
            )
            for r in rows.get((header["task"], header["split"]), [])
        )
        task = Task(
            name=header["task"],
            definition=header["definition"],
            demonstrations=tuple(Demonstration(**d) for d in header["demonstrations"]),
            examples=examples,
            categories=tuple(header["categories"]),
            reasoning=tuple(header["reasoning"]),
        )
        built.append(BuiltEvalTask(skill=header["skill"], split=header["split"], task=task))
    return built
