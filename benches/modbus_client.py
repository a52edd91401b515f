"""The pymodbus server's own limit, for benches/modbus.rs: N clients of
pymodbus's own async client, each reading COUNT holding registers back to
back for SECS seconds. Prints the requests answered per second."""

import asyncio
import sys
import time

from pymodbus.client import AsyncModbusTcpClient


async def client(port, count, until, done):
    c = AsyncModbusTcpClient("127.0.0.1", port=port)
    await c.connect()
    n = 0
    while time.monotonic() < until:
        r = await c.read_holding_registers(0, count=count, device_id=1)
        if r.isError():
            raise SystemExit(f"error response: {r}")
        n += 1
    c.close()
    done.append(n)


async def main():
    port, clients, count, secs = (int(x) for x in sys.argv[1:5])
    done = []
    start = time.monotonic()
    await asyncio.gather(*(client(port, count, start + secs, done) for _ in range(clients)))
    print(sum(done) / (time.monotonic() - start))


asyncio.run(main())
