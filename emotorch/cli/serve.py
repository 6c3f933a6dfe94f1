"""``emotorch serve``: the REST API and the camera page, on uvicorn."""

from __future__ import annotations

import argparse
import os
import socket

from emotorch.cli.options import add_backend, add_db, add_model, add_reading, add_threads
from emotorch.errors import DataError
from emotorch.runtime import threads
from emotorch.runtime.registry import STREAM_MODEL


def add(sub: argparse._SubParsersAction) -> None:
    srv = sub.add_parser("serve", help="the REST API and the camera page (FastAPI + uvicorn)")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    srv.add_argument("--port", type=int, default=8000, help="port to listen on")
    srv.add_argument("--workers", type=int, default=1, help="server processes, each with its own model")
    add_model(srv, STREAM_MODEL)
    add_backend(srv)
    srv.add_argument("--max-upload-mb", type=float, default=10.0, help="bigger request bodies get 413")
    srv.add_argument(
        "--rate-limit",
        type=float,
        default=0.0,
        metavar="PER_SECOND",
        help="requests a second per client on /v1/ (0: no limit)",
    )
    srv.add_argument("--rate-burst", type=float, help="requests a client may make at once (default: 2x the rate)")
    srv.add_argument(
        "--read-timeout",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="a request whose body stalls this long gets 408 and is closed; one whose headers "
        "have not all arrived by then is closed",
    )
    srv.add_argument(
        "--trust-proxy",
        metavar="ADDRESSES",
        help="comma-separated addresses of reverse proxies whose X-Forwarded-For names the client "
        "(for rate limits and logs); by default no forwarded header is believed",
    )
    srv.add_argument(
        "--batch-window-ms", type=float, default=3.0, help="how long a request waits for others to share its model call"
    )
    add_db(srv)
    add_reading(srv)
    add_threads(srv)
    srv.set_defaults(run=serve_command, own_threads=True)  # each worker process sets its own thread budget


def serve_command(args: argparse.Namespace) -> None:
    # uvicorn, SQLAlchemy and ONNX Runtime load when the server starts, not for --help
    import uvicorn

    from emotorch.recommend import open_database
    from emotorch.runtime.registry import load_model
    from emotorch.serve.app import ENV, Settings

    if args.workers < 1 or not 0 <= args.port <= 65535:
        raise ValueError("--workers must be at least 1 and --port within 0-65535")
    load_model(args.model)  # a missing or damaged model, or an unusable database: one line, before any worker
    open_database(args.db).dispose()
    try:  # a busy port: one line now, not uvicorn's six and exit 3
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        raise DataError(f"{args.host}:{args.port}: cannot listen there ({why})") from None
    settings = Settings(
        model=args.model,
        backend=args.backend,
        db=args.db,
        reading=args.reading,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        rate_limit=args.rate_limit,
        rate_burst=args.rate_burst,
        batch_window_ms=args.batch_window_ms,
        read_timeout_s=args.read_timeout,
        threads=threads.budget(args.threads, args.workers),
    )
    os.environ[ENV] = settings.to_env()  # each worker process builds its app from these settings
    # a client is the address that connected, unless it is a proxy the operator named; stalled headers time out
    uvicorn.run(
        "emotorch.serve:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning" if args.quiet else "info",
        proxy_headers=bool(args.trust_proxy),
        forwarded_allow_ips=args.trust_proxy or None,
        http="emotorch.serve.protocol:HeaderDeadline",
    )
