#!/usr/bin/env python3
"""An independent OPC UA server for plantflow's interop suite (Python asyncua).

Exposes Objects/Plant/line<L>/m<M>/power_kw (Double) variables and changes
every one of them every --interval seconds for --duration seconds. Every
value it writes (initial values included) is appended to --log as
`path,source_ts_ms,value`, so the test can check that every change the server
made appears in plantflow's output.

Endpoints: None, and Basic256Sha256 Sign & SignAndEncrypt with a
self-signed certificate for `localhost` created in --cert-dir.

With --historize, the server keeps every value's history (asyncua's
in-memory history, HistoryRead ReadRawModifiedDetails). With --cut-after N
--cut-for S, clients reach the server through a TCP relay on --port (the
server itself listens on another port, advertising --port), and after N
steps the relay drops every connection and refuses new ones for S seconds
while the server goes on changing (and historizing) values: the network
link is cut; the server does not notice beyond its clients going quiet.

With --go-file, values start changing once that file exists (the client
has subscribed). Prints `ready` once listening and `done <n>` when finished writing, then
keeps serving until killed.
"""

import argparse
import asyncio
import datetime
import pathlib
import sys

from asyncua import Server, ua
from asyncua.crypto import cert_gen
from cryptography.x509.oid import ExtendedKeyUsageOID

APP_URI = "urn:plantflow:interop:asyncua"


class Relay:
    """A TCP relay from a public port to the server's own, which can cut
    every connection and refuse new ones for a while (a network outage)."""

    def __init__(self, target):
        self.target = target
        self.conns = set()
        self.server = None

    async def handle(self, reader, writer):
        try:
            r2, w2 = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        pair = (writer, w2)
        self.conns.add(pair)

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, w2), pipe(r2, writer))
        self.conns.discard(pair)

    async def open(self, port):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", port, reuse_address=True)

    def cut(self):
        self.server.close()
        for a, b in list(self.conns):
            a.transport.abort()
            b.transport.abort()
        self.conns.clear()


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--vars", type=int, default=300)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--start", type=int, default=0, help="first step number (a restart continues)")
    ap.add_argument("--log", required=True)
    ap.add_argument("--cert-dir", required=True)
    ap.add_argument("--go-file", help="start changing values once this file exists")
    ap.add_argument("--historize", action="store_true")
    ap.add_argument("--cut-after", type=int, help="steps before the link is cut")
    ap.add_argument("--cut-for", type=float, default=30.0)
    a = ap.parse_args()

    certs = pathlib.Path(a.cert_dir)
    certs.mkdir(parents=True, exist_ok=True)
    key, cert = certs / "server-key.pem", certs / "server-cert.der"
    if not cert.exists():
        await cert_gen.setup_self_signed_certificate(
            key, cert, APP_URI, "localhost",
            [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
            {"countryName": "DE", "organizationName": "plantflow interop", "commonName": "localhost"},
        )

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://localhost:{a.port}/")
    relay = None
    if a.cut_after is not None:
        # Clients come through the relay on --port; the server listens behind it.
        relay = Relay(free_port())
        server.socket_address = ("127.0.0.1", relay.target)
    server.set_server_name("plantflow interop asyncua server")
    await server.set_application_uri(APP_URI)
    server.set_security_policy([
        ua.SecurityPolicyType.NoSecurity,
        ua.SecurityPolicyType.Basic256Sha256_Sign,
        ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ])
    await server.load_certificate(str(cert))
    await server.load_private_key(str(key))
    ns = await server.register_namespace("urn:plantflow:interop")
    plant = await server.nodes.objects.add_folder(ns, "Plant")
    variables = []
    for i in range(a.vars):
        variables.append((i, f"line{i // 50 + 1}/m{i % 50 + 1:02d}/power_kw"))
    folders = {}
    nodes = []
    for i, path in variables:
        line, m, name = path.split("/")
        if line not in folders:
            folders[line] = await plant.add_folder(ns, line)
        key_m = f"{line}/{m}"
        if key_m not in folders:
            folders[key_m] = await folders[line].add_object(ns, m)
        v = await folders[key_m].add_variable(ns, name, 0.0, varianttype=ua.VariantType.Double)
        nodes.append((path, v))

    log = open(a.log, "a", buffering=1)

    async def write(step: int) -> int:
        now = datetime.datetime.now(datetime.timezone.utc)
        ms = int(now.timestamp() * 1000)
        ts = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
        for i, (path, v) in enumerate(nodes):
            value = float(step * 1000 + i)
            dv = ua.DataValue(ua.Variant(value, ua.VariantType.Double), SourceTimestamp=ts, ServerTimestamp=ts)
            await v.write_value(dv)
            log.write(f"{path},{ms},{value}\n")
        return len(nodes)

    async with server:
        if relay:
            await relay.open(a.port)
        if a.historize:
            await server.historize_node_data_change([v for _, v in nodes], count=1_000_000)
        n = await write(a.start)  # the initial values are data too
        print("ready", flush=True)
        while a.go_file and not pathlib.Path(a.go_file).exists():
            await asyncio.sleep(0.05)
        step = a.start + 1
        steps = int(a.duration / a.interval)
        reopen_at = None
        for k in range(steps):
            await asyncio.sleep(a.interval)
            if relay and k == a.cut_after:
                print("cut", flush=True)
                relay.cut()
                reopen_at = asyncio.get_running_loop().time() + a.cut_for
            if reopen_at is not None and asyncio.get_running_loop().time() >= reopen_at:
                await relay.open(a.port)
                reopen_at = None
                print("reopened", flush=True)
            n += await write(step)
            step += 1
        log.close()
        print(f"done {n}", flush=True)
        while True:
            await asyncio.sleep(3600)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
