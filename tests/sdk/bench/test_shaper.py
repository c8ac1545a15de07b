"""The benchmarks' link shaper (a loopback TCP proxy): bytes arrive intact both ways, a transfer
takes at least its size over the bandwidth, a round trip at least the added RTT, and stop()
ends every thread. Only lower bounds on time are asserted: a busy machine is only slower."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import pytest

from ponder import ConfigError
from ponder._bench.shaper import LinkShaper


@contextlib.contextmanager
def _echo_server():
    """A loopback server that sends back what one connection sends it, until its end."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)  # bounded: the thread ends within seconds whatever happens

    def serve():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(timeout=15)


def _echo(port, data):
    """Send `data` (from a thread) and read it back: (bytes back, seconds)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        start = time.monotonic()
        sender = threading.Thread(
            target=lambda: (sock.sendall(data), sock.shutdown(socket.SHUT_WR))
        )
        sender.start()
        back = bytearray()
        while len(back) < len(data) and (chunk := sock.recv(65536)):
            back += chunk
        seconds = time.monotonic() - start
        sender.join(timeout=10)
    return bytes(back), seconds


def test_bytes_arrive_intact_both_ways():
    data = os.urandom(300_000)
    with _echo_server() as target, LinkShaper(target) as shaper:
        back, _ = _echo(shaper.port, data)
    assert back == data
    assert shaper.bytes_up == len(data) and shaper.bytes_down == len(data)
    assert shaper.connections == 1


def test_a_transfer_takes_at_least_its_bytes_over_the_bandwidth():
    size, rate = 120_000, 300_000  # 0.4 s at least
    with _echo_server() as target, LinkShaper(target, bytes_per_s=rate) as shaper:
        back, seconds = _echo(shaper.port, os.urandom(size))
    assert len(back) == size
    assert seconds >= 0.8 * size / rate


def test_a_round_trip_takes_at_least_the_added_rtt():
    with (
        _echo_server() as target,
        LinkShaper(target, rtt_s=0.08) as shaper,
        socket.create_connection(("127.0.0.1", shaper.port), timeout=10) as sock,
    ):
        for _ in range(3):
            start = time.monotonic()
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"
            assert time.monotonic() - start >= 0.08


def test_stop_ends_every_thread_and_refuses_new_connections():
    with _echo_server() as target:
        shaper = LinkShaper(target, rtt_s=0.01).start()
        held = socket.create_connection(("127.0.0.1", shaper.port), timeout=10)
        held.sendall(b"ping")
        assert held.recv(4) == b"ping"
        shaper.stop()
        assert not any(t.name == "link-shaper" and t.is_alive() for t in threading.enumerate())
        assert held.recv(4) == b""  # the proxied connection was closed
        held.close()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", shaper.port), timeout=2).close()


def test_bad_link_values_are_refused():
    with pytest.raises(ConfigError, match="bytes_per_s > 0"):
        LinkShaper(1, bytes_per_s=0)
