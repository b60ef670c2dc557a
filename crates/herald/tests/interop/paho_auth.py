#!/usr/bin/env python3
"""Connects Python paho-mqtt (MQTT 5) to Herald on 127.0.0.1:PORT with PASSWORD (a JWT),
subscribes to each filter of SUBSCRIBE and publishes QoS 1 to each topic of PUBLISH.

Usage: paho_auth.py PORT PASSWORD SUBSCRIBE PUBLISH   (lists comma-separated)

Prints one JSON object: the CONNACK reason code, the SUBACK codes, each PUBACK's reason
code, and the messages received. It judges nothing: crates/herald/tests/auth.rs asserts.
Every wait is bounded; a watchdog ends the process.
"""

import json
import queue
import signal
import sys

WAIT = 5.0

try:
    import paho.mqtt.client as mqtt
except ImportError as e:
    print(json.dumps({"error": f"paho-mqtt is missing ({e}): python3 -m pip install paho-mqtt"}))
    sys.exit(2)


def main():
    port, password = int(sys.argv[1]), sys.argv[2]
    filters = [f for f in sys.argv[3].split(",") if f]
    topics = [t for t in sys.argv[4].split(",") if t]
    signal.alarm(20)
    events = queue.Queue()
    out = {"connack": None, "granted": [], "acked": [], "received": []}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-jwt", protocol=mqtt.MQTTv5)
    c.username_pw_set("ignored", password)
    c.on_connect = lambda cl, ud, flags, rc, props: events.put(("connack", rc.value))
    c.on_subscribe = lambda cl, ud, mid, rcs, props: events.put(("suback", [r.value for r in rcs]))
    c.on_publish = lambda cl, ud, mid, rc, props: events.put(("puback", rc.value))
    c.on_message = lambda cl, ud, m: events.put(("message", (m.topic, m.payload.decode())))
    c.connect("127.0.0.1", port)
    c.loop_start()

    def expect(kind):
        while True:
            got, value = events.get(timeout=WAIT)
            if got == "message":
                out["received"].append(value)
                continue
            if got == kind:
                return value
            raise RuntimeError(f"expected {kind}, got {got} {value}")

    out["connack"] = expect("connack")
    if out["connack"] == 0:
        for f in filters:
            c.subscribe(f, qos=1)
            out["granted"].extend(expect("suback"))
        for t in topics:
            c.publish(t, f"from paho to {t}", qos=1)
            out["acked"].append(expect("puback"))
        try:
            while True:
                got, value = events.get(timeout=1.0)
                if got == "message":
                    out["received"].append(value)
        except queue.Empty:
            pass
    c.loop_stop()
    c.disconnect()
    out["received"].sort()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
