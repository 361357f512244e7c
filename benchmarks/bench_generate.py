"""Batched greedy generation on CPU, side by side in one process: alert_jax (fp32, int8, w8a8) and its peers.

Every system runs the same random OPT (opt-125m's widths by default) on the same prompts: greedy, a fixed number
of new tokens, no early stop. Peers run only when installed (`pip install -e ".[bench]"`): transformers
(PyTorch), ctranslate2 fp32 and int8, keras-hub's OPT on the JAX backend. The systems take turns (interleaved
rounds, so background load hits all alike) and each one's median is reported; fp32 peers are checked token for
token against alert_jax fp32 (int8 rows report their agreement with it too — quantisation may change tokens).
alert_jax fp32 is greedy `generate` as it runs by default on CPU: [out, in] kernels in the decode loop, and up to
4 rows the int8 screen of the LM head (the float head's tokens, model/screened_head.py); "fp32, float head"
reads the float32 head every step.
First calls (compiles, graph builds) are timed apart and excluded. Appends one table per batch size to
benchmarks/RESULTS.md with the machine, versions, date and load.

    python benchmarks/bench_generate.py [--layers 6 --batches 1,8 --prompt-len 64 --new-tokens 64 --repeats 5]
"""
from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from results import LoadAverage, cpu_model, package_version, publish  # noqa: E402  (benchmarks/results.py)
from timing import interleaved_rounds  # noqa: E402  (benchmarks/timing.py)

SHAPES = {
    "125m": {"vocab": 50272, "hidden": 768, "heads": 12},
    "tiny": {"vocab": 1024, "hidden": 128, "heads": 4},
}
PAD, BOS = 1, 2
Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (ids, mask) → new tokens [B, new]


def left_padded_prompts(batch: int, length: int, vocab: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `length` columns whose real lengths spread from length/2 to length (BOS first, like OPT)."""
    rng = np.random.RandomState(seed)
    ids = np.full((batch, length), PAD, np.int64)
    mask = np.zeros((batch, length), np.int64)
    for row, real in enumerate(np.linspace(length // 2, length, batch).astype(int)):
        ids[row, -real:] = np.concatenate([[BOS], rng.randint(4, vocab, real - 1)])
        mask[row, -real:] = 1
    return ids, mask



def _hf_dir(config, layers_dir: Path):
    """A random transformers OPT saved with a word-level tokenizer `t0…tN` (ctranslate2 reads a vocabulary)."""
    import tokenizers
    import transformers

    model = transformers.OPTForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    model.save_pretrained(layers_dir)
    vocab = {f"t{i}": i for i in range(config.vocab_size)}
    word_level = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="t3"))
    transformers.PreTrainedTokenizerFast(tokenizer_object=word_level, bos_token="t2", eos_token="t2",
                                        pad_token="t1", unk_token="t3").save_pretrained(layers_dir)
    return model


def alert_jax_runners(hf_dir: Path, new: int) -> dict[str, Runner]:
    import alert_jax
    from alert_jax.generation import generate
    from alert_jax.model.io import quantize_model

    fp32 = alert_jax.load_model(hf_dir)
    runs = {"fp32": (fp32, None), "fp32, float head": (fp32, False), "int8": (quantize_model(fp32, mode="int8"), None),
            "w8a8": (quantize_model(fp32, mode="w8a8"), None)}
    return {f"alert_jax {name}": (lambda ids, mask, model=model, screen=screen:
                                  generate(model, ids, mask, max_new_tokens=new, screen_head=screen))
            for name, (model, screen) in runs.items()}


def transformers_runner(model, new: int, threads: int) -> dict[str, Runner]:
    import torch

    torch.set_num_threads(threads)

    def run(ids, mask):
        with torch.inference_mode():
            out = model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                                 max_new_tokens=new, pad_token_id=PAD, eos_token_id=None)
        return out[:, ids.shape[1]:].numpy()

    return {"transformers (torch)": run}


def ctranslate2_runners(hf_dir: Path, new: int, threads: int) -> dict[str, Runner]:
    import ctranslate2

    runners = {}
    for compute in ("float32", "int8"):
        out = Path(tempfile.mkdtemp()) / compute
        ctranslate2.converters.TransformersConverter(str(hf_dir)).convert(str(out), quantization=compute)
        generator = ctranslate2.Generator(str(out), device="cpu", compute_type=compute, intra_threads=threads)

        def run(ids, mask, generator=generator):
            prompts = [[f"t{t}" for t in row[m == 1]] for row, m in zip(ids, mask)]
            results = generator.generate_batch(prompts, max_length=new, min_length=new, sampling_topk=1,
                                               include_prompt_in_result=False)
            return np.array([r.sequences_ids[0] for r in results])

        runners[f"ctranslate2 {'fp32' if compute == 'float32' else 'int8'}"] = run
    return runners


def keras_hub_runner(model, new: int) -> dict[str, Runner]:
    """keras-hub's OPTCausalLM on the JAX backend with the torch model's weights (peers.py), greedy sampler.

    keras-hub takes prompts right-padded and decodes a ragged batch from the shortest prompt's end (its rows
    share one loop), so each row's `new` tokens are read from just after its own prompt.
    """
    from peers import keras_hub_opt

    lm = keras_hub_opt(model)
    lm.compile(sampler="greedy")

    def run(ids, mask):
        lengths = mask.sum(axis=1)
        right = np.full((ids.shape[0], ids.shape[1] + new), PAD, ids.dtype)
        right_mask = np.zeros(right.shape, bool)
        for row, (tokens, real) in enumerate(zip(ids, lengths)):
            right[row, :real], right_mask[row, :real] = tokens[-real:], True
        out = lm.generate({"token_ids": right, "padding_mask": right_mask}, max_length=right.shape[1],
                          stop_token_ids=None)
        out = np.asarray(out["token_ids"])
        return np.stack([out[row, real:real + new] for row, real in enumerate(lengths)])

    return {"keras-hub OPT (JAX)": run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="125m")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated name fragments: run only matching systems")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    import torch
    import transformers

    threads = os.cpu_count() or 1
    torch.manual_seed(0)
    width = SHAPES[args.shape]
    config = transformers.OPTConfig(
        vocab_size=width["vocab"], hidden_size=width["hidden"], num_hidden_layers=args.layers,
        num_attention_heads=width["heads"], ffn_dim=4 * width["hidden"], max_position_embeddings=2048,
        word_embed_proj_dim=width["hidden"], do_layer_norm_before=True, dropout=0.0, attention_dropout=0.0,
        pad_token_id=PAD, bos_token_id=BOS, eos_token_id=BOS,
    )
    hf_dir = Path(tempfile.mkdtemp()) / "opt"
    hf_model = _hf_dir(config, hf_dir)
    runners = {**alert_jax_runners(hf_dir, args.new_tokens), **transformers_runner(hf_model, args.new_tokens, threads)}
    skipped = []
    for name, make in (("ctranslate2", lambda: ctranslate2_runners(hf_dir, args.new_tokens, threads)),
                       ("keras-hub", lambda: keras_hub_runner(hf_model, args.new_tokens))):
        try:
            runners.update(make())
        except ImportError as error:  # not installed, or a dependency of it is missing (keras-hub's kagglehub needs kagglesdk)
            skipped.append(f"{name} ({str(error).split('. ')[0]})")

    wanted = [w for w in args.only.split(",") if w]
    runners = {k: v for k, v in runners.items() if k == "alert_jax fp32" or not wanted or any(w in k for w in wanted)}
    for batch in map(int, args.batches.split(",")):
        ids, mask = left_padded_prompts(batch, args.prompt_len, config.vocab_size)
        load = LoadAverage()
        timed = interleaved_rounds({name: functools.partial(run, ids, mask) for name, run in runners.items()},
                                   args.repeats)
        ours = timed["alert_jax fp32"]
        lines = [
            f"## Greedy generation, batch {batch}, {args.new_tokens} new tokens: alert_jax and peers "
            f"({datetime.date.today().isoformat()})",
            "",
            f"- machine: {cpu_model()}, {threads} cores; python {platform.python_version()}, "
            + ", ".join(f"{name} {package_version(name)}" for name in ("jax", "torch", "transformers", "ctranslate2",
                                                                       "keras-hub")),
            f"- model: random OPT, {args.shape} widths, {args.layers} layers (hidden {config.hidden_size}, ffn "
            f"{config.ffn_dim}, vocab {config.vocab_size}); prompts {args.prompt_len // 2}..{args.prompt_len} tokens, "
            f"left padded; greedy, no early stop; median of {args.repeats} interleaved rounds",
            "- alert_jax fp32 decodes as it does by default on CPU: [out, in] kernels, and up to 4 rows the LM head's "
            "int8 screen (the float head's tokens); 'fp32, float head' reads the float32 head every step",
            f"- {load.text()} on {threads} cores",
            *([f"- not run: {'; '.join(skipped)}"] if skipped else []),
            "",
            "| system | first call s | median s | new tokens/s | speed ÷ alert_jax fp32 | tokens = alert_jax fp32 |",
            "|---|---|---|---|---|---|",
        ]
        for name, (first_s, median_s, tokens) in timed.items():
            same_shape = tokens.shape == ours.output.shape
            agree = float((tokens[:, :args.new_tokens] == ours.output).mean()) if same_shape else 0.0
            lines.append(f"| {name} | {first_s:.2f} | {median_s:.3f} | {batch * args.new_tokens / median_s:.1f} | "
                         f"{ours.median_s / median_s:.2f}× | {agree:.1%} |")
        lines.append("")
        publish(lines, args.no_write)


if __name__ == "__main__":
    main()
