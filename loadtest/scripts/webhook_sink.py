"""A webhook receiver for events_overhead.sh: answers 200 to every POST on a loopback port
(written to the file named by its argument) and prints each X-Holdfast-Event-Id."""
import sys, http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0)); self.rfile.read(n)
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
        sys.stdout.write(self.headers.get("X-Holdfast-Event-Id", "?") + "\n"); sys.stdout.flush()
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer): daemon_threads = True
s = S(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_address[1]))
s.serve_forever()
