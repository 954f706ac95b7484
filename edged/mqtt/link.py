"""The broker connection: paho-mqtt 1.6 (bookworm) and 2.x (trixie, PyPI) behind one adapter.

paho 2.0 made ``Client()`` take a ``CallbackAPIVersion`` and changed the callbacks' arguments;
the adapter asks for VERSION2 where it exists and reads the arguments both versions share
(``on_connect``: the fourth is the result; ``on_message``: the third is the message). Nothing
here uses ``on_publish``'s arguments: a publication's acknowledgement is read from its
``MQTTMessageInfo`` (``is_published``: True after the PUBACK at QoS 1, PUBCOMP at QoS 2), which
both versions keep.

paho runs its own network thread (``loop_start``): it connects, reconnects with a growing delay
(``RECONNECT_MIN`` .. ``RECONNECT_MAX``) and sends. Nothing on the event loop waits for it.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

from edged.config import MqttConfig
from edged.errors import ConfigError

log = logging.getLogger(__name__)

RECONNECT_MIN = 1
RECONNECT_MAX = 10
ONLINE, OFFLINE = b"online", b"offline"
STOP_TIMEOUT = 1.5  # s a stopping daemon waits for the client at most

Message = Callable[[str, bytes], None]


def _result(value: Any) -> int:
    """A connect result as a number: 1.6 passes an int, 2.x a ReasonCode."""
    return int(getattr(value, "value", value))


def new_client(client_id: str, clean: bool = True) -> paho.Client:
    """A paho client for MQTT 3.1.1 (a clean session unless asked), in either paho version."""
    version = getattr(paho, "CallbackAPIVersion", None)
    if version is not None:  # paho >= 2.0
        return paho.Client(version.VERSION2, client_id=client_id, clean_session=clean)
    return paho.Client(client_id=client_id, clean_session=clean)


class Link:
    """One client connected to the broker, reconnecting forever in paho's thread."""

    def __init__(
        self,
        mq: MqttConfig,
        client_id: str,
        availability: str,
        on_message: Message,
        subscriptions: Callable[[], list[str]],
        password: str = "",
    ) -> None:
        self.mq = mq
        self.address = f"{mq.host}:{mq.broker_port}"
        self.availability = availability
        self.on_message = on_message
        self.subscriptions = subscriptions
        self.connected = threading.Event()
        self.changed = threading.Event()  # set at connect, disconnect and acknowledgements
        self.generation = 0  # counts successful connections
        self.last_error: str | None = None
        self._down_logged = False
        self._lock = threading.Lock()
        client = new_client(client_id)
        if mq.username:
            client.username_pw_set(mq.username, password or None)
        if mq.tls:
            try:
                client.tls_set(
                    ca_certs=mq.ca_file or None,
                    certfile=mq.cert_file or None,
                    keyfile=mq.key_file or None,
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                files = "mqtt.ca_file, mqtt.cert_file, mqtt.key_file"
                raise ConfigError(f"{files}: cannot load: {exc}") from None
        # The last will: the broker says "offline" for edged when the link drops unasked.
        client.will_set(availability, OFFLINE, qos=1, retain=True)
        client.max_inflight_messages_set(mq.window)  # edged's window bounds what paho holds
        client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        client.on_publish = self._published
        self.client = client

    def start(self) -> None:
        """Connect in the background (paho's thread retries until the broker answers)."""
        self.client.connect_async(self.mq.host, self.mq.broker_port, self.mq.keepalive)
        self.client.loop_start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Say "offline" (retained), disconnect and end paho's thread, waiting ``timeout`` at
        most: paho's thread may sit in a connect to a broker that does not answer (its own
        timeout is longer), and a stopping daemon must not wait for it (it is a daemon thread)."""
        done = threading.Thread(target=self._stop, name="edged-mqtt-stop", daemon=True)
        done.start()
        done.join(timeout)
        if done.is_alive():
            log.debug("mqtt: the client did not stop within %.1f s; left behind", timeout)
        self.connected.clear()

    def _stop(self) -> None:
        if self.connected.is_set():
            info = self.client.publish(self.availability, OFFLINE, qos=1, retain=True)
            with contextlib.suppress(ValueError, RuntimeError):  # not queued: the link is gone
                info.wait_for_publish(1.0)
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> Any:
        """Queue a publication; its MQTTMessageInfo (``rc`` 0 when queued for sending)."""
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    # ----- paho's callbacks (its network thread) --------------------------------------------

    def _connected(
        self, client: paho.Client, userdata: Any, flags: Any, rc: Any, *rest: Any
    ) -> None:
        code = _result(rc)
        if code != 0:
            self._down(f"the broker refused the connection: {paho.connack_string(code)}")
            return
        client.publish(self.availability, ONLINE, qos=1, retain=True)
        for topic in self.subscriptions():
            client.subscribe(topic, qos=1)
        with self._lock:
            self.generation += 1
            self.last_error = None
            self._down_logged = False
        log.info("mqtt: connected to %s", self.address)
        self.connected.set()
        self.changed.set()

    def _disconnected(self, client: paho.Client, userdata: Any, *args: Any) -> None:
        # 1.6: (rc); 2.x: (flags, reason_code, properties)
        rc = args[1] if len(args) >= 2 else (args[0] if args else 0)
        self.connected.clear()
        self.changed.set()
        if _result(rc) != 0:
            self._down(f"lost the broker at {self.address} (reconnecting)")

    def _down(self, why: str) -> None:
        with self._lock:
            self.last_error = why
            first = not self._down_logged
            self._down_logged = True
        if first:  # once an outage, not once a retry
            log.warning("mqtt: %s", why)

    def _message(self, client: paho.Client, userdata: Any, message: Any) -> None:
        try:
            self.on_message(message.topic, bytes(message.payload))
        except Exception:  # a bad message must not stop paho's thread
            log.exception("mqtt: handling a message on %s failed", message.topic)

    def _published(self, *args: Any) -> None:
        self.changed.set()
