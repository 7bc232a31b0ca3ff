"""Peak memory of one run, estimated at plan time, so a memory bomb (`seq_len: 1e7`,
`vocab_size: 65536` on the markov source, a 1e12-parameter explicit shape) exits 2 naming its
key instead of failing at run time with retried MemoryErrors. Pure functions of the plan.

The estimate is a floor of what the trainer allocates (fp32 weights, gradients and AdamW's two
moments; activations saved for the backward pass; the logits and their gradient; the markov
source's transition table), so only runs that cannot fit are refused.
"""

from __future__ import annotations

from .config import ExplicitShape, StudyConfig, StudyError
from .grid import PlannedRun

GIB = float(1 << 30)
GPU_MEMORY_BYTES = 192 * GIB  # the largest accelerator a run may land on (a run uses one device)
FP32 = 4


def run_memory(p: PlannedRun) -> dict[str, float]:
    """Bytes by cause, keyed by the YAML key that controls that cause."""
    m, r, data = p.spec.model, p.spec.recipe, p.spec.data
    B, T, L, d, V = r.batch_size, data.seq_len, m.n_layer, m.d_model, m.vocab_size
    d_ff = (m.top_k + m.shared_experts) * m.d_expert if m.is_moe else m.d_ff
    per_token_layer = 9 * d + 2 * d_ff + (m.experts if m.is_moe else 0)  # saved for backward
    out = {
        "model": 4.0 * FP32 * p.n_params,  # weights, grads, AdamW m and v
        "activations": FP32 * B * T * (L * per_token_layer + 2 * d),
        "logits": 3.0 * FP32 * B * T * V,  # logits, fp32 copy, gradient
    }
    out["val_tokens"] = 8.0 * (data.val_tokens + T)  # the held-out windows (int64)
    if data.source == "markov":  # P (C, V) float64 + next-context table + a product temporary
        out["markov_table"] = 32.0 * (V**data.order) * V
    return out


def host_only(parts: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in parts.items() if k in ("markov_table", "val_tokens")}


def _size_key(cfg: StudyConfig, p: PlannedRun) -> str:
    """The grid entry that produced this run's shape (for the error message)."""
    from .grid import base_shape

    m = p.spec.model
    for i, s in enumerate(cfg.grid.sizes):
        b = base_shape(s, cfg, f"grid.sizes[{i}]")
        if (b.n_layer, b.d_model) == (m.n_layer, m.d_model):
            return f"grid.sizes[{i}]"
    for i, run in enumerate(cfg.grid.runs):
        b = base_shape(run.size, cfg, f"grid.runs[{i}].size")
        if (b.n_layer, b.d_model) == (m.n_layer, m.d_model):
            return f"grid.runs[{i}].size"
    return "grid.isoflop.budgets"


def _blame(cfg: StudyConfig, p: PlannedRun, cause: str) -> tuple[str, str]:
    """(YAML key, what to do) for the largest cause."""
    if cause == "markov_table":
        return "data.vocab_size", (
            "the markov source holds a vocab_size**(order+1) table; lower data.vocab_size or data.order"
        )
    if cause == "val_tokens":
        return "data.val_tokens", "lower data.val_tokens"
    if cause == "logits":
        return "data.vocab_size", "lower data.vocab_size, train.batch_size or data.seq_len"
    if cause == "activations":
        key = "data.seq_len" if p.spec.data.seq_len >= p.spec.recipe.batch_size else "train.batch_size"
        return key, "lower train.batch_size or data.seq_len (or the model size)"
    key = _size_key(cfg, p)
    what = (
        "give a smaller explicit shape"
        if key.startswith("grid.sizes") and isinstance(cfg.grid.sizes[int(key[11:-1])], ExplicitShape)
        else "lower the size"
    )
    return key, what


def check_memory(cfg: StudyConfig, planned: list[PlannedRun], host_bytes: float | None) -> None:
    """StudyError naming the key when a run's estimated peak exceeds the memory it would get:
    `host_bytes` (RAM available on the node; None = unknown, not checked) for CPU runs and the
    host-side data, and GPU_MEMORY_BYTES on an accelerator when resources.num_gpus > 0."""
    on_gpu = cfg.resources.num_gpus > 0
    for p in planned:
        parts = run_memory(p)
        checks = (
            [(host_only(parts), host_bytes, "available RAM")]
            if on_gpu
            else [(parts, host_bytes, "available RAM")]
        )
        if on_gpu:
            device = {k: v for k, v in parts.items() if k not in host_only(parts)}
            checks.append((device, GPU_MEMORY_BYTES, "the memory of the largest GPU"))
        for use, capacity, where in checks:
            need = sum(use.values())
            if capacity is None or not use or need <= capacity:
                continue
            cause = max(use, key=lambda k: use[k])
            key, fix = _blame(cfg, p, cause)
            detail = ", ".join(f"{k} {v / GIB:.3g}" for k, v in use.items())
            raise StudyError(
                key,
                f"run {p.label} D={p.tokens:.3g} needs about {need / GIB:.3g} GiB "
                f"({detail} GiB) but {where} is {capacity / GIB:.3g} GiB; {fix}",
            )


def cluster_memory_bytes() -> float | None:
    """The memory Ray reports for the largest alive node (connected driver only)."""
    import ray

    sizes = [n["Resources"].get("memory", 0) for n in ray.nodes() if n.get("Alive")]
    return max(sizes) if sizes and max(sizes) > 0 else None
