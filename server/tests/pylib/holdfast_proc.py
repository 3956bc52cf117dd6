"""What the Python test scripts share (server/tests/browser/console_page.py and
server/tests/contract/*.py): a real `holdfast serve` started on a temporary data directory at
127.0.0.1 port 0 (`--addr-file` tells the port), tokens minted by `holdfast token`, one HTTP
request with the standard library, and a bounded wait. Not a script of its own.

Each script puts this directory on `sys.path` (it is found beside the script's own directory).
"""

import json
import os
import subprocess
import time
import urllib.error
import urllib.request

# Bounds of every wait here (seconds), unless the caller names its own.
HTTP_TIMEOUT_S = 10
TOKEN_TIMEOUT_S = 10
POLL_INTERVAL_S = 0.1


class Failed(Exception):
    """A check failed, or the server could not be started; the message says why."""


def wait_until(what, timeout_s, probe):
    """Calls `probe` until it returns a truthy value (returned) or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(POLL_INTERVAL_S)
    raise Failed(f"{what}: not within {timeout_s} s (last seen: {last!r})")


def http(method, url, token=None, body=None, headers=None, expect=200):
    """One request; returns (status, text), status 0 when no answer came. `expect` (a status
    or None) is checked."""
    request = urllib.request.Request(url, method=method)
    if token:
        request.add_header("Authorization", "Bearer " + token)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, data, timeout=HTTP_TIMEOUT_S) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    except (urllib.error.URLError, ConnectionError):
        status, text = 0, ""
    if expect is not None and status != expect:
        raise Failed(f"{method} {url}: expected {expect}, got {status}: {text}")
    return status, text


def token(holdfast, secret, role, ttl, *extra):
    """A bearer token (without `Bearer `) from `holdfast token`."""
    out = subprocess.run(
        [holdfast, "token", "--jwt-secret-file", secret, "--role", role, "--ttl", ttl, *extra],
        check=True, capture_output=True, text=True, timeout=TOKEN_TIMEOUT_S,
    )
    return out.stdout.strip()


def log_tail(work, lines=40):
    """The last lines the server printed into `work`/server.log (for a failure report)."""
    try:
        with open(os.path.join(work, "server.log"), errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def start_serve(holdfast, work, ready_timeout_s, *flags, listen="127.0.0.1:0"):
    """`holdfast serve` on `work`/data with `work`/secret, logging to `work`/server.log, with
    `flags` added; waits until `/readyz` answers 200. Returns (process, base URL). `listen`
    is port 0 but for a restart on the same address."""
    addr_file = os.path.join(work, "addr")
    if os.path.exists(addr_file):
        os.remove(addr_file)
    with open(os.path.join(work, "server.log"), "ab") as server_log:
        process = subprocess.Popen(
            [holdfast, "serve", "--listen", listen, "--addr-file", addr_file,
             "--data-dir", os.path.join(work, "data"),
             "--jwt-secret-file", os.path.join(work, "secret"), *flags],
            stdout=server_log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"},
        )

    def address():
        if process.poll() is not None:
            raise Failed(f"the server exited with {process.returncode}:\n" + log_tail(work))
        if os.path.exists(addr_file):
            return open(addr_file).read().strip() or None
        return None

    base = "http://" + wait_until("the server's --addr-file", ready_timeout_s, address)
    wait_until("/readyz answers 200", ready_timeout_s,
               lambda: http("GET", base + "/readyz", expect=None)[0] == 200)
    return process, base
