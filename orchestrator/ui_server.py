"""`scalelab ui`: MLflow's own server app, served in this process by uvicorn.

Why not exec `mlflow server`: that is two more interpreters (the click CLI, then uvicorn) that each
import MLflow before the first page, ~12 lines of uvicorn/MLflow log noise after our URLs, and
a traceback on Ctrl-C. Here one process imports `mlflow.server.fastapi_app`, the store is opened
once (to list the studies too), uvicorn logs warnings only, and Ctrl-C stops it with one line.

MLflow 3.17's UI opens every page in "GenAI" mode unless the URL says `workflowType=...` or the
browser has chosen a mode before: the choice is a UI preference kept in the browser's
localStorage (`mlflow.workflowType_v1`), and MLflow's Assistant panel opens by itself on a
local server's first visit (`mlflow.assistant.fab.autoOpenedOnFirstLoad_v1`). The server below
gives the UI's index page a two-line script that sets those two preferences to "Model training"
and "already opened" where the browser has no value yet, so the home page, the experiment, its
run pages and breadcrumbs open in training mode; a user who switches mode keeps their choice.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from trainer.redact import redact_text

log = logging.getLogger(__name__)

# The MLflow server's settings wherever scalelab starts one: no job runner (idle CPU, memory),
# and a DB pool that 32+ concurrent runs do not exhaust (MLflow's default 5 + 10 overflow lost
# points at K=32 in benchmarks/tracking_throughput.py).
SERVER_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "20",
    "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "20",
}
# MLflow UI preferences (localStorage key -> JSON value) set where the browser has none yet.
UI_DEFAULTS = {
    "mlflow.workflowType_v1": "machine_learning",  # "Model training", not "GenAI"
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,  # the Assistant panel stays closed
}
INDEX_PATHS = ("/", "/index.html")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


def defaults_script() -> bytes:
    """The <script> that writes UI_DEFAULTS into localStorage where a key is unset; it runs
    before MLflow's bundle, which reads the preferences when it starts."""
    pairs = json.dumps({k: json.dumps(v) for k, v in UI_DEFAULTS.items()})
    body = (
        f"(function(){{try{{var d={pairs},s=window.localStorage;"
        "for(var k in d){if(s.getItem(k)===null){s.setItem(k,d[k]);}}}catch(e){}})();"
    )
    return f'<script id="scalelab-ui-defaults">{body}</script>'.encode()


def with_ui_defaults(html: bytes) -> bytes:
    """MLflow's index page with defaults_script() first in <head>."""
    i = html.find(b"<head>")
    if i < 0:
        return html
    i += len(b"<head>")
    return html[:i] + defaults_script() + html[i:]


class TrainingModeDefaults:
    """ASGI middleware: the UI's index page (GET / and /index.html, a 200 text/html answer)
    gets defaults_script(); every other request goes to MLflow's app untouched."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET" or scope.get("path") not in INDEX_PATHS:
            await self.app(scope, receive, send)
            return
        start: Message = {}
        chunks: list[bytes] = []

        async def buffered(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await _send_page(send, start, b"".join(chunks))

        await self.app(scope, receive, buffered)


async def _send_page(send, start: Message, body: bytes) -> None:
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    types = {k.lower(): v for k, v in headers}
    if (
        start.get("status") == 200
        and types.get(b"content-type", b"").startswith(b"text/html")
        and b"content-encoding" not in types
    ):
        body = with_ui_defaults(body)
    headers.append((b"content-length", str(len(body)).encode()))
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def server_environment(uri: str, artifact_root: str) -> dict[str, str]:
    """What `mlflow server` puts in its workers' environment for these flags (MLflow's handlers
    read the store from there), plus SERVER_ENV."""
    from mlflow.server.constants import (
        ARTIFACT_ROOT_ENV_VAR,
        BACKEND_STORE_URI_ENV_VAR,
        REGISTRY_STORE_URI_ENV_VAR,
    )

    return {
        **SERVER_ENV,
        BACKEND_STORE_URI_ENV_VAR: uri,
        REGISTRY_STORE_URI_ENV_VAR: uri,
        ARTIFACT_ROOT_ENV_VAR: artifact_root,
        "_MLFLOW_IN_JOB_EXECUTOR": "false",
    }


def _open_store(uri: str, artifact_root: str):
    """MLflow's server-side stores, initialised as `mlflow server` does; the tracking store."""
    os.environ.update(server_environment(uri, artifact_root))
    from mlflow.server import handlers

    handlers.initialize_backend_stores(uri, uri, artifact_root)
    return handlers._get_tracking_store()


def scalelab_experiments(store) -> list[tuple[str, str]]:
    """(name, id) of the store's experiments that carry the scaling-law view; [] if unreadable."""
    from .store.mlflow_view import TAG_PREFIX, VIEW_KEY

    try:
        exps = store.search_experiments(max_results=1000)
    except Exception as e:  # noqa: BLE001 - the server reports a broken store itself
        log.debug("could not list the experiments: %s", e)
        return []
    return [(e.name, e.experiment_id) for e in exps if TAG_PREFIX + VIEW_KEY in e.tags]


def _mlflow_app() -> ASGIApp:
    with warnings.catch_warnings():  # starlette.middleware.wsgi's deprecation, MLflow's to fix
        warnings.simplefilter("ignore")
        from mlflow.server.fastapi_app import app
    return TrainingModeDefaults(app)


def serve(uri: str, artifact_root: str, host: str, port: int) -> int:
    """Serve the MLflow UI on `uri` until Ctrl-C (or SIGTERM); prints the URLs, then one line
    when the first page can load. Returns 0."""
    from .store.mlflow_view import FIT_VIEW_KEY, compare_url, view_url

    t0 = time.monotonic()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow reads it when imported
    base = f"http://{host}:{port}"
    print(f"MLflow UI on {base} for {redact_text(uri)} (Ctrl-C to stop)", flush=True)
    try:
        store = _open_store(uri, artifact_root)
        studies = scalelab_experiments(store)
        for name, exp_id in studies:
            print(f"  {name}: {view_url(base, exp_id)}", flush=True)
        if studies:
            fits = (
                view_url(base, studies[0][1], FIT_VIEW_KEY)
                if len(studies) == 1
                else compare_url(base, [i for _, i in studies])
            )
            print(f"  fit results (logged by `scalelab report`): {fits}", flush=True)
        server = _server(_mlflow_app(), host, port)
        threading.Thread(target=_say_when_ready, args=(server, t0), daemon=True).start()
        server.run()
    except KeyboardInterrupt:
        pass
    print("MLflow UI stopped", flush=True)
    # The cyclic GC at interpreter exit walks every object of MLflow's server (~3 s on 2 busy
    # cores); frozen objects are skipped, so Ctrl-C returns the prompt at once.
    gc.freeze()
    return 0


def _server(app: ASGIApp, host: str, port: int):
    """uvicorn, one worker (MLflow's default of 4 costs ~2.5 GB and ~44 ms per keep-alive
    request), warnings only: no access log, no start-up banner."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, log_config=None)
    return uvicorn.Server(config)


def _say_when_ready(server, t0: float) -> None:
    while not server.started and not server.should_exit:
        time.sleep(0.1)
    if server.started:
        print(f"ready after {time.monotonic() - t0:.1f} s", flush=True)
