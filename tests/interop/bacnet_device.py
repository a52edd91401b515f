"""A BACnet/IP device for the BACnet source's interop tests, built on
bacpypes3 (a BACnet stack nobody here wrote).

    python3 bacnet_device.py --name ahu1 --instance 1001 \
        --address 127.0.0.1/8:47900 --log values.jsonl [--period 0.2]

Objects (an air handler's points):
  analog-value:1   supply-air-temp   degreesCelsius   COV, changes each period
  analog-input:2   fan-power         kilowatts        COV, changes each period
  binary-value:3   fan-status                         COV, toggles every 5th period
  multi-state-value:4  mode (1..3)                     COV, steps every 7th period
  analog-value:5   filter-dp         pascals          no COV (SubscribeCOV fails:
                                                       polled), changes each period
  analog-value:6   outside-air-temp  degreesFahrenheit COV; its status flags say
                                                       `fault` from period 20 to 29,
                                                       when its values are 90 and up

Every value it sets (the initial ones too) is a line of `--log`:
{"object": "analog-value:1", "value": 18.25, "flags": "", "t": epoch_s}, written
before the value is set, so the log is the oracle of what a subscriber or
poller can have seen. With --values N it stops changing values after N
periods (and writes `--log`.done); with --start-file F the first change waits
until F exists.
"""

import asyncio
import json
import os
import sys
import time

from bacpypes3.argparse import SimpleArgumentParser
from bacpypes3.app import Application
from bacpypes3.local.analog import AnalogInputObject, AnalogValueObject
from bacpypes3.local.binary import BinaryValueObject
from bacpypes3.local.cov import GenericCriteria
from bacpypes3.local.multistate import MultiStateValueObject


class MultiStateValue(MultiStateValueObject):
    """bacpypes3 0.0.110 gives multi-state objects the COV-increment
    criteria, which fails for an object without covIncrement (the
    subscription is refused and the object's half-made monitor raises at
    its next change). Table 13-1 of the standard reports a multi-state
    object's every change: the generic criteria."""

    _cov_criteria = GenericCriteria


class NoCovAnalogValue(AnalogValueObject):
    """An analog value whose device does not take SubscribeCOV for it
    (bacpypes3 answers services/covSubscriptionFailed)."""

    _cov_criteria = None


def value_of(name, k):
    """The k-th value of each point: exact in binary floating point."""
    if name == "analog-value:1":
        return 18.0 + (k % 16) * 0.25
    if name == "analog-input:2":
        return 10.0 + (k % 8) * 0.5
    if name == "binary-value:3":
        return "active" if (k // 5) % 2 == 0 else "inactive"
    if name == "multi-state-value:4":
        return 1 + (k // 7) % 3
    if name == "analog-value:5":
        return 100.0 + (k % 10) * 2.0
    if name == "analog-value:6":
        if 20 <= k < 30:
            return 90.0 + (k % 4) * 1.5  # values the fault makes bad
        return 50.0 + (k % 4) * 1.5
    raise KeyError(name)


def changes(name, k):
    """Whether point `name` takes a new value at period k (k > 0)."""
    if name == "binary-value:3":
        return k % 5 == 0
    if name == "multi-state-value:4":
        return k % 7 == 0
    return True


def flags_of(name, k):
    if name == "analog-value:6" and 20 <= k < 30:
        return [0, 1, 0, 0]
    return [0, 0, 0, 0]


def set_fault(obj, fault):
    """bacpypes3 computes status flags from `reliability` (reads and polls
    see that); its COV detection watches assignments to statusFlags (the
    notifications see that). Both, in that order."""
    obj.statusFlags = [0, 1, 0, 0] if fault else [0, 0, 0, 0]
    obj.reliability = "unreliableOther" if fault else "noFaultDetected"


def as_number(v):
    if v == "active":
        return 1.0
    if v == "inactive":
        return 0.0
    return float(v)


async def main():
    parser = SimpleArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--period", type=float, default=0.2)
    parser.add_argument("--values", type=int, default=10**9)
    parser.add_argument("--start-file", default=None)
    args = parser.parse_args()
    app = Application.from_args(args)
    objects = {
        "analog-value:1": AnalogValueObject(
            objectIdentifier=("analogValue", 1),
            objectName="supply-air-temp",
            presentValue=value_of("analog-value:1", 0),
            statusFlags=[0, 0, 0, 0],
            units="degreesCelsius",
            covIncrement=0.0,
        ),
        "analog-input:2": AnalogInputObject(
            objectIdentifier=("analogInput", 2),
            objectName="fan-power",
            presentValue=value_of("analog-input:2", 0),
            statusFlags=[0, 0, 0, 0],
            units="kilowatts",
            covIncrement=0.0,
        ),
        "binary-value:3": BinaryValueObject(
            objectIdentifier=("binaryValue", 3),
            objectName="fan-status",
            presentValue=value_of("binary-value:3", 0),
            statusFlags=[0, 0, 0, 0],
        ),
        "multi-state-value:4": MultiStateValue(
            objectIdentifier=("multiStateValue", 4),
            objectName="mode",
            presentValue=value_of("multi-state-value:4", 0),
            numberOfStates=3,
            statusFlags=[0, 0, 0, 0],
        ),
        "analog-value:5": NoCovAnalogValue(
            objectIdentifier=("analogValue", 5),
            objectName="filter-dp",
            presentValue=value_of("analog-value:5", 0),
            statusFlags=[0, 0, 0, 0],
            units="pascals",
        ),
        "analog-value:6": AnalogValueObject(
            objectIdentifier=("analogValue", 6),
            objectName="outside-air-temp",
            presentValue=value_of("analog-value:6", 0),
            statusFlags=[0, 0, 0, 0],
            units="degreesFahrenheit",
            covIncrement=0.0,
            reliability="noFaultDetected",
        ),
    }
    for obj in objects.values():
        app.add_object(obj)
    log = open(args.log, "a", buffering=1)

    def record(name, k):
        flags = "fault" if flags_of(name, k)[1] else ""
        v = as_number(value_of(name, k))
        log.write(
            json.dumps({"object": name, "value": v, "flags": flags, "t": time.time(), "k": k})
            + "\n"
        )

    for name in objects:
        record(name, 0)
    print("device up", flush=True)
    # Values change once the test says the subscriber is in place.
    while args.start_file and not os.path.exists(args.start_file):
        await asyncio.sleep(0.05)
    k = 0
    while True:
        await asyncio.sleep(args.period)
        if k >= args.values:
            if not os.path.exists(args.log + ".done"):
                open(args.log + ".done", "w").close()
            continue
        k += 1
        for name, obj in objects.items():
            flagged = flags_of(name, k) != flags_of(name, k - 1)
            if changes(name, k) or flagged:
                record(name, k)
                # A fault is set before the value it makes bad and cleared
                # after it: no notification pairs a faulty value with clear
                # flags.
                faulty = flags_of(name, k)[1]
                if flagged and faulty:
                    set_fault(obj, True)
                obj.presentValue = value_of(name, k)
                if flagged and not faulty:
                    set_fault(obj, False)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
