"""MFU of the trainer's model on one GPU: a ~124M dense GPT and an MoE of similar active size,
bf16 autocast, fused AdamW, TF32, with and without torch.compile.

    .venv/bin/python benchmarks/gpu_mfu.py                 # all four configurations
    .venv/bin/python benchmarks/gpu_mfu.py --smoke-test    # tiny models, a few steps

Targets on one H100: dense >= 45% MFU, MoE >= 30%. MFU = tokens/s · FLOPs per token
(chinchilla convention of trainer.accounting: 3 × forward matmuls incl. attention and the
head) / the device's dense bf16 peak (trainer.train.PEAK_FLOPS). The step is the trainer's
step (forward, loss, MoE regularisers, backward, clipping, AdamW) on random tokens.
Exits 0 with a message on a machine without CUDA.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def configs(smoke: bool):
    from trainer.spec import ModelSpec

    if smoke:
        base = dict(n_layer=2, d_model=128, n_head=2, vocab_size=512, seq_len=128)
    else:  # GPT-2 small: 12 x 768, 12 heads, vocab padded to 50304, 1024 context
        base = dict(n_layer=12, d_model=768, n_head=12, vocab_size=50304, seq_len=1024)
    d_ff = 4 * base["d_model"]
    dense = ModelSpec(**base)
    # 8 experts of half width, top-2: active FFN width = dense FFN width (granularity 2)
    moe = ModelSpec(**base, experts=8, top_k=2, d_expert=d_ff // 2)
    return {"dense": dense, "moe": moe}


def measure(model_spec, batch: int, steps: int, warmup: int, compile_model: bool) -> dict:
    import torch

    from trainer.accounting import count_params, flops_per_token
    from trainer.model import GPT, param_groups
    from trainer.train import peak_flops

    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    model = GPT(model_spec).to(device)
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=3e-4, betas=(0.9, 0.95), fused=True)
    fwd = torch.compile(model) if compile_model else model
    params = list(model.parameters())
    T, V = model_spec.seq_len, model_spec.vocab_size
    data = torch.randint(0, V, (steps + warmup, batch, T + 1), device=device)

    def step(b):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss, aux = fwd(b[:, :-1], b[:, 1:])
            total = loss + aux["reg"] if aux else loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        return loss

    for i in range(warmup):
        step(data[i])
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        loss = step(data[warmup + i])
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    tokens_per_s = steps * batch * T / elapsed
    fpt = flops_per_token(model_spec, "chinchilla")
    peak = peak_flops(device)
    counts = count_params(model_spec)
    return {
        "params": counts.total,
        "active": counts.active,
        "tokens_per_s": tokens_per_s,
        "tflops": tokens_per_s * fpt / 1e12,
        "mfu": tokens_per_s * fpt / peak if peak else float("nan"),
        "loss": float(loss),
        "mem_gb": torch.cuda.max_memory_allocated() / 1e9,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16, help="sequences per step")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--only", choices=["dense", "moe"], default=None)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile runs")
    ap.add_argument("--smoke-test", action="store_true")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print(
            "gpu_mfu: no CUDA device on this machine; nothing to measure (run it on a GPU "
            "host: .venv/bin/python benchmarks/gpu_mfu.py)"
        )
        return 0
    if args.smoke_test:
        args.steps, args.warmup, args.batch = 3, 2, 4
    from trainer.train import peak_flops

    dev = torch.device("cuda")
    peak = peak_flops(dev)
    print(
        f"device {torch.cuda.get_device_name(dev)}; bf16 dense peak {peak / 1e12:.0f} TFLOP/s"
        if peak
        else "unknown peak (MFU shown as nan)"
    )
    for name, spec in configs(args.smoke_test).items():
        if args.only and name != args.only:
            continue
        for compile_model in [False] if args.no_compile else [False, True]:
            try:
                r = measure(spec, args.batch, args.steps, args.warmup, compile_model)
            except Exception as e:  # noqa: BLE001 - report and go on to the next config
                print(f"{name:5s} compile={compile_model!s:5s} FAILED: {type(e).__name__}: {e}")
                continue
            finally:
                torch.cuda.empty_cache()
            print(
                f"{name:5s} compile={compile_model!s:5s} params {r['params'] / 1e6:6.1f}M "
                f"(active {r['active'] / 1e6:6.1f}M) | {r['tokens_per_s']:>10,.0f} tok/s | "
                f"{r['tflops']:6.1f} TFLOP/s | MFU {100 * r['mfu']:5.1f}% | "
                f"mem {r['mem_gb']:.1f} GB | loss {r['loss']:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
