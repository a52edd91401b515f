"""A work-order endpoint for the webhook interop test (Python's own http.server).

Usage: webhook_server.py LOG FAIL_FIRST

Listens on 127.0.0.1 at a free port and prints it on stdout. Answers the
first FAIL_FIRST POSTs with HTTP 500 (a CMMS that is down for a while), then
201. Every request is one JSON line in LOG: its status, the headers
`Idempotency-Key` and `Authorization`, and the parsed body.
"""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log_path, fail_first = sys.argv[1], int(sys.argv[2])
lock = threading.Lock()
seen = {"n": 0}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with lock:
            seen["n"] += 1
            status = 500 if seen["n"] <= fail_first else 201
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
            with open(log_path, "a") as f:
                f.write(json.dumps({
                    "status": status,
                    "key": self.headers.get("Idempotency-Key"),
                    "authorization": self.headers.get("Authorization"),
                    "content_type": self.headers.get("Content-Type"),
                    "body": doc,
                }) + "\n")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ok": %s}' % (b"true" if status == 201 else b"false"))

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
