"""Plan-time memory estimate (orchestrator.study.memory.run_memory) vs the measured peak of real
training steps: the estimate must be a floor (ratio measured/estimate >= 1), so that refusing a
run whose estimate exceeds the node's memory never refuses one that would have fit.

Each shape runs in its own process (peak RSS is per process): two AdamW steps of the trainer's
GPT on the CPU, fp32, one thread. Prints, per shape, the estimate by cause, the measured growth
of peak RSS, and their ratio.

    .venv/bin/python benchmarks/memory_estimate.py
"""

from __future__ import annotations

import subprocess
import sys

SHAPES = [  # batch_size, seq_len, n_layer, d_model, vocab_size
    (16, 256, 4, 256, 8192),
    (8, 1024, 2, 128, 256),
    (4, 128, 8, 512, 32768),
]


def measure(B: int, T: int, L: int, d: int, V: int) -> None:
    import resource

    import torch

    from orchestrator.study.config import parse_study
    from orchestrator.study.grid import expand
    from orchestrator.study.memory import run_memory
    from trainer.model import GPT

    cfg = parse_study(
        {
            "study": "m",
            "data": {"source": "markov", "vocab_size": V, "order": 1, "seq_len": T},
            "grid": {"sizes": [{"n_layer": L, "d_model": d}], "tokens": [B * T * 4]},
            "train": {"batch_size": B},
        }
    )
    p = expand(cfg)[0]
    est = {k: v for k, v in run_memory(p).items() if k not in ("markov_table", "val_tokens")}
    torch.set_num_threads(1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model = GPT(p.spec.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, V, (B, T + 1))
    for _ in range(2):
        _, loss, _ = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    total = sum(est.values())
    parts = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in est.items())
    print(
        f"B={B} T={T} L={L} d={d} V={V}: estimate {total / 2**20:.0f} MiB ({parts}); "
        f"measured {peak / 2**20:.0f} MiB; measured/estimate {peak / total:.2f}",
        flush=True,
    )


def main() -> None:
    if len(sys.argv) == 6:
        measure(*map(int, sys.argv[1:]))
        return
    for shape in SHAPES:
        subprocess.run([sys.executable, __file__, *map(str, shape)], check=True)


if __name__ == "__main__":
    main()
