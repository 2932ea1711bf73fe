"""The HTTP edge compared: `serve` against the Go reference and against gunicorn with uvicorn's worker.

For each server, in one run on the same machine and the same certificate:

* throughput of ``/mutate`` with the 2-GPU pod (wrk, 8 keep-alive TLS connections), runs
  alternating between the servers so drift hits all alike, and the ratio to Go;
* what 25 stalled connections of each kind (silent TCP, partial ClientHello, partial headers,
  byte by byte, partial body; ``tests/stalls.py``) cost: how many are still open after 20 s,
  and the throughput normal clients get while they are held.

The uvicorn row serves the very decision code of ``serve`` (``admission.decode`` → ``mutate`` →
``encode``) as an ASGI app under ``gunicorn -k uvicorn_worker.UvicornWorker -w 2``, without
logging or metrics: the conventional production pairing, given every advantage. It needs
``pip install uvicorn-worker uvloop httptools`` and is skipped without them.

    python bench/edges.py                  # about 4 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import ssl
import statistics
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import admission as bench  # noqa: E402

from tests.harness import background, free_port, make_certs, running_server, wait_ready  # noqa: E402
from tests.stalls import KINDS, StallWatch, open_stalled  # noqa: E402
from webhook.edge import Limits  # noqa: E402

UVICORN_APP = textwrap.dedent(
    """
    from webhook import admission
    from webhook.config import Config

    CONFIG = Config()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] in ("/healthz", "/readyz"):
            answer = b"ok"
        else:
            answer = admission.encode(admission.mutate(admission.decode(body), CONFIG).response)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})
    """
)


@dataclass
class Server:
    name: str
    port: int
    ca: str
    process: Any


def stall_figures(server: Server, payload: bytes, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=server.ca)
    stalled = [open_stalled(KINDS[i % len(KINDS)], server.port, context, Limits()) for i in range(25 * len(KINDS))]
    watch = StallWatch(stalled)
    figures = bench.wrk_load(server.port, "/mutate", payload, args.connections, args.duration, workdir)
    time.sleep(max(0.0, 20 - args.duration))
    still_open = {kind: sum(1 for s in stalled if s.kind == kind and s.closed_after is None) for kind in KINDS}
    for item in stalled:
        if item.closed_after is None:
            item.sock.close()
    del watch
    return {"rps_while_stalled": round(figures.rps), "errors": figures.errors, "still_open_after_20_s": still_open}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3, help="alternating throughput runs per server")
    args = parser.parse_args(argv)
    payload = bench.bodies()["2-GPU pod"]
    with_uvicorn = all(importlib.util.find_spec(m) for m in ("uvicorn_worker", "uvloop", "httptools"))
    results: dict[str, list[float]] = {}
    stalls: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        certs = make_certs(workdir / "certs")
        reference = bench.build_reference(workdir)
        (workdir / "uvicorn_app.py").write_text(UVICORN_APP)
        with running_server(workdir, cert_dir=certs) as served:
            ours = Server("serve (production defaults)", served.port, served.ca, served.process)
            go_port = free_port()
            go_argv = [str(reference), "-addr", f"127.0.0.1:{go_port}", "-cert", str(certs / "tls.crt"), "-key", str(certs / "tls.key")]
            with background(go_argv, workdir / "go.log"):
                go = Server("Go net/http reference", go_port, str(certs / "ca.crt"), None)
                servers = [ours, go]
                uvicorn_port = free_port()
                uvicorn_argv = [
                    sys.executable, "-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker", "-w", "2",
                    "-b", f"127.0.0.1:{uvicorn_port}", "--keyfile", str(certs / "tls.key"), "--certfile", str(certs / "tls.crt"),
                    "--chdir", str(workdir), "--pythonpath", str(ROOT), "--log-level", "warning", "uvicorn_app:app",
                ]  # fmt: skip
                with contextlib.ExitStack() as stack:
                    if with_uvicorn:
                        uvicorn = stack.enter_context(background(uvicorn_argv, workdir / "uvicorn.log"))
                        wait_ready(f"https://localhost:{uvicorn_port}", str(certs / "ca.crt"), uvicorn)
                        name = "gunicorn + uvicorn_worker, same decision code"
                        servers.append(Server(name, uvicorn_port, str(certs / "ca.crt"), uvicorn))
                    time.sleep(1.0)
                    for server in servers:  # warm-up
                        bench.wrk_load(server.port, "/mutate", payload, args.connections, 2, workdir)
                    for _ in range(args.runs):
                        for server in servers:
                            figures = bench.wrk_load(server.port, "/mutate", payload, args.connections, args.duration, workdir)
                            results.setdefault(server.name, []).append(figures.rps)
                    for server in servers:
                        stalls[server.name] = stall_figures(server, payload, args, workdir)
    go_median = statistics.median(results["Go net/http reference"])
    print(f"machine: {os.cpu_count()} CPUs; /mutate 2-GPU pod, wrk {args.connections} keep-alive TLS connections, {args.duration:.0f} s")
    print("| server | req/s per run | median | ratio to Go |")
    print("|---|---|---:|---:|")
    for name, runs in results.items():
        median = statistics.median(runs)
        print(f"| {name} | {', '.join(f'{r:.0f}' for r in runs)} | {median:.0f} | {median / go_median:.2f} |")
    print(f"\nwith 25 stalled connections of each kind ({', '.join(KINDS)}):")
    for name, figures in stalls.items():
        print(f"- {name}: {figures}")
    if not with_uvicorn:
        print("(uvicorn row skipped: pip install uvicorn-worker uvloop httptools)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
