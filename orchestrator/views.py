"""What `plan` and `status` show: the ledger read without writing anything, and one row view
per run (the dicts `--json` prints, the columns the tables print).

A study's rows are read once (`read_study`): a run left `running` by a driver that is gone shows
as `interrupted`; rows of a store not yet migrated show under today's run keys; a warning says
when the file's recipe is not the one the study ran with.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from trainer.redact import redact_text

from .store import tracking
from .store.states import RunState
from .study.config import StudyConfig

if TYPE_CHECKING:  # SQLAlchemy (the ledger) loads only when a command reads it
    from .store.ledger import Ledger, LedgerRow
    from .study.grid import PlannedRun


class LedgerUnreadable(Exception):
    """The ledger exists but cannot be read: exit 1 with the reason."""


def redact(uri: str) -> str:
    """A URI fit to print: a password in it (postgresql://user:PASSWORD@host/db) is masked."""
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(uri)
    if u.password:
        netloc = u.netloc.replace(f":{u.password}@", ":***@", 1)
        return urlunsplit(u._replace(netloc=netloc))
    return uri


# --------------------------------------------------------------------------- reading the ledger


@dataclass(frozen=True)
class StudyView:
    rows: dict[str, LedgerRow]  # run key -> row, as a reader should see it
    warning: str = ""
    experiment_id: str | None = None  # as the ledger recorded it (None before any run)


def _open(settings: tracking.Settings) -> Ledger | None:
    """The ledger, read-only; None when there is none yet. LedgerUnreadable when it cannot be
    read (never show every run as pending)."""
    if not tracking.store_exists(settings.ledger_uri):
        return None
    from .store.ledger import Ledger

    ledger = None
    try:
        ledger = Ledger(settings.ledger_uri, create=False)
        import sqlalchemy as sa

        if sa.inspect(ledger.engine).has_table("scalelab_runs"):  # else: not created yet
            return ledger
        ledger.dispose()
        return None
    except Exception as e:  # noqa: BLE001 - unreadable: say so
        if ledger is not None:
            ledger.dispose()
        raise _unreadable(settings, e) from None


def _unreadable(settings: tracking.Settings, e: Exception) -> LedgerUnreadable:
    reason = redact_text(str(e).splitlines()[0] if str(e) else "")[:300]
    return LedgerUnreadable(
        f"cannot read the ledger {redact(settings.ledger_uri)}: "
        f"{type(e).__name__}: {reason}; fix its permissions or restore "
        "it (--ledger-uri / SCALELAB_LEDGER_URI)"
    )


def read_rows(settings: tracking.Settings, study: str) -> dict[str, LedgerRow]:
    """A study's ledger rows by key, as stored; {} when there is no ledger yet."""
    ledger = _open(settings)
    if ledger is None:
        return {}
    try:
        return ledger.for_study(study).snapshot().rows
    except Exception as e:  # noqa: BLE001 - unreadable: say so
        raise _unreadable(settings, e) from None
    finally:
        ledger.dispose()


def read_study(settings: tracking.Settings, cfg: StudyConfig) -> StudyView:
    """The study as `plan`/`status` show it (one read of the ledger; writes nothing)."""
    ledger = _open(settings)
    if ledger is None:
        return StudyView({})
    try:
        try:
            rows = ledger.for_study(cfg.study).snapshot().rows
        except Exception as e:  # noqa: BLE001 - unreadable: say so
            raise _unreadable(settings, e) from None
        return _inspect(ledger, cfg, rows)
    finally:
        ledger.dispose()


def _inspect(ledger: Ledger, cfg: StudyConfig, rows: dict[str, LedgerRow]) -> StudyView:
    import sqlalchemy as sa

    from .run.driverlock import driver_alive
    from .store.bookkeeping import legacy_fingerprints

    try:
        study = ledger.study(cfg.study)
        legacy = legacy_fingerprints(cfg, ledger) if rows else ()
        rows = _current_keys(rows, ledger.specs(cfg.study)) if rows else rows
    except sa.exc.SQLAlchemyError:
        return StudyView(rows)
    exp_id = (study or {}).get("experiment_id")
    if not driver_alive(study):
        rows = {k: r.as_seen_without_driver() for k, r in rows.items()}
    ran = (study or {}).get("fingerprint")
    if rows and ran and ran != tracking.fingerprint_hash(cfg.fingerprint()) and ran not in legacy:
        warning = (
            f"the data, model or train settings in {cfg.source_path or 'the file'}"
            f" differ from those study {cfg.study!r} ran with: `scalelab run` "
            "will refuse; restore them, or give the changed recipe a new study name"
        )
        return StudyView(rows, warning, exp_id)
    return StudyView(rows, experiment_id=exp_id)


def _current_keys(rows: dict[str, LedgerRow], specs: dict[tuple[str, str], str]) -> dict[str, LedgerRow]:
    """Rows of a store not yet migrated, under today's run keys (what `run` will rekey)."""
    from .store.bookkeeping import _spec_of

    out = {}
    for key, row in rows.items():
        spec = _spec_of(row, specs)
        new = spec.key() if spec is not None and key == spec.legacy_key() else key
        out[new] = replace(row, run_key=new)
    return out


# --------------------------------------------------------------------------- row views


def plan_rate(cfg: StudyConfig, rows: dict[str, LedgerRow]) -> tuple[float, str]:
    """FLOP/s per run: measured on this study's finished runs of its device kind, else assumed."""
    from .study.estimate import ASSUMED_CPU_FLOPS, assumed_rate, device_kind, measured_rate

    kind = device_kind(cfg.resources.num_gpus, cfg.train.device)
    rate, n = measured_rate(rows.values(), kind)
    if rate:
        return rate, f"measured on {n} finished {kind} run(s) of this study"
    rate = assumed_rate(kind, cfg.resources.num_cpus, cfg.resources.num_gpus)
    how = "assumed MFU 35%" if kind == "cuda" else f"assumed {ASSUMED_CPU_FLOPS:.0e} FLOP/s per core"
    return rate, f"{how}; nothing of this study measured on {kind} yet"


def plan_slots(cfg: StudyConfig, max_concurrent: int | None) -> tuple[int, str]:
    """Runs at once on the embedded local Ray (a cluster may hold more: pass --max-concurrent)."""
    if cfg.resources.num_gpus:
        local, why = 1, "1 local GPU assumed"
    else:
        cpus = os.cpu_count() or 1
        local = max(1, int(cpus // cfg.resources.num_cpus))
        why = f"{cpus} local CPUs / resources.num_cpus {cfg.resources.num_cpus:g}"
    if max_concurrent:
        return min(local, max_concurrent), f"--max-concurrent {max_concurrent}, {why}"
    return local, why


def plan_row(p: PlannedRun, row: LedgerRow | None, flops_trained: float, rate: float) -> dict[str, Any]:
    """A run as `plan --json` prints it."""
    from .study.corpus_plan import run_epochs
    from .study.memory import run_memory

    m = p.spec.model
    return {
        "run_key": p.key,
        "label": p.label,
        "n_layer": m.n_layer,
        "d_model": m.d_model,
        "n_head": m.n_head,
        "n_params": p.n_params,
        "n_params_active": p.n_params_active,
        "n_params_nonembedding": p.n_params_nonembedding,
        "tokens": p.tokens,
        "tokens_per_param": p.tokens / p.n_params_active,
        "flops": p.flops,
        "flops_trained": flops_trained,
        "flops_6n": p.flops_6n,
        "experts": m.experts,
        "top_k": m.top_k,
        "seed": p.spec.seed,
        "trunk_key": p.trunk_key,
        "budget": p.budget,
        "est_wall_time_s": flops_trained / rate,
        "est_memory_bytes": sum(run_memory(p).values()),
        "status": RunState.of(row.state if row else None).value,
        "epochs": run_epochs(p.spec),  # corpus: passes over the training split (else null)
    }


def plan_line(r: dict[str, Any], epochs: bool = False) -> str:
    """A `plan_row` as a line of the `plan` table (columns: plan_header(epochs))."""
    ep = f" {r['epochs']:6.2f}" if epochs else ""
    return (
        f"{r['run_key']:16} {r['label']:18} {r['n_params']:9.3g} {r['n_params_nonembedding']:9.3g} "
        f"{r['n_params_active']:9.3g} {r['tokens']:9.3g} {r['tokens_per_param']:7.1f} "
        f"{r['flops']:9.3g} {r['flops_trained']:9.3g} {r['est_wall_time_s']:8.0f}s{ep}  {r['status']}"
    )


def plan_header(epochs: bool = False) -> str:
    """The `plan` table's header; `epochs` adds the corpus column (passes over its training split)."""
    return (
        f"{'run_key':16} {'shape':18} {'N total':>9} {'N non-emb':>9} {'N active':>9} "
        f"{'tokens':>9} {'D/N':>7} {'FLOPs':>9} {'trained':>9} {'est time':>9}"
        f"{' epochs' if epochs else ''}  status"
    )


PLAN_HEADER = plan_header()


def status_row(p: PlannedRun, r: LedgerRow | None) -> dict[str, Any]:
    """A run as `status --json` prints it."""
    return {
        "run_key": p.key,
        "label": p.label,
        "n_params": p.n_params,
        "tokens": p.tokens,
        "state": RunState.of(r.state if r else None).value,
        "attempts": r.attempts if r else 0,
        "tokens_done": (r.tokens_done or 0) if r else 0,
        "val_loss": r.val_loss if r else None,
        "mlflow_run_id": r.mlflow_run_id if r else None,
        "error": redact_text(r.error or "").strip().splitlines()[-1:] if r and r.error else None,
    }


def status_line(r: dict[str, Any]) -> str:
    """A `status_row` as a line of the `status` table."""
    vl = f"{r['val_loss']:.4f}" if r["val_loss"] is not None else ""
    err = f"  {r['error'][0][:100]}" if r["error"] else ""
    return (
        f"{r['run_key']:16} {r['label']:18} {r['tokens']:9.3g} {r['state']:9} "
        f"attempts={r['attempts']} {vl}{err}"
    )


def fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


# --------------------------------------------------------------------------- `run`'s last words


def run_summary(cfg: StudyConfig, settings: tracking.Settings, outcome: Any, ui_command: str) -> list[str]:
    """What `scalelab run` prints at the end: what did not simply finish, the counts by state,
    and where the store, ledger, checkpoints and the MLflow view are."""
    lines = [redact_text(m) for m in outcome.messages]
    counts: dict[str, int] = {}
    for s in outcome.states.values():
        counts[s] = counts.get(s, 0) + 1
    lines.append(f"study {cfg.study}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    uri = redact(settings.tracking_uri)
    lines.append(
        f"MLflow store: {uri} (experiment {cfg.study!r}, id "
        f"{outcome.experiment_id}); browse with: scalelab ui --tracking-uri {uri}"
    )
    lines.append(f"ledger: {redact(settings.ledger_uri)}; checkpoints: {settings.checkpoint_root}")
    if outcome.experiment_id:
        from .store.mlflow_view import view_hint

        lines.append(view_hint(settings.tracking_uri, outcome.experiment_id, ui_command))
    return lines


def adaptive_summary(cfg: StudyConfig, res: Any, objective: str, target_flops: float) -> list[str]:
    """What `scalelab run --adaptive` prints at the end: the answer with its interval, and why
    the rounds stopped."""
    lines = [redact_text(m) for m in res.outcome.messages]
    what = "N_opt" if objective == "log_n_opt" else "loss"
    if res.ci95:
        lines.append(
            f"{what} at C = {target_flops:.3g}: {res.value:.4g}, 95% interval "
            f"[{res.ci95[0]:.4g}, {res.ci95[1]:.4g}] (±{res.relative_halfwidth:.1%})"
        )
    lines.append(
        f"study {cfg.study}: {len(res.rounds)} adaptive round(s), {res.flops_spent:.3g} FLOPs "
        f"spent; {res.reason or 'stopped: a run did not finish'}"
    )
    return lines
