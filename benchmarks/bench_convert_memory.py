"""Peak host memory (and, with --fsdp, peak per-device memory) while importing an HF checkpoint.

Writes a random OPT checkpoint as model.safetensors, then loads it with `alert_jax.load_model` in a fresh
process and reports the peak RSS increase over that process's RSS just before loading (jax itself takes a
few hundred MB that have nothing to do with the checkpoint). Target: increase < 1.5 × checkpoint size.

With `--fsdp N` the child simulates N CPU devices and loads onto an fsdp=N mesh, tracking after every placed
tensor the bytes each device holds (distinct device buffers, `jax.live_arrays()`). Target: no device ever
holds more than its 1/N share of the model plus one tensor.

    python benchmarks/bench_convert_memory.py              # ~100M params (opt-125m shape with a 32k vocab)
    python benchmarks/bench_convert_memory.py --fsdp 8     # the same, sharded over 8 simulated devices
    python benchmarks/bench_convert_memory.py --small      # ~25M params, used by the test suite
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SIZES = {
    "default": dict(vocab_size=32000, hidden_size=768, num_hidden_layers=10, num_attention_heads=12, ffn_dim=3072),
    "small": dict(vocab_size=16000, hidden_size=512, num_hidden_layers=6, num_attention_heads=8, ffn_dim=2048),
}

_CHILD = """
import json, resource, sys, psutil
import alert_jax, jax
from alert_jax.config import MeshConfig
from alert_jax.model import io
from alert_jax.parallel.mesh import make_mesh

fsdp = int(sys.argv[2])
jax.numpy.zeros(1).block_until_ready()
peak_device = [0]


def device_bytes():
    buffers = {(s.device, s.data.unsafe_buffer_pointer()): s.data.nbytes
               for a in jax.live_arrays() for s in a.addressable_shards}
    totals = {}
    for (device, _), nbytes in buffers.items():
        totals[device] = totals.get(device, 0) + nbytes
    return max(totals.values(), default=0)


real_placer = io._placer


def tracking_placer(shardings):
    place = real_placer(shardings)

    def tracked(path, array):
        placed = place(path, array)
        peak_device[0] = max(peak_device[0], device_bytes())
        return placed

    return tracked


io._placer = tracking_placer
mesh = make_mesh(MeshConfig(data=1, fsdp=fsdp, tensor=1)) if fsdp > 1 else None
before = psutil.Process().memory_info().rss
model = alert_jax.load_model(sys.argv[1], mesh=mesh)
jax.block_until_ready(model.params)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
sizes = [x.nbytes for x in jax.tree.leaves(model.params)]
print(json.dumps({"rss_before": before, "peak_rss": peak, "peak_device_bytes": peak_device[0],
                  "model_bytes": sum(sizes), "largest_tensor_bytes": max(sizes), "devices": len(jax.devices())}))
"""


def write_random_checkpoint(directory: Path, size: str) -> int:
    from alert_jax.model.convert import config_to_hf, hf_layout
    from alert_jax.model.presets import OPTConfig
    from alert_jax.model.tensor_files import write_safetensors

    cfg = OPTConfig(max_position_embeddings=2048, **SIZES[size])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config_to_hf(cfg)))
    layout = hf_layout(cfg)
    shapes = {s.hf_name: (s.shape[::-1] if s.transpose else s.shape, np.dtype(np.float32)) for s in layout}
    rng = np.random.default_rng(0)
    tensors = ((name, rng.standard_normal(shape, dtype=np.float32) * 0.02) for name, (shape, _) in shapes.items())
    write_safetensors(directory / "model.safetensors", tensors, shapes)
    return (directory / "model.safetensors").stat().st_size


def measure(size: str, fsdp: int = 1) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    if fsdp > 1:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={fsdp}".strip()
    with tempfile.TemporaryDirectory() as tmp:
        nbytes = write_random_checkpoint(Path(tmp) / "ckpt", size)
        out = subprocess.run([sys.executable, "-c", _CHILD, str(Path(tmp) / "ckpt"), str(fsdp)], check=True,
                             capture_output=True, text=True, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["checkpoint_bytes"] = nbytes
    result["increase"] = result["peak_rss"] - result["rss_before"]
    result["ratio"] = result["increase"] / nbytes
    result["device_share_bound"] = result["model_bytes"] / fsdp + result["largest_tensor_bytes"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--fsdp", type=int, default=1, help="load onto an fsdp=N mesh of N simulated CPU devices")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure("small" if args.small else "default", args.fsdp)
    if args.json:
        print(json.dumps(result))
        return
    mb = lambda b: f"{b / 2**20:.0f} MiB"
    print(f"checkpoint {mb(result['checkpoint_bytes'])}; RSS before load {mb(result['rss_before'])}; "
          f"peak {mb(result['peak_rss'])}; increase {mb(result['increase'])} = {result['ratio']:.2f}x checkpoint")
    print(f"{result['devices']} device(s), fsdp={args.fsdp}: peak per device {mb(result['peak_device_bytes'])} "
          f"(bound: 1/{args.fsdp} of {mb(result['model_bytes'])} + largest tensor "
          f"{mb(result['largest_tensor_bytes'])} = {mb(result['device_share_bound'])})")


if __name__ == "__main__":
    main()
