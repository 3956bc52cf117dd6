"""What a held connection costs the server: starts `holdfast serve` (the binary named by the
first argument) on a fresh data directory, opens 1,000 connections that each send KIB KiB of a
header that never ends (0: connections that send nothing), and prints the server's resident
memory growth per connection. Standard library only; Linux (/proc).

    python3 loadtest/scripts/connection_memory.py target/release/holdfast 0
    python3 loadtest/scripts/connection_memory.py target/release/holdfast 15
"""
import os, shutil, socket, subprocess, sys, tempfile, time

CONNECTIONS = 1000  # under the listen backlog (1,024), so no connect waits on a SYN retry

binary, kib = sys.argv[1], int(sys.argv[2])
data = tempfile.mkdtemp(prefix="holdfast-connmem-")
secret = os.path.join(data, "secret")
with open(secret, "w") as f:
    f.write("connection-memory-secret\n")
addr_file = os.path.join(data, "addr")
server = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--addr-file", addr_file,
                           "--data-dir", os.path.join(data, "d"), "--jwt-secret-file", secret,
                           "--shards", "8"], stderr=subprocess.DEVNULL)
try:
    for _ in range(200):
        if os.path.exists(addr_file):
            break
        time.sleep(0.05)
    host, port = open(addr_file).read().rsplit(":", 1)

    def rss_kib():
        for line in open(f"/proc/{server.pid}/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1])

    def open_fds():
        return len(os.listdir(f"/proc/{server.pid}/fd"))

    time.sleep(1)
    base_rss, base_fds = rss_kib(), open_fds()
    header = b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * (kib * 1024) if kib else b""
    held = []
    for _ in range(CONNECTIONS):
        s = socket.create_connection((host, int(port)), timeout=10)
        if header:
            s.sendall(header)
        held.append(s)
    time.sleep(1.5)  # well under the 10 s header read timeout
    n = open_fds() - base_fds
    grown = rss_kib() - base_rss
    print(f"{n} connections holding {kib} KiB of an unfinished header: "
          f"RSS +{grown / 1024:.1f} MiB, {grown / max(n, 1):.1f} KiB per connection")
finally:
    server.terminate()
    server.wait(timeout=15)
    shutil.rmtree(data, ignore_errors=True)
