"""Held-out evaluation of a run: the loss on the study's fixed validation windows (`val_loss`,
nats/token) and, for causal runs, at longer lengths (`train.eval_lengths`, Press et al.'s
protocol: every length scores the same tokens; see objectives.py)."""

from __future__ import annotations

from typing import Any

import torch

from .objectives import eval_span, long_segments, mlm_corrupt, mlm_val_rng, windows_at
from .spec import RunSpec

EVAL_BATCH_TOKENS = 1 << 15  # tokens per evaluation forward pass


def measurable_lengths(spec: RunSpec) -> list[int]:
    """The train.eval_lengths this run can measure: causal runs only, and learned positions
    only at k = 1 (they cannot address positions past seq_len). Empty: none beyond val_loss."""
    ks = spec.recipe.eval_lengths
    if spec.model.objective != "clm" or ks == (1,):
        return []
    if spec.model.pos == "learned":
        return [1]
    return sorted(ks)


class Evaluator:
    """The validation tensors of one run (on its device) and the two evaluations."""

    def __init__(self, spec: RunSpec, source: Any, device: torch.device, task: Any = None):
        self.spec, self.device = spec, device
        self.task = task  # prefix, span (trainer/tasks.py): their own held-out batches
        self.val = torch.from_numpy(source.val).to(device)  # (n, T+1)
        self.mlm = spec.model.objective == "mlm"
        if self.mlm:  # one fixed mask per held-out sequence, the same at every evaluation
            inputs, targets = mlm_corrupt(source.val[:, :-1], spec.model.vocab_size, mlm_val_rng(spec.data))
            self.val_mlm = (torch.from_numpy(inputs).to(device), torch.from_numpy(targets).to(device))
        self.lengths = measurable_lengths(spec)
        self.segments = (
            long_segments(source, spec.data, eval_span(tuple(self.lengths))) if self.lengths else None
        )

    @property
    def val_tokens(self) -> int:
        """Held-out tokens scored per evaluation (the param `val_tokens_used`)."""
        return int(self.val.shape[0] * (self.val.shape[1] - 1))

    def length_params(self) -> dict[str, str]:
        """`eval_len<k>x`: measured, or n/a (with why in `eval_len_na_reason`)."""
        out = {
            f"eval_len{k}x": ("measured" if k in self.lengths else "n/a")
            for k in self.spec.recipe.eval_lengths
            if k > 1
        }
        if any(v == "n/a" for v in out.values()):
            objective = self.spec.model.objective
            out["eval_len_na_reason"] = (
                f"objective {objective}: length extrapolation is measured for causal runs"
                if objective != "clm"
                else "pos learned: no embedding for positions past seq_len"
            )
        return out

    def _pass_tokens(self) -> int:
        """Tokens of one forward pass: bounds the logits (tokens·vocab) for large vocabularies."""
        return max(self.spec.data.seq_len, min(EVAL_BATCH_TOKENS, (1 << 26) // self.spec.model.vocab_size))

    @torch.no_grad()
    def loss(self, model: torch.nn.Module, autocast: Any) -> float:
        """Mean held-out loss in nats/token over the fixed validation windows."""
        model.eval()
        n = self.val.shape[0]
        per = max(1, self._pass_tokens() // self.spec.data.seq_len)
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        count = torch.zeros((), device=self.device, dtype=torch.float64)
        for i in range(0, n, per):
            if self.task is not None:  # nats per predicted target token
                args, weight = self.task.val_batch(i, per)
            elif self.mlm:  # nats per predicted (selected) token
                args = (self.val_mlm[0][i : i + per], self.val_mlm[1][i : i + per])
                weight = (args[1] != -100).sum().double()
            else:
                w = self.val[i : i + per]
                args = (w[:, :-1], w[:, 1:])
                weight = torch.tensor(float(w.shape[0]), device=self.device, dtype=torch.float64)
            with autocast:
                _, loss, _ = model(*args)
            total += loss.double() * weight
            count += weight
        model.train()
        return float(total / count)

    @torch.no_grad()
    def length_losses(self, model: torch.nn.Module, autocast: Any) -> dict[str, float]:
        """Held-out loss at each measurable length on the same tokens: `val_loss_len<k>x` (mean
        over all positions of non-overlapping windows of k·seq_len) and `..._tail` (the last
        quarter of positions of each window, where extrapolation shows)."""
        model.eval()
        T, out = self.spec.data.seq_len, {}
        budget = self._pass_tokens()
        assert self.segments is not None, "eval_lengths set without long segments"
        for k in self.lengths:
            windows = torch.from_numpy(windows_at(self.segments, k, T)).to(self.device)
            L = k * T
            tail = L - max(1, L // 4)
            total = torch.zeros((), device=self.device, dtype=torch.float64)
            tail_total = torch.zeros_like(total)
            for i in range(0, windows.shape[0], max(1, budget // L)):
                w = windows[i : i + max(1, budget // L)]
                with autocast:
                    logits, _, _ = model(w[:, :-1])
                nll = torch.nn.functional.cross_entropy(
                    logits.float().transpose(1, 2), w[:, 1:], reduction="none"
                ).double()  # (B, L)
                total += nll.sum()
                tail_total += nll[:, tail:].sum()
            out[f"val_loss_len{k}x"] = float(total / windows[:, 1:].numel())
            out[f"val_loss_len{k}x_tail"] = float(tail_total / (windows.shape[0] * (L - tail)))
        model.train()
        return out
