#!/usr/bin/env python3
"""Drives Python paho-mqtt against an MQTT broker on 127.0.0.1:PORT, for MQTT 3.1.1 and 5.0.

Usage: paho_client.py PORT

Prints one JSON object on stdout: what each scenario observed (CONNACKs, SUBACK codes,
acknowledgements, the messages received with their QoS and retain flag). It judges nothing:
the Rust test crates/herald/tests/interop.rs asserts the observations. Every wait is bounded
and a watchdog ends the process, so a broker that does not answer cannot hang the test.

Exit status: 0 with the observations; 2 when paho-mqtt is not installed; 1 on an exception
(the JSON then has "error").
"""

import json
import queue
import signal
import socket
import sys
import threading
import traceback

# How long to wait for something that should come.
WAIT = 5.0
# How long to wait to be sure nothing more comes.
QUIET = 0.3
# The whole run is bounded.
WATCHDOG_SECS = 20

try:
    import paho.mqtt
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
except ImportError as e:
    print(json.dumps({"error": f"paho-mqtt is missing ({e}): python3 -m pip install paho-mqtt"}))
    sys.exit(2)


class Timeout(Exception):
    pass


def take(q, what):
    try:
        return q.get(timeout=WAIT)
    except queue.Empty:
        raise Timeout(f"no {what} within {WAIT}s") from None


def message(msg):
    return {
        "topic": msg.topic,
        "payload": msg.payload.decode("utf-8", "replace"),
        "qos": msg.qos,
        "retain": bool(msg.retain),
    }


class Peer:
    """A paho client connected to the broker, its network loop on a thread, its events queued."""

    def __init__(self, port, proto, client_id, clean=True, expiry=None, will=None):
        v5 = proto == mqtt.MQTTv5
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=proto,
            clean_session=None if v5 else clean,
            reconnect_on_failure=False,
        )
        self.connacks = queue.Queue()
        self.subacks = queue.Queue()
        self.messages = queue.Queue()
        self.disconnected = threading.Event()
        c = self.client
        c.on_connect = lambda _c, _u, flags, rc, _p: self.connacks.put(
            {"rc": rc.value, "session_present": bool(flags.session_present)}
        )
        c.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subacks.put([r.value for r in codes])
        c.on_message = lambda _c, _u, msg: self.messages.put(message(msg))
        c.on_disconnect = lambda *_: self.disconnected.set()
        if will is not None:
            topic, payload, qos = will
            c.will_set(topic, payload, qos=qos)
        kwargs = {}
        if v5:
            kwargs["clean_start"] = clean
            if expiry is not None:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = expiry
                kwargs["properties"] = props
        c.connect("127.0.0.1", port, keepalive=30, **kwargs)
        c.loop_start()
        self.connack = take(self.connacks, f"CONNACK for {client_id}")

    def subscribe(self, topic, qos):
        self.client.subscribe(topic, qos=qos)
        return take(self.subacks, f"SUBACK for {topic}")

    def publish(self, topic, payload, qos, retain=False):
        """Publishes; returns whether the QoS exchange completed (PUBACK / PUBCOMP received)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout=WAIT)
        return info.is_published()

    def collect(self, n):
        """Up to `n` messages, each within WAIT."""
        got = []
        for _ in range(n):
            try:
                got.append(self.messages.get(timeout=WAIT))
            except queue.Empty:
                break
        return got

    def rest(self):
        """Messages that arrive within QUIET."""
        got = []
        while True:
            try:
                got.append(self.messages.get(timeout=QUIET))
            except queue.Empty:
                return got

    def disconnect(self):
        """A normal DISCONNECT; waits for the loop to see the connection end."""
        self.client.disconnect()
        self.disconnected.wait(WAIT)
        self.client.loop_stop()

    def drop(self):
        """Ends the TCP connection without DISCONNECT (an abnormal close: the will is due)."""
        sock = self.client.socket()
        sock.shutdown(socket.SHUT_RDWR)
        self.disconnected.wait(WAIT)
        self.client.loop_stop()


def scenario(port, proto, name):
    out = {}
    p = f"paho/{name}"

    # QoS 0/1/2: one subscriber at QoS 2, one publisher at each QoS.
    sub = Peer(port, proto, f"paho-{name}-sub")
    out["connack"] = sub.connack
    out["granted"] = sub.subscribe(f"{p}/qos", 2)
    pub = Peer(port, proto, f"paho-{name}-pub")
    out["acked"] = [pub.publish(f"{p}/qos", f"q{q}", q) for q in (0, 1, 2)]
    out["received"] = sorted(sub.collect(3) + sub.rest(), key=lambda m: m["payload"])

    # Retained: stored, then given to a later subscriber with the retain flag set.
    out["retained_acked"] = pub.publish(f"{p}/retained", "kept", 1, retain=True)
    late = Peer(port, proto, f"paho-{name}-late")
    late.subscribe(f"{p}/retained", 1)
    out["retained"] = late.collect(1) + late.rest()
    late.disconnect()

    # Wills: not published on a normal DISCONNECT, published when the socket just closes.
    witness = Peer(port, proto, f"paho-{name}-witness")
    witness.subscribe(f"{p}/will", 1)
    polite = Peer(port, proto, f"paho-{name}-polite", will=(f"{p}/will", "normal", 1))
    polite.disconnect()
    rude = Peer(port, proto, f"paho-{name}-rude", will=(f"{p}/will", "abnormal", 1))
    rude.drop()
    out["will"] = witness.collect(1) + witness.rest()
    witness.disconnect()

    # Persistent session: QoS 1 messages published while it is offline wait for it.
    cid = f"paho-{name}-persistent"
    # 3.1.1: clean session 0 creates it; 5.0: clean start with a session expiry interval.
    first = Peer(port, proto, cid, clean=proto == mqtt.MQTTv5, expiry=60)
    first_connack = first.connack
    first.subscribe(f"{p}/persistent", 1)
    first.disconnect()
    offline_acked = [pub.publish(f"{p}/persistent", f"p{i}", 1) for i in (1, 2, 3)]
    again = Peer(port, proto, cid, clean=False, expiry=60)
    out["persistent"] = {
        "first_connack": first_connack,
        "acked": offline_acked,
        "connack": again.connack,
        "received": again.collect(3) + again.rest(),
    }
    again.disconnect()

    sub.disconnect()
    pub.disconnect()
    return out


def main():
    port = int(sys.argv[1])
    signal.alarm(WATCHDOG_SECS)
    result = {"paho_version": paho.mqtt.__version__}
    try:
        result["v311"] = scenario(port, mqtt.MQTTv311, "v311")
        result["v5"] = scenario(port, mqtt.MQTTv5, "v5")
    except Exception as e:  # reported to the Rust test, which fails with it
        result["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        print(json.dumps(result))
        sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
