"""A Modbus TCP server with a known register map, for plantflow's interop
test (pymodbus, installed by .ci/run).

Unit 1 (holding registers, 0-based protocol addresses):
  0-1  f32, word-swapped (CDAB)      phase 1: 1234.5   phase 2: 2469.0
  2-3  i32 (ABCD)                    -123456           -654321
  4    u16 raw (the test scales 0.1)  2345              1000
  5    raises exception 0x02 (IllegalDataAddress) when read
  6    u16 bit field 0b1010
  7-8  u32 counter (ABCD): each read returns the next value, from
       2**32 - 5 (so it rolls over); the last value served is written to
       --state, and phase 2 goes on from there + 1000 (used while down);
       once <state>.freeze exists it stays where it is
Unit 1 input register 0: i16 -200; coil 3: on.
Unit 2 holding register 0: u16 777 (phase 1), 778 (phase 2).

--map meter instead: the layout of dataflows/modbus_power_meter.toml on
unit 1: kW 100.0 and kvar 75.0 (f32 ABCD at 0 and 2), power factor 800
(i16 at 4, x 0.001 = 0.8), and at 6-7 the kWh counter (u32, 0.01 kWh a
count), one count more at each read, from 2**32 - 20.

--map bench: unit 1 holds registers 0-99 = 0..99 (benches/modbus.rs).

--junk-port: a server that answers every request with bytes that are not
Modbus. --silent-port: a server that accepts connections and never answers.
Prints "ready" once every port listens.
"""

import argparse
import asyncio
import logging
import os
import struct

from pymodbus.constants import ExcCodes
from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.server import StartAsyncTcpServer

COUNTER_START = 2**32 - 5


def words(fmt, v):
    return list(struct.unpack(">" + "H" * (struct.calcsize(fmt) // 2), struct.pack(">" + fmt, v)))


class Holding(ModbusSequentialDataBlock):
    """Holding registers of unit 1: maybe an exception register, and a u32
    counter that moves on by `step` at each read."""

    def __init__(self, values, bad, at, counter, step, state):
        # The device context adds 1 to protocol addresses: start at 1 so
        # values[i] is protocol address i.
        super().__init__(1, values)
        self.bad, self.at, self.counter, self.step = bad, at, counter, step
        self.state = state

    def getValues(self, address, count=1):
        a = address - 1
        if self.bad is not None and a <= self.bad < a + count:
            return ExcCodes.ILLEGAL_ADDRESS
        if a <= self.at and a + count >= self.at + 2:
            v = self.counter
            self.values[self.at], self.values[self.at + 1] = v >> 16, v & 0xFFFF
            if not os.path.exists(self.state + ".freeze"):
                self.counter = (v + self.step) % 2**32
            tmp = self.state + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(v))
            os.replace(tmp, self.state)
        return super().getValues(address, count)


async def junk(reader, writer):
    try:
        while await reader.read(260):
            writer.write(b"\x00\x01\x00\x00\x00\x03 not modbus at all \xff\xfe")
            await writer.drain()
    except ConnectionError:
        pass
    writer.close()


async def silent(reader, writer):
    try:
        while await reader.read(260):
            pass
    except ConnectionError:
        pass
    writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--phase", type=int, default=1)
    ap.add_argument("--state", required=True)
    ap.add_argument("--junk-port", type=int)
    ap.add_argument("--silent-port", type=int)
    ap.add_argument("--map", default="test")
    a = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    p1 = a.phase == 1
    if a.map == "bench":
        # benches/modbus.rs: 50 plain registers.
        ctx = ModbusServerContext(
            devices={1: ModbusDeviceContext(hr=ModbusSequentialDataBlock(1, list(range(100))))},
            single=False,
        )
    elif a.map == "meter":
        hr = words("f", 100.0) + words("f", 75.0) + [800, 0, 0, 0] + [0] * 4
        ctx = ModbusServerContext(
            devices={1: ModbusDeviceContext(hr=Holding(hr, None, 6, 2**32 - 20, 1, a.state))},
            single=False,
        )
    else:
        f32 = words("f", 1234.5 if p1 else 2469.0)
        hr = [f32[1], f32[0]]  # CDAB: low word first
        hr += words("i", -123456 if p1 else -654321)
        hr += [2345 if p1 else 1000, 0, 0b1010, 0, 0, 0]
        if p1:
            counter = COUNTER_START
        else:
            with open(a.state) as f:
                counter = (int(f.read()) + 1 + 1000) % 2**32
        unit1 = ModbusDeviceContext(
            hr=Holding(hr, 5, 7, counter, 1, a.state),
            ir=ModbusSequentialDataBlock(1, words("h", -200) + [0] * 9),
            co=ModbusSequentialDataBlock(1, [False, False, False, True] + [False] * 6),
            di=ModbusSequentialDataBlock(1, [False] * 10),
        )
        unit2 = ModbusDeviceContext(
            hr=ModbusSequentialDataBlock(1, [777 if p1 else 778] + [0] * 9)
        )
        ctx = ModbusServerContext(devices={1: unit1, 2: unit2}, single=False)
    others = []
    if a.junk_port:
        others.append(await asyncio.start_server(junk, "127.0.0.1", a.junk_port))
    if a.silent_port:
        others.append(await asyncio.start_server(silent, "127.0.0.1", a.silent_port))
    server = asyncio.create_task(StartAsyncTcpServer(context=ctx, address=("127.0.0.1", a.port)))
    # Ready once the Modbus port accepts connections.
    for _ in range(200):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", a.port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    print("ready", flush=True)
    await server


asyncio.run(main())
