"""One training step on CPU: alert_jax's jitted train step vs transformers' PyTorch `OPTForCausalLM` and keras-hub.

Both sides train the same random OPT (opt-125m's shape, fewer layers by default so each side gets 10+
timed steps in a couple of minutes) from the same weights on the same random token rows, fp32, in one
process, taking turns step by step:

* alert_jax: `make_train_step` (forward + backward + clip + AdamW) jitted with the state donated, on a
  packed batch that spells out the dense LM loss (one segment per row, positions 0..T-1, every token but
  the last weighted 1);
* PyTorch: forward with `labels` (the same shifted mean loss), backward, `clip_grad_norm_(1.0)` and
  `torch.optim.AdamW.step()`, `zero_grad()` — what the HF Trainer does with `max_grad_norm=1.0`;
* keras-hub (when installed; the other JAX implementation): its `OPTCausalLM` on the JAX backend
  holding the same weights (peers.py), `train_on_batch` with keras AdamW (`global_clipnorm=1.0`), the same
  targets and 0/1 sample weights, jit-compiled by keras. Its loss is keras's own mean (over every position,
  the weighted-out last one included), so its step-0 loss is the others' times (T-1)/T.

Every shape in `--shapes` (rows x tokens, the same tokens per step) is timed side by side, so the table
shows how each side's step time grows with the sequence length (#12: the attention work grows like T², the
rest like T). The step-0 losses of both sides are printed as a check that they compute the same thing. Our
first call (compile + one step) is reported separately; throughput is the median over the timed steps after
warm-up. Appends a section to benchmarks/RESULTS.md unless --no-write.

    python benchmarks/bench_train_step.py [--layers 4 --shapes 8x256,4x512,2x1024,1x2048 --steps 10]

Run it without XLA_FLAGS forcing several host devices: this measures one CPU device using every core.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers

import alert_jax
from alert_jax import host_memory
from alert_jax.config import OptimConfig
from alert_jax.model.opt import OPTForCausalLM, RuntimeOptions
from alert_jax.train.optim import make_optimizer
from alert_jax.train.step import TrainState, make_train_step
from results import LoadAverage, cpu_model, package_version, publish  # noqa: E402  (benchmarks/results.py)
from timing import interleaved_rounds  # noqa: E402  (benchmarks/timing.py)

OPTIM = OptimConfig(learning_rate=1e-5, warmup_steps=0, end_lr_ratio=1.0, weight_decay=0.1, beta1=0.9, beta2=0.95,
                    eps=1e-8, clip_norm=1.0)



def dense_lm_batch(ids: np.ndarray) -> dict[str, jax.Array]:
    """The packed-batch spelling of HF's `labels=input_ids` loss: token t predicts t+1, the last predicts nothing."""
    b, t = ids.shape
    targets = np.zeros_like(ids)
    targets[:, :-1] = ids[:, 1:]
    weights = np.ones((b, t), np.float32)
    weights[:, -1] = 0.0
    return {
        "inputs": jnp.asarray(ids, jnp.int32),
        "targets": jnp.asarray(targets, jnp.int32),
        "segment_ids": jnp.ones((b, t), jnp.int32),
        "positions": jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t)),
        "loss_weights": jnp.asarray(weights),
    }


def keras_hub_trainer(hf_model):
    """keras-hub's OPTCausalLM with `hf_model`'s weights, compiled with the same AdamW and clipping as the others."""
    from peers import keras_hub_opt

    lm = keras_hub_opt(hf_model)  # first: it selects keras' JAX backend, which must happen before keras is imported
    import keras

    lm.compile(optimizer=keras.optimizers.AdamW(learning_rate=OPTIM.learning_rate, weight_decay=OPTIM.weight_decay,
                                                beta_1=OPTIM.beta1, beta_2=OPTIM.beta2, epsilon=OPTIM.eps,
                                                global_clipnorm=OPTIM.clip_norm),
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), weighted_metrics=[],
               jit_compile=True)
    return lm



def parse_shapes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(n) for n in shape.split("x")) for shape in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--shapes", default="8x256,4x512,2x1024,1x2048", help="comma-separated BATCHxSEQ")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side and shape, after a warm-up step")
    parser.add_argument("--attention", default="xla", help="model.attention for alert_jax")
    parser.add_argument("--remat", default="none", help="model.remat for alert_jax")
    parser.add_argument("--scan-layers", action="store_true", help="model.scan_layers for alert_jax")
    parser.add_argument("--skip-torch", action="store_true", help="time only alert_jax (for quick variants)")
    parser.add_argument("--skip-keras", action="store_true", help="leave keras-hub out even when installed")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--host-malloc", choices=host_memory.SETTINGS, default="system",
                        help="glibc malloc for the whole process, every side alike: system (default) leaves it as "
                             "it is; keep is what the alert-jax CLI does on CPU (alert_jax/host_memory.py)")
    args = parser.parse_args()
    kept = host_memory.configure(args.host_malloc)  # before anything computes
    malloc_note = (f"host malloc {args.host_malloc}: " + ("freed memory kept (one arena, no mmap, no trim)" if kept
                   else "glibc as it is") + ", the same for every side in this process")
    shapes = parse_shapes(args.shapes)

    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    torch.manual_seed(0)
    config = transformers.OPTConfig(  # opt-125m's shape, random weights, no dropout on either side
        vocab_size=50272, hidden_size=768, num_hidden_layers=args.layers, num_attention_heads=12, ffn_dim=3072,
        max_position_embeddings=2048, word_embed_proj_dim=768, do_layer_norm_before=True, dropout=0.0,
        attention_dropout=0.0, layerdrop=0.0, pad_token_id=1, bos_token_id=2, eos_token_id=2,
    )
    hf_model = transformers.OPTForCausalLM(config).train()
    runtime = RuntimeOptions(attention=args.attention, remat=args.remat, scan_layers=args.scan_layers)
    with tempfile.TemporaryDirectory() as tmp:
        hf_model.save_pretrained(tmp)
        model = alert_jax.load_model(tmp, runtime=runtime)
    module = OPTForCausalLM(model.config, runtime)
    tx = make_optimizer(OPTIM, total_steps=1000)
    state = TrainState(jnp.zeros((), jnp.int32), model.params, tx.init(model.params))
    step_fn = jax.jit(make_train_step(module, tx), donate_argnums=0)
    opt = torch.optim.AdamW(hf_model.parameters(), lr=OPTIM.learning_rate, betas=(OPTIM.beta1, OPTIM.beta2),
                            eps=OPTIM.eps, weight_decay=OPTIM.weight_decay)
    keras_lm, keras_note = None, "not run (--skip-torch)" if args.skip_torch else "not run (--skip-keras)"
    if not args.skip_torch and not args.skip_keras:
        try:
            keras_lm, keras_note = keras_hub_trainer(hf_model), ""
        except ImportError as error:  # not installed, or a dependency of it is missing
            keras_note = f"not run ({str(error).split('. ')[0]})"
    load = LoadAverage()
    rows = []
    for batch_size, seq in shapes:
        ids = np.random.RandomState(0).randint(4, config.vocab_size, (batch_size, seq)).astype(np.int64)
        batch, torch_ids = dense_lm_batch(ids), torch.tensor(ids)
        losses = {"ours": [], "torch": [], "keras": []}

        def ours() -> None:
            nonlocal state
            state, m = step_fn(state, batch)
            losses["ours"].append(float(m["loss"]))  # waits for the step

        def theirs() -> None:
            loss = hf_model(input_ids=torch_ids, labels=torch_ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(hf_model.parameters(), OPTIM.clip_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses["torch"].append(loss.item())

        keras_inputs = {"token_ids": ids.astype(np.int32), "padding_mask": np.ones_like(ids, np.int32)}
        keras_targets, keras_weights = np.asarray(batch["targets"]), np.asarray(batch["loss_weights"])

        def keras_side() -> None:
            losses["keras"].append(float(keras_lm.train_on_batch(keras_inputs, keras_targets,
                                                                 sample_weight=keras_weights)))

        sides = {"ours": ours, **({} if args.skip_torch else {"torch": theirs}),
                 **({"keras": keras_side} if keras_lm is not None else {})}
        # first calls: ours compiles; torch allocates its AdamW state; keras compiles
        timed = interleaved_rounds(sides, args.steps)
        compile_s = timed["ours"].first_s
        median = lambda name: timed[name].median_s if name in timed else float("nan")
        first = lambda name: losses[name][0] if losses[name] else float("nan")
        row = {"shape": f"{batch_size}x{seq}", "tokens": batch_size * seq, "compile_s": compile_s,
               "ours_s": median("ours"), "torch_s": median("torch"), "keras_s": median("keras"),
               "loss0": (first("ours"), first("torch"), first("keras"))}
        rows.append(row)
        print(f"{row['shape']}: alert_jax {row['ours_s']:.3f}s/step (first call {compile_s:.1f}s), torch "
              f"{row['torch_s']:.3f}s/step, keras-hub {row['keras_s']:.3f}s/step; torch/ours "
              f"{row['torch_s'] / row['ours_s']:.2f}x, keras-hub/ours {row['keras_s'] / row['ours_s']:.2f}x",
              flush=True)

    lines = [
        f"## Training step on CPU by sequence length: alert_jax vs PyTorch and keras-hub "
        f"({datetime.date.today().isoformat()})",
        "",
        f"- machine: {cpu_model()}, {cores} cores; python {platform.python_version()}, jax {jax.__version__}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, keras-hub {package_version('keras-hub')}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '') or '(unset)'}; {malloc_note}; "
        f"{load.text()} (a shared machine: ratios are more trustworthy than absolute times)",
        f"- model: random OPT, opt-125m shape with {args.layers} layers (hidden 768, 12 heads, ffn 3072, "
        f"vocab 50272), float32 params, activations and AdamW state; alert_jax attention={args.attention!r}, "
        f"remat={args.remat!r}, scan_layers={args.scan_layers}",
        f"- workload: random tokens, dense LM loss; forward + backward + clip-by-global-norm(1.0) + AdamW; median "
        f"of {args.steps} steps per side after one warm-up step, sides taking turns step by step; same weights and "
        f"tokens (step-0 losses below)",
        *([f"- keras-hub: {keras_note}"] if keras_note else []),
        "",
        "| batch x seq | alert_jax s/step | PyTorch s/step | keras-hub s/step | alert_jax / PyTorch tokens/s "
        "| alert_jax / keras-hub tokens/s | alert_jax first call s | step-0 loss (ours / torch / keras-hub) |",
        "|---|---|---|---|---|---|---|---|",
        *(f"| {r['shape']} | {r['ours_s']:.3f} | {r['torch_s']:.3f} | {r['keras_s']:.3f} | "
          f"**{r['torch_s'] / r['ours_s']:.2f}x** | **{r['keras_s'] / r['ours_s']:.2f}x** | {r['compile_s']:.1f} | "
          f"{r['loss0'][0]:.4f} / {r['loss0'][1]:.4f} / {r['loss0'][2]:.4f} |" for r in rows),
        "",
    ]
    publish(lines, args.no_write)


if __name__ == "__main__":
    main()
