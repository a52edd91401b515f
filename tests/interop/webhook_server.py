"""A work-order endpoint for the webhook interop test (Python's own http.server).

Usage: webhook_server.py LOG FAIL_FIRST [CERT KEY]

Listens on 127.0.0.1 at a free port and prints it on stdout. Answers the
first FAIL_FIRST POSTs with HTTP 500 (a CMMS that is down for a while), then
201. Every request is one JSON line in LOG: its status, the headers
`Idempotency-Key` and `Authorization`, and the parsed body. With CERT and
KEY (PEM files) it speaks HTTPS with that certificate.
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
if len(sys.argv) > 4:
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
