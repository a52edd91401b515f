"""An independent Sparkplug B edge node (Python: pysparkplug + paho), used by
the interop suite: NBIRTH/DBIRTH, DDATA values, an NDEATH, then a new
session (rebirth) with more data. Prints one JSON line per device value it
published, so the test compares what plantflow ingested with what was sent.

usage: spb_publisher.py HOST PORT GROUP NODE DEVICE N
"""
import json
import sys
import time

from pysparkplug import DataType, Device, EdgeNode, Metric, get_current_timestamp

host, port, group, node_id, dev_id, n = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6], int(sys.argv[6])


def metric(name, value):
    return Metric(timestamp=get_current_timestamp(), name=name, datatype=DataType.DOUBLE, value=value)


def session(first):
    node = EdgeNode(group, node_id, [metric("temp", 20.0)])
    node.register(Device(dev_id, [metric("power_kw", float(first))]))
    node.connect(host, port=port, blocking=False)
    time.sleep(1.0)  # connect, NBIRTH, DBIRTH
    print(json.dumps({"value": float(first)}), flush=True)
    for i in range(1, n):
        v = float(first + i)
        node.update_device(dev_id, [metric("power_kw", v)])
        print(json.dumps({"value": v}), flush=True)
        time.sleep(0.005)
    time.sleep(0.5)
    return node


node = session(0)
node.disconnect()  # NDEATH
time.sleep(0.5)
node = session(1000)  # a new session: rebirth
node.disconnect()
