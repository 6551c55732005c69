"""The agent's probes on real loopback sockets: the echo endpoint, a ping through it, the prober
moving its coordinate by heartbeat answers and by peers."""

from __future__ import annotations

import socket
import threading

import pytest

from polyfabric.agent.probes import EchoServer, Prober, parse_address, ping
from polyfabric.domain.vivaldi import Coordinate


@pytest.fixture
def echo() -> EchoServer:
    server = EchoServer("127.0.0.1", 0).start()
    yield server
    server.stop()


def test_parse_address() -> None:
    assert parse_address("127.0.0.2:7000") == ("127.0.0.2", 7000)
    assert parse_address(":7000") == ("0.0.0.0", 7000)
    assert parse_address("7000") == ("0.0.0.0", 7000)
    assert parse_address("[::1]:7000") == ("::1", 7000)
    for bad in ("host:port", "1:99999", "x"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_ping_measures_a_round_trip(echo: EchoServer) -> None:
    rtt = ping(f"127.0.0.1:{echo.port}")
    assert 0.0 < rtt < 0.5


def test_the_echo_endpoint_only_echoes_and_closes_idle_and_long_connections(echo: EchoServer) -> None:
    with socket.create_connection(("127.0.0.1", echo.port), timeout=5) as conn:
        for i in range(64):
            payload = i.to_bytes(16, "big")
            conn.sendall(payload)
            assert conn.recv(16) == payload
        try:  # the 65th ping: the server has closed the connection (EOF, or a reset)
            conn.sendall(b"x" * 16)
            assert conn.recv(16) == b""
        except (ConnectionResetError, BrokenPipeError):
            pass


def test_ping_of_nothing_fails() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OSError):
        ping(f"127.0.0.1:{port}", timeout=1.0)


def test_prober_reports_and_moves(echo: EchoServer) -> None:
    prober = Prober(echo_advertise="127.0.0.1:1", interval_s=0.01)
    fields = prober.heartbeat_fields()
    assert fields["echo"] == "127.0.0.1:1" and "rtt_s" not in fields and len(fields["coords"]["vec"]) == 8
    coordinator = Coordinate.origin().to_dict()
    for _ in range(10):  # the coordinator 30 ms away, of which the coordinator spent 5 ms itself
        prober.on_heartbeat({"coordinator_coords": coordinator, "handled_s": 0.005, "peers": []}, 0.035)
    assert prober.last_rtt == pytest.approx(0.030)
    assert 0.015 < prober.coordinate().distance(Coordinate.origin()) < 0.05
    assert not prober.probe_once()  # no peers yet
    peer = {"node_id": "n-peer", "echo": f"127.0.0.1:{echo.port}", "coords": Coordinate.origin().to_dict()}
    prober.on_heartbeat({"coordinator_coords": coordinator, "peers": [peer, {"node_id": "x"}]}, 0.030)
    assert prober.probe_once() and prober.peer_samples == 1
    stop = threading.Event()
    thread = threading.Thread(target=prober.run, args=(stop,))
    thread.start()
    try:
        import time

        deadline = time.monotonic() + 10
        while prober.peer_samples < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    assert prober.peer_samples >= 4


def test_prober_ignores_garbage_answers() -> None:
    prober = Prober()
    before = prober.coordinate()
    prober.on_heartbeat({"coordinator_coords": {"vec": "nope"}}, 0.02)
    prober.on_heartbeat({"coordinator_coords": Coordinate.origin().to_dict()}, 50.0)
    assert prober.coordinate() == before
