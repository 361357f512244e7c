"""`alert-jax sample`: k sampled chains of thought per training question, labelled and scored — the data of
alignment fine-tuning (alert_jax/train/objectives.py).

For every finetuning question of `data.suite` (the questions CoT finetuning trained on:
`alert_jax.data.trained.trained_examples`, the trainer's own selection) the model generates
`alignment.k` continuations of the finetuning prompt at `alignment.temperature` with the jitted batched
generation (sharded over `eval.mesh` like `evaluate`). Each sample is judged by `evaluate.instance_record`, the
very code evaluation scores a generation with (answer extraction, then the metrics): a sample is correct when its
extracted answer relaxed-matches a reference (its `relaxed_match` is non-zero). Each is then scored by the sampling model — its summed
log-likelihood `logp` over the target tokens the trainer will see (generation + EOS, tokenized by
`corpus.tokenize_pairs`), their count `tokens`, and `score = logp / tokens` — which is also DPO's frozen
reference, computed once here.

`samples.jsonl` is appended chunk by chunk and fsynced like `generations.jsonl`: a cut-short last line is dropped
on start and (question, sample) keys already present are skipped, so a killed run resumes with no sample lost or
duplicated.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from alert_jax.config import AlignmentConfig, DataConfig, ExperimentConfig
from alert_jax.data.example import Example, Task
from alert_jax.data.mixture import capped
from alert_jax.data.suites import SuiteTask, load_suite
from alert_jax.data.templates import FINETUNE_TEMPLATE, render_prompt
from alert_jax.data.trained import trained_examples
from alert_jax.errors import AlertJaxError
from alert_jax.evaluate import CHUNK_BATCHES, WorkItem, append_records, chunks, instance_record, read_generations
from alert_jax.metrics.aggregate import System
from alert_jax.parallel.mesh import is_main_process, maybe_initialize_distributed
from alert_jax.workdir import RunDir

if TYPE_CHECKING:
    from alert_jax.data.tokenizer import Tokenizer
    from alert_jax.model.model import Model

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
CORRECT_METRIC = "relaxed_match"
_KEY = ("question", "sample")


class SampleError(AlertJaxError):
    """Sampling cannot start: no questions, a bad k, or an unreadable samples file."""


@dataclasses.dataclass(frozen=True)
class Question:
    """One training question: where it comes from and its finetuning prompt."""

    entry: SuiteTask
    task: Task
    example: Example

    @property
    def key(self) -> str:
        return f"{self.entry.task}/{self.example.id}"

    @property
    def prompt(self) -> str:
        return render_prompt(FINETUNE_TEMPLATE, self.task, self.example)


def training_questions(data: DataConfig, align: AlignmentConfig) -> list[Question]:
    """The finetuning questions CoT training saw (`alert_jax.data.trained.trained_examples`, in its order), per
    task at most `alignment.max_questions_per_task`.

    Labelling needs each question's references, which only the raw files hold (a TFDS build stores the text), so
    the examples are looked up there by (suite task, id) — the key the samples file names them by anyway.
    """
    trained = trained_examples(data).train
    kept = capped(((e.task, (e.task, e.id)) for e in trained), align.max_questions_per_task, {})
    if not kept:
        raise SampleError(f"data.suite={data.suite}: no finetuning questions to sample for")
    if len(set(kept)) < len(kept):
        raise SampleError(f"data.suite={data.suite}: example ids repeat within a finetuning task, so questions "
                          "cannot be told apart in the samples file")
    raw = {(entry.task, example.id): Question(entry, task, example)
           for entry, task in load_suite(data.suite).load_tasks(data.data_root or None) if entry.split == "finetune"
           for example in task.examples}
    missing = [key for key in kept if key not in raw]
    if missing:
        raise SampleError(f"data.tfds_dir={data.tfds_dir}: question {'/'.join(missing[0])} of the build is not in "
                          f"the raw files of data.suite={data.suite} (data.data_root={data.data_root!r})")
    return [raw[key] for key in kept]


def read_samples(path: Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """The committed records of a samples file (a cut-short last line dropped, and removed with `repair`)."""
    return read_generations(path, repair=repair, required=(*_KEY, "generation", "correct", "logp", "tokens"))


def label_sample(question: Question, sample: int, generation: str) -> dict[str, Any]:
    """A sample's record before scoring: evaluation's record of the generation, plus its correctness."""
    system = System(model="sample", size="", variant="sample")
    item = WorkItem(question.entry, FINETUNE_TEMPLATE, question.example, question.prompt)
    judged = instance_record(item, system, generation)
    return {"question": question.key, "sample": sample, "task": question.entry.task, "id": question.example.id,
            "prompt": question.prompt, "generation": generation, "prediction": judged["prediction"],
            "references": judged["references"], CORRECT_METRIC: judged[CORRECT_METRIC],
            "correct": judged[CORRECT_METRIC] > 0}


def sample(model_path: str | Path, cfg: ExperimentConfig, workdir: str | Path) -> Path:
    """Sample, label and score what `workdir/samples.jsonl` still lacks; returns its path."""
    align = cfg.alignment
    if align.k < 2:
        raise SampleError(f"alignment.k={align.k}: ranking needs at least 2 samples per question")
    workdir = Path(workdir)
    maybe_initialize_distributed()
    RunDir(workdir).claim()
    writer = is_main_process()
    path = workdir / SAMPLES_FILE
    done = {tuple(r[k] for k in _KEY) for r in read_samples(path, repair=writer)}
    questions = training_questions(cfg.data, align)
    todo = [(q, i) for q in questions for i in range(align.k) if (q.key, i) not in done]
    log.info("sample: %d of %d samples to draw (%d already in %s)", len(todo), len(questions) * align.k,
             len(questions) * align.k - len(todo), path)
    if todo:
        _sample_into(path, todo, model_path, cfg, seed_offset=len(done), writer=writer)
    return path


def _sample_into(path: Path, todo: Sequence[tuple[Question, int]], model_path: str | Path, cfg: ExperimentConfig,
                 seed_offset: int, writer: bool) -> None:
    """Generate, label, score and append `todo` chunk by chunk. A resumed run offsets the sampling seed by the
    samples already drawn, so it does not replay the first run's random draws."""
    from alert_jax.evaluate import resolve_tokenizer
    from alert_jax.generation import generate_text
    from alert_jax.model.io import load_model
    from alert_jax.parallel.mesh import devices_for, make_mesh

    align = cfg.alignment
    model = load_model(model_path, cfg.eval.dtype, mesh=make_mesh(cfg.eval.mesh, devices_for(cfg.eval.mesh)))
    tokenizer = resolve_tokenizer(str(model_path), cfg.data.tokenizer or None)
    for number, chunk in enumerate(chunks(todo, CHUNK_BATCHES * align.batch_size)):
        texts = generate_text(model, tokenizer, [q.prompt for q, _ in chunk], batch_size=align.batch_size,
                              max_new_tokens=align.max_new_tokens, temperature=align.temperature,
                              top_p=align.top_p, seed=align.seed + seed_offset + number * len(chunk),
                              stop_strings=tuple(cfg.eval.stop_strings))
        records = [label_sample(q, i, text) for (q, i), text in zip(chunk, texts)]
        scores = score_texts(model, tokenizer, [(r["prompt"], r["generation"]) for r in records],
                             cfg.train.seq_len, align.batch_size)
        if writer:
            append_records(path, [{**r, "logp": logp, "tokens": tokens, "score": logp / max(tokens, 1)}
                                  for r, (logp, tokens) in zip(records, scores)])


@functools.lru_cache(maxsize=8)
def _segment_sums_program(module: Any):
    """Jitted per-segment (summed log-likelihood, token count) for one model: compiled once, although
    `score_texts` runs for every sampled chunk (its rows always have the same shape)."""
    import jax

    from alert_jax.train.objectives import segment_log_probs
    from alert_jax.train.step import token_losses

    def sums(params, batch):
        segments = segment_log_probs(-token_losses(module, params, batch), batch)
        return segments.total, segments.count

    return jax.jit(sums)


def score_texts(model: "Model", tokenizer: "Tokenizer", pairs: Sequence[tuple[str, str]], seq_len: int,
                batch_rows: int) -> list[tuple[float, int]]:
    """(summed log-likelihood, token count) of each (prompt, target) pair's target tokens, EOS included — the
    tokens, packing and per-segment sums the alignment trainer uses, so a stored score is the score training
    starts from. Rows are laid over the model's mesh like generation's prompts, so a multi-host job scores as one."""
    from alert_jax.data.packing import pack_groups
    from alert_jax.generation import rows_sharding, to_devices, to_host
    from alert_jax.model.io import mesh_of
    from alert_jax.train.corpus import tokenize_pairs
    from alert_jax.train.loop import pad_rows
    from alert_jax.train.objectives import SEGMENT_SLOTS

    packed, row_groups = pack_groups(tokenize_pairs(tokenizer, pairs), [1] * len(pairs), seq_len, SEGMENT_SLOTS)
    rows = pad_rows(packed.arrays, batch_rows)
    sums = _segment_sums_program(model.module)
    sharding = rows_sharding(mesh_of(model), batch_rows)  # rows split over the model's mesh, as in generation
    out: list[tuple[float, int]] = [(0.0, 0)] * len(pairs)
    for start in range(0, len(rows["inputs"]), batch_rows):
        batch = {k: to_devices(v[start:start + batch_rows], sharding) for k, v in rows.items()}
        total, count = (to_host(x) for x in sums(model.params, batch))
        for row, groups in enumerate(row_groups[start:start + batch_rows]):
            for slot, index in enumerate(groups):
                out[index] = (float(total[row, slot]), int(count[row, slot]))
    return out


def assess(model_path: str | Path, label: str, samples_dir: str | Path, out_dir: str | Path, cfg: ExperimentConfig
           ) -> dict[str, float]:
    """Score every sample in `samples_dir` with `model_path` and record its pairwise ranking accuracy as `label`
    in `out_dir/assessment.json` (alert_jax/analysis/assessment.py); returns the measure."""
    from alert_jax.analysis.assessment import ASSESSMENT_FILE, pairwise_accuracy, record_assessment
    from alert_jax.evaluate import resolve_tokenizer
    from alert_jax.model.io import load_model
    from alert_jax.parallel.mesh import devices_for, make_mesh

    records = read_samples(Path(samples_dir) / SAMPLES_FILE)
    if not records:
        raise SampleError(f"{samples_dir}: no samples to assess (run `alert-jax sample`)")
    model = load_model(model_path, cfg.eval.dtype, mesh=make_mesh(cfg.eval.mesh, devices_for(cfg.eval.mesh)))
    tokenizer = resolve_tokenizer(str(model_path), cfg.data.tokenizer or None)
    sums = score_texts(model, tokenizer, [(r["prompt"], r["generation"]) for r in records], cfg.train.seq_len,
                       cfg.alignment.batch_size)
    measure = pairwise_accuracy(records, [logp / max(tokens, 1) for logp, tokens in sums])
    if is_main_process():
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        record_assessment(Path(out_dir) / ASSESSMENT_FILE, label, measure)
    return measure
