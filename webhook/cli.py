"""The ``gpu-shard-webhook`` command: serve, certs, preview, manifests.

Only translation lives here: flags and ``GSW_*`` variables into a Config, files
into objects, results into exit codes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from webhook.config import SETTINGS, Config, config_from, parse_boolean

DEFAULT_SERVICE = "gpu-shard-webhook"
DEFAULT_NAMESPACE = "gpu-shard-system"


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _env_float(name: str, default: float | None) -> float | None:
    value = os.environ.get(name)
    return float(value) if value is not None else default


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("rules (also GSW_* environment variables)")
    for setting in SETTINGS:
        group.add_argument(
            setting.flag, dest=f"cfg_{setting.name}", type=setting.parse, default=None, help=f"{setting.help} [{setting.env}]"
        )


def _config(args: argparse.Namespace) -> Config:
    overrides = {s.name: getattr(args, f"cfg_{s.name}") for s in SETTINGS}
    return config_from(os.environ, overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu-shard-webhook", description="Multi-GPU llama.cpp sharding for plain Kubernetes pods.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the admission webhook (gunicorn over TLS)")
    serve.add_argument("--host", default=os.environ.get("GSW_HOST", "0.0.0.0"))
    serve.add_argument("--port", type=int, default=_env_int("GSW_PORT", 8443))
    serve.add_argument(
        "--cert-dir",
        type=Path,
        default=Path(os.environ.get("GSW_CERT_DIR", "certs")),
        help="holds tls.crt and tls.key (created with a dev CA when absent)",
    )
    serve.add_argument("--workers", type=int, default=_env_int("GSW_WORKERS", 2), help="event-loop worker processes (one per core)")
    serve.add_argument(
        "--threads", type=int, default=_env_int("GSW_THREADS", 2), help="threads per worker for /healthz, /readyz, /metrics (Flask)"
    )
    serve.add_argument("--keepalive", type=int, default=_env_int("GSW_KEEPALIVE", 95), help="seconds an idle keep-alive connection stays")
    serve.add_argument("--graceful-timeout", type=int, default=_env_int("GSW_GRACEFUL_TIMEOUT", 25))
    serve.add_argument(
        "--handshake-timeout", type=float, default=_env_float("GSW_HANDSHAKE_TIMEOUT", 5), help="seconds a TLS handshake may take"
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=_env_float("GSW_HEADER_TIMEOUT", 5),
        help="seconds from a request's first byte to the end of its headers",
    )
    serve.add_argument("--body-timeout", type=float, default=_env_float("GSW_BODY_TIMEOUT", None), help="seconds to receive a body (10)")
    serve.add_argument(
        "--write-timeout",
        type=float,
        default=_env_float("GSW_WRITE_TIMEOUT", None),
        help="seconds a client may leave a response unread (10)",
    )
    serve.add_argument(
        "--io-timeout",
        type=float,
        default=_env_float("GSW_IO_TIMEOUT", None),
        help="the body and write timeouts together (kept from the thread-pool edge; --body-timeout and --write-timeout win)",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=_env_int("GSW_MAX_CONNECTIONS", 1000),
        help="connections one worker holds; past it new ones are refused at once",
    )
    serve.add_argument("--log-level", default=os.environ.get("GSW_LOG_LEVEL", "info"))
    serve.add_argument("--bench-allow-endpoint", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--service", default=DEFAULT_SERVICE, help="service name for the SANs of a created certificate")
    serve.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="namespace for the SANs of a created certificate")
    serve.add_argument(
        "--cluster-checks",
        type=parse_boolean,
        default=parse_boolean(os.environ.get("GSW_CLUSTER_CHECKS", "true")),
        help="watch Nodes to reject GPU counts no node can hold (needs in-cluster config or a kubeconfig)",
    )
    serve.add_argument(
        "--dra",
        type=parse_boolean,
        default=parse_boolean(os.environ.get("GSW_DRA", "true")),
        help="watch ResourceClaimTemplates, ResourceClaims, DeviceClasses and ResourceSlices to count GPUs from DRA claims",
    )
    serve.add_argument(
        "--kubeconfig",
        type=Path,
        default=os.environ.get("GSW_KUBECONFIG"),
        help="kubeconfig for the node watch (default: in-cluster, then $KUBECONFIG)",
    )
    _add_config_flags(serve)

    certs = commands.add_parser("certs", help="write a CA and a serving certificate for the webhook's Service")
    certs.add_argument("--service", default=DEFAULT_SERVICE)
    certs.add_argument("--namespace", default=DEFAULT_NAMESPACE)
    certs.add_argument("--out", type=Path, required=True)
    certs.add_argument("--days", type=int, default=365)

    preview = commands.add_parser("preview", help="show offline what the webhook does to the objects of a manifest")
    preview.add_argument("-f", "--filename", required=True, help="YAML file, or - for standard input")
    preview.add_argument("--nodes", help="the output of 'kubectl get nodes -o yaml', for the cluster-capacity checks")
    preview.add_argument(
        "--cluster-objects",
        help="the output of 'kubectl get resourceclaimtemplates,resourceclaims,deviceclasses,resourceslices -A -o yaml', for DRA claims",
    )
    preview.add_argument(
        "-o", "--output", choices=("yaml", "json"), help="print the objects as the API server would store them (denied ones left out)"
    )
    _add_config_flags(preview)
    bench = commands.add_parser("bench-llm", help="measure a llama-server's completion throughput (the test plan's Test 5)")
    bench.add_argument("--url", required=True, help="e.g. http://localhost:8080")
    bench.add_argument("--iterations", type=int, default=5)
    bench.add_argument("--max-tokens", type=int, default=500)
    bench.add_argument("--prompt", default=None)
    bench.add_argument("--stream", action="store_true", help="stream tokens and measure time to first token")
    bench.add_argument("--json", dest="json_path", help="also write the figures as JSON to this file (- for stdout)")
    bench.add_argument("--configuration", default="Dual GPU", help="comparison-matrix row: configuration")
    bench.add_argument("--model", default="13B", help="comparison-matrix row: model")
    bench.add_argument("--gpus", default="2", help="comparison-matrix row: GPU count")
    bench.add_argument("--target", default="40-50", help="comparison-matrix row: target tok/s")
    return parser


def run_bench_llm(args: argparse.Namespace) -> int:
    from webhook import llmbench

    summary = llmbench.run(args.url, args.iterations, args.max_tokens, args.prompt or llmbench.DEFAULT_PROMPT, args.stream)
    print(llmbench.report(summary))
    print()
    print(llmbench.matrix_row(summary, args.configuration, args.model, args.gpus, args.target))
    if args.json_path == "-":
        print(llmbench.as_json(summary))
    elif args.json_path:
        Path(args.json_path).write_text(llmbench.as_json(summary) + "\n")
    return 0 if summary.errors == 0 else 1


def _read(filename: str) -> str:
    if filename == "-":
        return sys.stdin.read()
    return Path(filename).read_text(encoding="utf-8")


def run_preview(args: argparse.Namespace) -> int:
    import yaml

    from webhook.claims import claim_objects_from
    from webhook.cluster import Cluster
    from webhook.inventory import inventory_from
    from webhook.preview import objects, preview_object, render, render_stored, tally

    config = _config(args)
    try:
        documents = list(objects(yaml.safe_load_all(_read(args.filename))))
        extra_objects = list(objects(yaml.safe_load_all(_read(args.cluster_objects)))) if args.cluster_objects else []
        nodes = inventory_from(objects(yaml.safe_load_all(_read(args.nodes))), config) if args.nodes else None
    except (OSError, yaml.YAMLError) as error:
        print(f"preview: cannot read input: {error}", file=sys.stderr)
        return 2
    claims = claim_objects_from([*extra_objects, *documents])
    cluster = Cluster(nodes=(lambda: nodes) if nodes is not None else None, claims=lambda: claims)
    results = [preview_object(obj, config, cluster) for obj in documents]
    if args.output:
        sys.stdout.write(render_stored(results, args.output))
        for result in results:
            if result.review is not None and not result.review.allowed:
                print(f"preview: {result.kind} {result.name} denied:", file=sys.stderr)
                for violation in result.review.violations:
                    print(f"- {violation.render()}", file=sys.stderr)
    else:
        sys.stdout.write(render(results))
    admitted, denied, passed = tally(results)
    print(f"preview: {admitted} admitted, {denied} denied, {passed} passed through", file=sys.stderr)
    return 1 if denied else 0


def run_certs(args: argparse.Namespace) -> int:
    from webhook.certs import LOCAL_NAMES, make_bundle, service_dns_names, write_bundle

    names = [*service_dns_names(args.service, args.namespace), *LOCAL_NAMES]
    write_bundle(make_bundle(names, days=args.days), args.out)
    print(f"wrote {args.out}/ca.crt, ca.key, tls.crt, tls.key for {', '.join(names)}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    config = _config(args)
    # prometheus_client picks its storage when first imported: set this before. The
    # folder must exist and start empty (an emptyDir survives a container restart).
    metrics_dir = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="gsw-metrics-")))
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):
        stale.unlink()
    from webhook import metrics
    from webhook.certs import CA_CERT, ensure_serving_files
    from webhook.cluster import NO_CLUSTER, Cluster
    from webhook.edge import Application, Limits
    from webhook.server import create_app
    from webhook.serving import ServeOptions, WebhookServer, cert_watcher, configure_logging, readiness

    log_handler = configure_logging(args.log_level)
    if ensure_serving_files(args.cert_dir, args.service, args.namespace):
        print(f"created a development CA: {args.cert_dir / CA_CERT} (trust it to call https://localhost:{args.port})", file=sys.stderr)
    watcher = cert_watcher(args.cert_dir)
    watch = _cluster_watch(args, config)
    io_timeout = args.io_timeout if args.io_timeout is not None else 10.0
    limits = Limits(
        handshake_timeout=args.handshake_timeout,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout if args.body_timeout is not None else io_timeout,
        write_timeout=args.write_timeout if args.write_timeout is not None else io_timeout,
        keepalive=args.keepalive,
        max_connections=args.max_connections,
        body_limit=config.body_limit,
        graceful_timeout=args.graceful_timeout,
    )
    options = ServeOptions(host=args.host, port=args.port, workers=args.workers, log_level=args.log_level, limits=limits)
    cluster = NO_CLUSTER
    if watch is not None:
        cluster = Cluster(
            nodes=watch.nodes if args.cluster_checks else None,
            claims=watch.claims if args.dra else NO_CLUSTER.claims,
            network_policies=watch.network_policies if args.cluster_checks else None,
        )
    check = readiness(watcher, config)
    app = create_app(
        config,
        readiness=check,
        cluster=cluster,
        allow_endpoint=args.bench_allow_endpoint,
        info_line=log_handler.write_line,
    )
    application = Application(
        app.admissions,  # type: ignore[attr-defined]
        app.wsgi_app,
        watcher,
        limits,
        wsgi_threads=args.threads,
        after_fork=watch.start if watch is not None else None,
        readiness=check,
    )
    hooks: dict[str, Any] = {
        "when_ready": lambda server: metrics.master_ready(),
        "child_exit": lambda server, worker: metrics.worker_exited(worker.pid),
    }
    WebhookServer(application, options, hooks).run()
    return 0


def _cluster_watch(args: argparse.Namespace, config: Config) -> Any:
    """The watches of Nodes and DRA objects, or None (both off, or no cluster to talk to)."""
    if not args.cluster_checks and not args.dra:
        return None
    from webhook.watch import ClusterWatch, load_api_client

    api = load_api_client(args.kubeconfig)
    if api is None:
        print("no in-cluster config and no kubeconfig: cluster checks and DRA claim lookups are off", file=sys.stderr)
        return None
    return ClusterWatch(api, config, nodes=args.cluster_checks, dra=args.dra)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return run_serve(args)
        if args.command == "certs":
            return run_certs(args)
        if args.command == "bench-llm":
            return run_bench_llm(args)
        return run_preview(args)
    except ValueError as error:  # a bad GSW_* value
        print(f"gpu-shard-webhook: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
