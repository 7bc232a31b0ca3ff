"""Secrets from a `.env` file in the working directory, safe to use in an untrusted checkout.

A `.env` may set only the keys in DOTENV_KEYS; a variable already in the environment wins.
Values are taken literally: `${VAR}` is never expanded (python-dotenv expands it by default),
so a planted `.env` cannot copy an exported secret into a URL that scalelab then contacts or
prints. A `.env` that selects a store (STORE_KEYS: where results and the ledger go) is used
only with `--trust-env`, and the store it selects is printed (password masked) either way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection
from pathlib import Path

from trainer.redact import redact_text

from .study.values import StudyError

# Where results go: a .env that sets these redirects a study's data, so it needs --trust-env.
STORE_KEYS = ("MLFLOW_TRACKING_URI", "SCALELAB_LEDGER_URI")
# What `.env` may set: the secrets README and .env.example document (tokens, passwords) and the
# store URIs that embed passwords. Anything else (PYTHONPATH, SCALELAB_CHECKPOINT_DIR, ...) in an
# untrusted checkout's .env could redirect data or run code, so it is ignored.
DOTENV_KEYS = (
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_MODE",
    "POSTGRES_PASSWORD",
    "PGPASSWORD",
    *STORE_KEYS,
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)


def load_dotenv_file(path: str = ".env", *, trust: bool = False, flags: Collection[str] = ()) -> None:
    """Copy the allowed keys of `path` (if it exists) into os.environ, where MLflow, Ray and
    psycopg read them. `flags`: STORE_KEYS a command-line flag overrides (their .env value is
    not used). A .env store key without `trust` is bad input (StudyError naming --trust-env)."""
    if not Path(path).is_file():
        return
    from dotenv import dotenv_values

    values = {k: v for k, v in dotenv_values(path, interpolate=False).items() if v is not None}
    ignored = sorted(k for k in values if k not in DOTENV_KEYS)
    stores = {k: values[k] for k in STORE_KEYS if k in values and k not in os.environ and k not in flags}
    if stores and not trust:
        shown = ", ".join(f"{k}={redact_text(v)}" for k, v in stores.items())
        raise StudyError(
            "--trust-env",
            f"{path} selects where results go ({shown}); if you trust this checkout, pass "
            f"--trust-env (or export {' and '.join(stores)} yourself); otherwise delete "
            f"{' and '.join(stores)} from {path}",
        )
    for k in DOTENV_KEYS:
        if k in values and k not in os.environ and (k not in STORE_KEYS or k in stores):
            os.environ[k] = values[k]
    for k, v in stores.items():
        print(f"{path}: {k}={redact_text(v)} (trusted: --trust-env)", file=sys.stderr)
    literal = sorted(k for k in values if k in DOTENV_KEYS and "${" in values[k])
    if literal:
        print(
            f"warning: {path}: {', '.join(literal)} contain '${{': .env values are taken "
            "literally (no ${VAR} expansion); write the value itself",
            file=sys.stderr,
        )
    if ignored:
        print(
            f"warning: {path}: ignored {', '.join(ignored)[:300]} (a .env may set only "
            f"{', '.join(DOTENV_KEYS)}; export other settings or pass flags)",
            file=sys.stderr,
        )
