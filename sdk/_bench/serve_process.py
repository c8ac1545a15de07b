"""`ponder serve` as a subprocess on a free loopback port, for benchmarks: started and waited
for until it answers, stopped (or killed, as a crash would) by its process id, restarted on the
same port, and its CPU time read from /proc."""

from __future__ import annotations

import http.client
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ponder._core.errors import MissingDependencyError, PonderError

__all__ = ["ServeProcess", "free_port"]

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it; nothing holds it afterwards)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class ServeProcess:
    """`ponder serve BUNDLE` on 127.0.0.1 in a subprocess (this Python, `-m ponder._cli`).

        with ServeProcess(bundle, token="t", options=("--max-batch", "1")) as server:
            client = OffloadClient(server.url, "model", token="t")  # ready when entered
            server.kill()  # SIGKILL by pid, as a crash would
            server.start()  # again, on the same port

    port: None for a free one; token: the bearer token requests must send (written to a file
    of its own); options: more `ponder serve` options; its output goes to a log file (a full
    pipe would block the server; `log_tail()` reads it). Every wait is bounded."""

    def __init__(
        self,
        bundle: str | Path,
        *,
        port: int | None = None,
        token: str | None = None,
        options: Sequence[str] = (),
        ready_timeout_s: float = 120.0,
    ):
        if importlib.util.find_spec("uvicorn") is None:
            raise MissingDependencyError("uvicorn", "serve", "ponder serve")
        self.bundle, self.port = Path(bundle), port or free_port()
        self.ready_timeout_s = ready_timeout_s
        self._dir = tempfile.TemporaryDirectory(prefix="ponder-serve-")
        self.log = Path(self._dir.name) / "serve.log"
        self.command = [
            sys.executable, "-m", "ponder._cli", "serve", str(self.bundle), "--host", LOOPBACK,
            "--port", str(self.port), "--no-log-requests", *options,
        ]  # fmt: skip
        if token is not None:
            token_file = Path(self._dir.name) / "token"
            token_file.write_text(token + "\n")
            self.command += ["--token-file", str(token_file)]
        self.token = token
        self.proc: subprocess.Popen | None = None
        self.starts, self.startup_s = 0, None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> ServeProcess:
        """Start the server and return once it answers /v2/health/ready."""
        if self.proc is not None and self.proc.poll() is None:
            raise PonderError(f"ponder serve is already running (pid {self.proc.pid})")
        with open(self.log, "ab") as log:  # the child keeps its own handle
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        started = time.monotonic()
        deadline = started + self.ready_timeout_s
        while not self.ready():  # bounded by ready_timeout_s
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise PonderError(
                    f"ponder serve did not start on port {self.port}: {self.log_tail()}"
                )
            time.sleep(0.1)
        self.startup_s = time.monotonic() - started  # start to the first ready answer
        return self

    def get(self, path: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
        """GET `path` (with the token): status and body; OSError when nothing answers."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=timeout_s)
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def ready(self) -> bool:
        try:
            return self.get("/v2/health/ready", timeout_s=2)[0] == 200
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        """The server's /metrics as {'name{labels}': value} (Prometheus text format)."""
        status, body = self.get("/metrics")
        if status != 200:
            raise PonderError(f"GET /metrics answered {status}: {body[:200]!r}")
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in body.decode().splitlines()
            if line and not line.startswith("#")
        }

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM by pid and wait; SIGKILL if it has not ended within `timeout_s`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL by pid (no clean shutdown: what a crash looks like to clients), and reap."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        """Stop the server and remove its token and log files."""
        self.stop()
        self._dir.cleanup()

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the running server has used (Linux /proc/<pid>/stat)."""
        if self.proc is None:
            return 0.0
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (name) "
        utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
        return (utime + stime) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.is_file() else ""
