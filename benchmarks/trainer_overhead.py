"""Trainer overhead: steady-state tokens/s of `trainer.train` vs a bare PyTorch loop.

Same process, same model (same init), same batches, same optimizer step (AdamW + clipping);
the bare loop has no schedule, logging, evaluation, checkpointing or data generation (its
batches are materialised before timing, so it is the stricter baseline). Runs alternate
(bare, trainer, bare, trainer, ...) and the best of each is reported, which keeps the ratio
robust to other load on the machine.

    .venv/bin/python benchmarks/trainer_overhead.py             # ~50k-param model, 1 thread
    .venv/bin/python benchmarks/trainer_overhead.py --smoke-test
    .venv/bin/python benchmarks/trainer_overhead.py --mlflow   # log to a SQLite MLflow store

Figures printed:
- trainer steady-state: median of the trainer's own `tokens_per_s` metric (optimizer steps,
  logging and data, eval/checkpoint time excluded), and
- trainer end-to-end: tokens / wall time of the whole train() call with the final evaluation on
  a minimal validation set and its checkpoint included.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainer import InMemorySink, train  # noqa: E402
from trainer.accounting import count_params, shape_for_params  # noqa: E402
from trainer.data import make_source  # noqa: E402
from trainer.model import GPT, param_groups  # noqa: E402
from trainer.spec import DataSpec, RecipeSpec, RunSpec  # noqa: E402


def make_spec(params: float, tokens: int, batch: int, seq_len: int) -> RunSpec:
    model = shape_for_params(params, d_head=16, aspect_ratio=16, vocab_size=64, seq_len=seq_len)
    data = DataSpec(vocab_size=64, seq_len=seq_len, val_tokens=seq_len + 1)
    recipe = RecipeSpec(batch_size=batch, lr=3e-3, eval_interval_tokens=tokens)
    return RunSpec(model=model, data=data, recipe=recipe, tokens=tokens, seed=0)


def bare_loop(spec: RunSpec) -> float:
    """tokens/s of forward + backward + clip + AdamW over pre-materialised batches."""
    torch.manual_seed(spec.seed)
    model = GPT(spec.model)
    r = spec.recipe
    opt = torch.optim.AdamW(
        param_groups(model, r.weight_decay), lr=r.lr, betas=(r.beta1, r.beta2), fused=True
    )
    source = make_source(spec.data, spec.seed)
    steps = spec.tokens // spec.tokens_per_step
    batches = [torch.from_numpy(source.batch(i * r.batch_size, r.batch_size)) for i in range(steps)]
    params = list(model.parameters())
    start = time.perf_counter()
    for b in batches:
        _, loss, _ = model(b[:, :-1], b[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, r.grad_clip, foreach=True)
        opt.step()
    return steps * spec.tokens_per_step / (time.perf_counter() - start)


class _RecordingSink:
    """Forwards to an MlflowSink and remembers tokens_per_s for the figure."""

    def __init__(self, inner):
        self.inner, self.rates = inner, []
        self.run_id = inner.run_id

    def log_params(self, params):
        self.inner.log_params(params)

    def set_tags(self, tags):
        self.inner.set_tags(tags)

    def log_metrics(self, metrics, step):
        if "tokens_per_s" in metrics:
            self.rates.append(metrics["tokens_per_s"])
        self.inner.log_metrics(metrics, step)

    def log_text(self, text, artifact_file):
        self.inner.log_text(text, artifact_file)

    def flush(self):
        self.inner.flush()

    @property
    def pending(self):
        return self.inner.pending

    def close(self, timeout_s=None):
        self.inner.close(timeout_s)


def make_sink(mlflow_uri: str | None):
    if mlflow_uri is None:
        return InMemorySink()
    from mlflow.tracking import MlflowClient

    from trainer import MlflowSink

    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("overhead") or client.get_experiment(
        client.create_experiment("overhead")
    )
    return _RecordingSink(MlflowSink(mlflow_uri, client.create_run(exp.experiment_id).info.run_id))


def trainer_run(spec: RunSpec, threads: int, mlflow_uri: str | None = None) -> tuple[float, float]:
    sink = make_sink(mlflow_uri)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        res = train(spec, sink, checkpoint_dir=tmp, num_threads=threads)
        wall = time.perf_counter() - start
    if res.status != "finished":
        raise SystemExit(f"trainer run {res.status}: {res.message}")
    rates = sink.rates if isinstance(sink, _RecordingSink) else [v for _, v in sink.history("tokens_per_s")]
    steady = statistics.median(rates[len(rates) // 5 :])  # skip the first intervals
    return steady, res.tokens / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", type=float, default=5e4)
    ap.add_argument("--tokens", type=int, default=400 * 1024)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--mlflow",
        action="store_true",
        help="log to a real SQLite MLflow store (MlflowSink) instead of memory",
    )
    ap.add_argument("--smoke-test", action="store_true", help="tiny and fast, for CI")
    args = ap.parse_args()
    if args.smoke_test:
        args.tokens, args.repeats = 40 * 1024, 1
    mlflow_uri = None
    if args.mlflow:
        store = tempfile.mkdtemp(prefix="overhead-mlflow-")
        mlflow_uri = f"sqlite:///{store}/mlflow.db"
        make_sink(mlflow_uri)  # create and migrate the store before timing

    torch.set_num_threads(args.threads)
    spec = make_spec(args.params, args.tokens, args.batch, args.seq_len)
    n = count_params(spec.model).total
    print(
        f"model n_layer={spec.model.n_layer} d_model={spec.model.d_model} params={n} | "
        f"batch {args.batch}x{args.seq_len} | {args.tokens} tokens | {args.threads} thread(s)"
    )
    train(
        make_spec(args.params, 2048, args.batch, args.seq_len),
        InMemorySink(),
        checkpoint_dir=tempfile.mkdtemp(),
        num_threads=args.threads,
    )  # warm imports
    bare, steady, e2e = [], [], []
    for i in range(args.repeats):
        bare.append(bare_loop(spec))
        s, e = trainer_run(spec, args.threads, mlflow_uri)
        steady.append(s)
        e2e.append(e)
        print(
            f"  repeat {i}: bare {bare[-1]:,.0f} tok/s | trainer steady {s:,.0f} tok/s | "
            f"trainer end-to-end {e:,.0f} tok/s"
        )
    b = max(bare)
    print(f"bare loop            {b:,.0f} tokens/s")
    print(f"trainer steady-state {max(steady):,.0f} tokens/s   ratio {max(steady) / b:.3f}")
    print(f"trainer end-to-end   {max(e2e):,.0f} tokens/s   ratio {max(e2e) / b:.3f}")


if __name__ == "__main__":
    main()
