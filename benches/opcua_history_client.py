"""The asyncua server's own history-read rate, for benches/opcua_backfill.rs:
asyncua's own client reads the raw history of every Plant variable over
the last SECS seconds, one node after another (as plantflow's backfill
does per call). Prints values read per second."""

import asyncio
import datetime
import sys
import time

from asyncua import Client


async def main():
    url, secs = sys.argv[1], float(sys.argv[2])
    async with Client(url) as c:
        plant = await c.nodes.objects.get_child(["2:Plant"])
        nodes = []
        for line in await plant.get_children():
            for m in await line.get_children():
                nodes.extend(await m.get_children())
        end = datetime.datetime.now(datetime.timezone.utc)
        start = end - datetime.timedelta(seconds=secs)
        t = time.monotonic()
        n = 0
        for node in nodes:
            n += len(await node.read_raw_history(start, end))
        print(n / (time.monotonic() - t), n)


asyncio.run(main())
