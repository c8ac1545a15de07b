"""A link shaper for benchmarks: a loopback TCP proxy 127.0.0.1:port -> 127.0.0.1:target that
adds a one-way delay of RTT/2 in each direction and limits each direction's bandwidth, so that
a slow or distant network can be measured on one machine without `tc` (no root, nothing on the
host changes). Threads, started and stopped in-process; it binds and connects to loopback only.

Each direction is a link of its own: a piece of n bytes read at time t leaves the sender's end
once the bytes before it have gone out, n / bytes_per_s later (a token bucket holding one
piece), and arrives `rtt_s / 2` after that. Reading stops while a direction holds
`MAX_QUEUED` pieces, so a fast sender is slowed by TCP as it would be on the real link.

    with LinkShaper(server_port, rtt_s=0.05, bytes_per_s=10e6 / 8) as link:  # 10 Mbit/s, 50 ms
        client = OffloadClient(link.url, "model")  # its requests now cross the shaped link
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from dataclasses import dataclass, field

from ponder._core.errors import ConfigError

__all__ = ["LinkShaper"]

LOOPBACK = "127.0.0.1"
MAX_QUEUED = 256  # pieces in flight per direction before the proxy stops reading
_POLL_S = 0.1  # how often idle threads look at the stop flag
_EOF = b""


@dataclass
class _Direction:
    """One direction of one connection: its own serialization clock and its pieces in flight."""

    free_at: float = 0.0  # when the link has sent everything queued so far
    pieces: queue.Queue = field(default_factory=lambda: queue.Queue(MAX_QUEUED))


class _Connection:
    """A proxied connection: both sockets, closed together once both directions have ended
    (or at once when either fails)."""

    def __init__(self, client: socket.socket, server: socket.socket):
        self.sockets = (client, server)
        self.closed = threading.Event()
        self._ended = 0
        self._lock = threading.Lock()

    def ended(self) -> None:
        with self._lock:
            self._ended += 1
            if self._ended == 2:
                self.close()

    def close(self) -> None:
        """Shut both sockets down (this wakes threads blocked on them) and close them."""
        self.closed.set()
        for sock in self.sockets:
            with contextlib.suppress(OSError):  # already shut down or reset by the peer
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class LinkShaper:
    """Forward 127.0.0.1:`port` (0: a free one, see `.port`) to 127.0.0.1:`target_port` with
    `rtt_s` of added round-trip time and at most `bytes_per_s` each way (None: unlimited;
    1 Mbit/s is 125,000 bytes/s). `rtt_s` and `bytes_per_s` may be changed while it runs; new
    bytes follow the new values. Use as a context manager, or `start()` and `stop()`."""

    def __init__(
        self,
        target_port: int,
        *,
        rtt_s: float = 0.0,
        bytes_per_s: float | None = None,
        port: int = 0,
    ):
        if rtt_s < 0 or (bytes_per_s is not None and bytes_per_s <= 0):
            raise ConfigError(f"need rtt_s >= 0 and bytes_per_s > 0, got {rtt_s}, {bytes_per_s}")
        self.target_port, self.rtt_s, self.bytes_per_s = target_port, rtt_s, bytes_per_s
        self._listener = socket.create_server((LOOPBACK, port))
        self._listener.settimeout(_POLL_S)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._connections: list[_Connection] = []
        self.connections = 0
        self.bytes_up = self.bytes_down = 0  # client -> target, target -> client

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __enter__(self) -> LinkShaper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LinkShaper:
        self._spawn(self._accept)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Close the listener and every proxied connection; wait for the threads (bounded)."""
        self._stop.set()
        self._listener.close()
        with self._lock:
            connections, threads = list(self._connections), list(self._threads)
        for conn in connections:
            conn.close()
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="link-shaper")
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # the listener was closed by stop()
                return
            try:
                server = socket.create_connection((LOOPBACK, self.target_port), timeout=5)
            except OSError:  # nothing listens there: the client sees its connection closed
                client.close()
                continue
            for sock in (client, server):
                sock.settimeout(None)  # blocking; stop() wakes the threads by shutting down
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(client, server)
            with self._lock:
                self._connections = [c for c in self._connections if not c.closed.is_set()]
                self._connections.append(conn)
                self.connections += 1
            if self._stop.is_set():  # stop() came while this one was being set up
                conn.close()
                return
            for src, dst, up in ((client, server, True), (server, client, False)):
                way = _Direction()
                self._spawn(self._read, conn, src, way, up)
                self._spawn(self._write, conn, dst, way)

    def _read(self, conn: _Connection, src: socket.socket, way: _Direction, up: bool) -> None:
        """Read what the sender writes and give each piece the time it arrives."""
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = _EOF
            now = time.monotonic()
            with self._lock:
                if up:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
            rate = self.bytes_per_s
            for piece in _pieces(data, rate):
                sent = max(now, way.free_at) + (len(piece) / rate if rate else 0.0)
                way.free_at = sent
                if not self._put(conn, way, (sent + self.rtt_s / 2, piece)):
                    return
            if not data:
                return

    def _put(self, conn: _Connection, way: _Direction, item: tuple[float, bytes]) -> bool:
        while not (self._stop.is_set() or conn.closed.is_set()):
            try:
                way.pieces.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _write(self, conn: _Connection, dst: socket.socket, way: _Direction) -> None:
        """Deliver each piece at its arrival time; the sender's end of stream as a shutdown."""
        while not (self._stop.is_set() or conn.closed.is_set()):
            try:
                arrive, piece = way.pieces.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            while (wait := arrive - time.monotonic()) > 0 and not self._stop.is_set():
                time.sleep(min(wait, _POLL_S))
            try:
                if not piece:
                    dst.shutdown(socket.SHUT_WR)
                    conn.ended()
                    return
                dst.sendall(piece)
            except OSError:  # either end went away: so does the connection
                conn.close()
                return


def _pieces(data: bytes, rate: float | None) -> list[bytes]:
    """`data` cut so that a slow link delivers it in steps of about 2 ms (1-64 KB each)."""
    if not data or not rate:
        return [data]
    step = max(1024, min(65536, int(rate * 0.002)))
    return [data[i : i + step] for i in range(0, len(data), step)]
