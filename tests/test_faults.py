"""Reliability under faults: the real gunicorn server over TLS under a steady request stream,
with every response counted, while workers die, certificates rotate, the server reloads
and stops, and clients misbehave. Tests assert invariants (zero failures where zero is
the goal); durations are printed as figures, never asserted."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.cases import by_name
from tests.harness import admission_review, eventually, running_server
from tests.loadclient import LoadClient, Tally, dropped
from tests.stalls import KINDS, StallWatch, open_stalled
from webhook.certs import fingerprint, make_bundle, write_bundle
from webhook.edge import Limits

pytestmark = pytest.mark.faults

TEMPLATE = json.dumps(admission_review(by_name("plan test 1: 2-GPU Llama-2-13B Deployment pod").fresh_pod()))
PLACEHOLDER = json.loads(TEMPLATE)["request"]["uid"]


def body(uid: str) -> bytes:
    return TEMPLATE.replace(PLACEHOLDER, uid).encode()


def throughput(tally: Tally, start: float, end: float) -> float:
    return tally.ok_between(start, end) / (end - start)


def test_sigkill_of_a_worker_loses_at_most_its_requests(tmp_path: Path, figures: list[tuple[str, dict[str, Any]]]) -> None:
    with running_server(tmp_path) as server:  # the production defaults
        client = LoadClient(server.port, server.ca, "/mutate", body, connections=8).start()
        time.sleep(2.0)
        workers = server.worker_pids()
        killed_at = time.monotonic()
        os.kill(workers[0], signal.SIGKILL)
        respawn = eventually(lambda: len(set(server.worker_pids()) - {workers[0]}) == len(workers))
        time.sleep(3.0)
        tally = client.stop()
    baseline = throughput(tally, killed_at - 1.5, killed_at)
    recovered = next(
        (t / 10 for t in range(0, 40) if throughput(tally, killed_at + t / 10, killed_at + t / 10 + 0.5) >= 0.9 * baseline),
        None,
    )
    figures.append(
        ("SIGKILL one worker", {"ok": tally.ok, "failed": tally.failed, "respawn_s": round(respawn, 3), "full_capacity_after_s": recovered})
    )
    # Only what the killed worker held can fail: at most one request per connection it served.
    assert tally.failed <= client.connections, tally.failures
    assert all(abs(when - killed_at) < 1.0 for when, _ in tally.failures), tally.failures
    assert tally.ok_between(killed_at + respawn, killed_at + respawn + 3) > 0


def test_certificate_rotation_under_load_fails_nothing(tmp_path: Path, figures: list[tuple[str, dict[str, Any]]]) -> None:
    cert_dir = tmp_path / "certs"
    write_bundle(make_bundle(["localhost"]), cert_dir)
    with running_server(tmp_path, cert_dir=cert_dir) as server:
        client = LoadClient(server.port, server.ca, "/mutate", body, connections=6).start()
        time.sleep(1.5)
        rotated = make_bundle(["localhost"])
        staging = tmp_path / "staging"
        write_bundle(rotated, staging)
        for name in ("tls.key", "tls.crt", "ca.crt"):  # as a Secret update swaps the files
            (staging / name).replace(cert_dir / name)
        time.sleep(1.5)
        context = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
        with socket.create_connection(("localhost", server.port)) as raw, context.wrap_socket(raw, server_hostname="localhost") as fresh:
            served = fresh.getpeercert(binary_form=True)
        time.sleep(1.0)
        tally = client.stop()
    figures.append(("certificate rotation", {"ok": tally.ok, "failed": tally.failed}))
    assert tally.failed == 0, tally.failures
    assert served is not None
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    assert fingerprint(x509.load_der_x509_certificate(served).public_bytes(Encoding.PEM)) == fingerprint(rotated.tls_cert)


def test_sighup_reload_under_load_fails_nothing(tmp_path: Path, figures: list[tuple[str, dict[str, Any]]]) -> None:
    with running_server(tmp_path) as server:
        client = LoadClient(server.port, server.ca, "/mutate", body, connections=8).start()
        time.sleep(1.5)
        old = set(server.worker_pids())
        server.process.send_signal(signal.SIGHUP)
        replaced = eventually(lambda: len(set(server.worker_pids())) == len(old) and not (set(server.worker_pids()) & old))
        time.sleep(2.0)
        tally = client.stop()
    figures.append(("SIGHUP reload", {"ok": tally.ok, "failed": tally.failed, "workers_replaced_s": round(replaced, 3)}))
    assert tally.failed == 0, tally.failures


def test_sigterm_under_load_finishes_in_flight_and_exits_in_grace(tmp_path: Path, figures: list[tuple[str, dict[str, Any]]]) -> None:
    grace = 5
    with running_server(tmp_path, ["--graceful-timeout", str(grace)]) as server:
        client = LoadClient(server.port, server.ca, "/mutate", body, connections=8).start()
        time.sleep(1.5)
        before = client.tally.ok
        stopped_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=grace + 10)
        exited = time.monotonic() - stopped_at
        time.sleep(0.5)
        tally = client.stop()
    figures.append(("SIGTERM", {"ok": tally.ok, "failed": tally.failed, "refused_after_stop": tally.refused, "exit_s": round(exited, 3)}))
    assert before > 0
    assert tally.failed == 0, tally.failures
    assert tally.refused > 0, "after SIGTERM the server stops accepting"
    assert server.process.returncode == 0
    assert exited <= grace + 5, "the server exits within its grace period (plus the arbiter's shutdown)"
    logged = server.log().count('"webhook":"mutate"')
    assert logged >= tally.ok, f"{tally.ok} answered, {logged} logged: the batched log lines are written at exit"


def test_slow_and_idle_clients_do_not_starve_the_workers(tmp_path: Path, figures: list[tuple[str, dict[str, Any]]]) -> None:
    # keepalive 4 s and a 3 s body deadline, so the figures below show both within the test.
    with running_server(tmp_path, ["--workers", "2", "--threads", "4", "--keepalive", "4", "--io-timeout", "3"]) as server:
        idle = [socket.create_connection(("localhost", server.port)) for _ in range(4)]
        context = ssl.create_default_context(cafile=server.ca)
        slow = []
        for _ in range(2):
            tls = context.wrap_socket(socket.create_connection(("localhost", server.port)), server_hostname="localhost")
            payload = body("slow")
            head = f"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
            tls.sendall(head.encode())
            tls.sendall(payload[:10])
            slow.append(tls)
        client = LoadClient(server.port, server.ca, "/mutate", body, connections=2).start()
        started = time.monotonic()
        dropped_after = eventually(lambda: all(dropped(s) for s in idle), timeout=30)
        tally = client.stop()
        time.sleep(max(0.0, started + 4 - time.monotonic()))  # past the 3 s I/O timeout
        answers = []
        for tls in slow:
            tls.settimeout(10)
            received = b""
            try:
                while chunk := tls.recv(4096):
                    received += chunk
            except (ssl.SSLError, OSError):
                pass
            answers.append(received)
        for sock in idle + slow:
            sock.close()
    slowest = max(latency for _, latency in tally.timings)
    figures.append(
        (
            "slow and idle clients",
            {
                "ok": tally.ok,
                "failed": tally.failed,
                "idle_dropped_after_s": round(dropped_after, 2),
                "slowest_other_request_s": round(slowest, 3),
            },
        )
    )
    assert tally.failed == 0 and tally.ok > 0, tally.failures
    assert tally.ok_between(started, started + 2) > 0, "normal requests were served while slow clients held connections"
    assert tally.ok_between(started + 1, started + 2) > 0, "no worker was stalled by the idle connections"
    for received in answers:  # a stalled request gets no answer: its connection is closed at the body deadline
        assert received == b"", received


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_worker_memory_does_not_grow_per_request(tmp_path: Path, figures: list[tuple[str, dict[str, Any]]]) -> None:
    with running_server(tmp_path, ["--workers", "1", "--threads", "4", "--log-level", "warning"]) as server:
        (worker,) = server.worker_pids()
        client = LoadClient(server.port, server.ca, "/mutate", body, connections=4).start()
        eventually(lambda: client.tally.ok >= 10_000, timeout=300)
        at_10k = rss_kib(worker)
        eventually(lambda: client.tally.ok >= 100_000, timeout=900)
        at_100k = rss_kib(worker)
        tally = client.stop()
    growth = (at_100k - at_10k) / at_10k
    figures.append(
        ("worker RSS", {"after_10k_kib": at_10k, "after_100k_kib": at_100k, "growth_pct": round(growth * 100, 2), "failed": tally.failed})
    )
    assert tally.failed == 0
    assert growth < 0.05, f"RSS grew {growth:.1%} between 10k and 100k admissions"


def test_overload_is_answered_within_the_api_servers_timeout_and_recovers(
    tmp_path: Path, figures: list[tuple[str, dict[str, Any]]]
) -> None:
    with running_server(tmp_path, ["--log-level", "warning"]) as server:
        light = LoadClient(server.port, server.ca, "/mutate", body, connections=2, timeout=10).start()
        time.sleep(2)
        overload_start = time.monotonic()
        heavy = LoadClient(server.port, server.ca, "/mutate", body, connections=48, timeout=10).start()
        time.sleep(5)
        heavy_tally = heavy.stop()
        overload_end = time.monotonic()
        time.sleep(3)
        light_tally = light.stop()
    slowest = max(latency for _, latency in heavy_tally.timings + light_tally.timings)
    before = [lat for sent, lat in light_tally.timings if sent < overload_start]
    after = [lat for sent, lat in light_tally.timings if sent > overload_end + 1]
    figures.append(
        (
            "overload (48+2 connections)",
            {
                "ok": heavy_tally.ok + light_tally.ok,
                "failed": heavy_tally.failed + light_tally.failed,
                "slowest_s": round(slowest, 3),
                "light_p50_before_ms": round(sorted(before)[len(before) // 2] * 1e3, 2),
                "light_p50_after_ms": round(sorted(after)[len(after) // 2] * 1e3, 2),
            },
        )
    )
    # A request that took longer than the client's 10 s timeout would be counted failed.
    assert heavy_tally.failed == 0 and light_tally.failed == 0, heavy_tally.failures[:5]
    assert after, "the server answers again once the load drops"


def percentile_ms(latencies: list[float], fraction: float) -> float:
    ordered = sorted(latencies)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1e3, 2)


def closed_by_reason(server: Any) -> dict[str, float]:
    text = server.session().get(server.url + "/metrics", timeout=5).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("gpu_shard_connections_closed_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            found[reason] = found.get(reason, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def test_200_stalled_connections_cost_normal_clients_nothing(tmp_path: Path, figures: list[tuple[str, dict[str, Any]]]) -> None:
    limits = Limits()  # serve's defaults: handshake 5 s, headers 5 s, body 10 s
    with running_server(tmp_path) as server:  # the production defaults
        eventually(lambda: len(server.worker_pids()) == 2)
        workers = server.worker_pids()
        client = LoadClient(server.port, server.ca, "/mutate", body, connections=2).start()
        time.sleep(1.0)
        rss_before = sum(rss_kib(pid) for pid in workers)
        context = ssl.create_default_context(cafile=server.ca)
        stalls_start = time.monotonic()
        stalled = [open_stalled(KINDS[i % len(KINDS)], server.port, context, limits) for i in range(200)]
        watch = StallWatch(stalled)
        time.sleep(1.0)
        rss_held = sum(rss_kib(pid) for pid in workers)
        held_while_open = watch.open
        watch.wait(timeout=limits.body_timeout + 15)
        stalls_end = time.monotonic()
        time.sleep(0.5)
        tally = client.stop()
        closed = closed_by_reason(server)
        assert server.worker_pids() == workers, "no worker died or was replaced"
    during = [latency for sent, latency in tally.timings if stalls_start <= sent <= stalls_end]
    late = {kind: max((s.closed_after or 0) - s.timeout for s in stalled if s.kind == kind) for kind in KINDS}
    early = {kind: min((s.closed_after or 0) - s.timeout for s in stalled if s.kind == kind) for kind in KINDS}
    per_connection_kib = (rss_held - rss_before) / held_while_open if held_while_open else 0.0
    figures.append(
        (
            "200 stalled connections",
            {
                "normal_ok": tally.ok,
                "normal_failed": tally.failed,
                "normal_ok_during_stalls": len(during),
                "normal_p50_ms": percentile_ms(during, 0.5),
                "normal_p99_ms": percentile_ms(during, 0.99),
                "closed_late_by_s": {k: round(v, 2) for k, v in late.items()},
                "rss_per_stalled_connection_kib": round(per_connection_kib, 1),
                "closed_by_reason": closed,
            },
        )
    )
    assert watch.open == 0, [(s.kind, s.sent) for s in stalled if s.closed_after is None]
    assert tally.failed == 0, tally.failures[:5]
    assert during and percentile_ms(during, 0.99) < 50, "normal clients are not slowed by stalled ones"
    # Each closed by its own phase's deadline: not before it, and no later than the sweep
    # (0.1 s) plus the accept queue of 200 connections opened at once.
    assert all(value > -0.5 for value in early.values()), early
    assert all(value < 2.0 for value in late.values()), late
    assert all(s.answer == b"" for s in stalled), "a stalled client gets no answer, only the closed connection"
    assert closed.get("handshake", 0) >= 80 and closed.get("headers", 0) >= 80 and closed.get("body", 0) >= 40, closed
    assert per_connection_kib < 256, f"a stalled connection holds {per_connection_kib:.0f} KiB"


def test_a_connection_flood_past_the_cap_is_refused_fast_and_the_server_recovers(
    tmp_path: Path, figures: list[tuple[str, dict[str, Any]]]
) -> None:
    cap = 50  # per worker
    with running_server(tmp_path, ["--max-connections", str(cap), "--handshake-timeout", "3"]) as server:
        eventually(lambda: len(server.worker_pids()) == 2)
        workers = server.worker_pids()
        started = time.monotonic()
        flood = [socket.create_connection(("localhost", server.port), timeout=5) for _ in range(400)]
        opened_s = time.monotonic() - started
        time.sleep(0.5)  # well inside the 3 s handshake deadline: what is closed now was refused
        refused, _, _ = select.select(flood, [], [], 0)
        held = len(flood) - len(refused)
        for sock in flood:
            sock.close()
        # The workers see the closes within their next loop turns; until then a new connection
        # may still count as over the cap and be reset. Recovery is measured, not assumed instant.
        gone = time.monotonic()
        while True:
            try:
                answered = server.session().post(server.url + "/mutate", data=body("after-flood"), timeout=10)
                break
            except requests.ConnectionError:
                assert time.monotonic() - gone < 2, "the server answers within 2 s of the flood ending"
                time.sleep(0.05)
        recovered_s = time.monotonic() - gone
        closed = closed_by_reason(server)
        assert server.worker_pids() == workers, "no worker died or was replaced"
    figures.append(
        (
            "connection flood (400 past a cap of 2x50)",
            {
                "held": held,
                "refused_within_0.5_s": len(refused),
                "opened_in_s": round(opened_s, 2),
                "recovered_in_s": round(recovered_s, 3),
                "closed_by_reason": closed,
            },
        )
    )
    assert held <= 2 * cap, "no worker holds more than its cap"
    assert len(refused) >= 400 - 2 * cap, "past the cap a connection is refused at once"
    assert closed.get("refused", 0) >= 400 - 2 * cap, closed
    assert answered.status_code == 200, "the server answers once the flood is gone"
