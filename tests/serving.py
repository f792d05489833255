"""A real `drift-cpp serve` on a free loopback port (--threads 1, its own cache), for the tests that talk to it."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

KEY = "sesame"
AUTH = {"authorization": f"Bearer {KEY}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(root: Path, profiles: Path, *args: str):
    """The server's base URL once it answers, and its process; stopped after, with no traceback in its log."""
    port = free_port()
    env = dict(os.environ, DRIFT_CPP_CACHE=str(root / "cache"))
    log_path = root / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "drift_cpp.cli", "--threads", "1", "serve", "--profiles",
                                 str(profiles), "--port", str(port), "--api-key", KEY, *args],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):  # the model loads first: up to a few minutes on a busy machine
                if proc.poll() is not None:
                    pytest.fail(f"the server exited: {log_path.read_text()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{base}/v1/models", headers=AUTH).status_code == 200:
                        break
                time.sleep(0.2)
            yield base, proc
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    assert "Traceback" not in log_path.read_text()


def default_max_body() -> int:
    """serve's --max-body-bytes default, where it is defined."""
    from drift_cpp.cli.serve import serve
    return next(p.default for p in serve.params if p.name == "max_body_bytes")
