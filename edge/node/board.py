"""The board: the only node module that touches ``machine`` and ``network``.

An ESP32 (or RP2040 W) luminaire controller: a PWM pin to the LED driver's dimming
input (0-10 V or DALI-to-PWM interface), an ADC on a current-sense amplifier, Wi-Fi to
the cabinet's access point, and the RTC. Pins and calibration come from ``board.json``
beside ``node.json`` on the flash; the rest of the firmware only sees
``set_level``/``power_w`` and ``now``/``set``.

Run by ``main.py`` at boot: ``import edge.node.board; edge.node.board.run()``.
"""

import json
import os
import random
import time

import machine  # type: ignore[import-not-found]
import network  # type: ignore[import-not-found]

from edge.node.config import parse_config
from edge.node.flash import Flash
from edge.node.link import Link

# MicroPython ports count time.time() from 2000-01-01 or from 1970-01-01.
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0
POLL_MS = 50


class PwmLamp:
    """The LED driver's dimming input on a PWM pin, and its power from a current sense."""

    def __init__(self, pwm_pin: int, adc_pin: int, volts: float, amps_per_count: float) -> None:
        self._pwm = machine.PWM(machine.Pin(pwm_pin), freq=1000, duty_u16=0)
        self._adc = machine.ADC(machine.Pin(adc_pin))
        self._volts = volts
        self._amps_per_count = amps_per_count

    def set_level(self, level: int) -> None:
        self._pwm.duty_u16(level * 65535 // 100)

    def power_w(self) -> float:
        return float(self._adc.read_u16() * self._amps_per_count * self._volts)


class BoardRTC:
    """The board's RTC in Unix epoch seconds (survives a soft reset, not a power cut)."""

    def now(self) -> int:
        return int(time.time()) + _EPOCH_OFFSET

    def set(self, epoch_s: int) -> None:
        t = time.gmtime(epoch_s - _EPOCH_OFFSET)
        machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))


def _wifi(ssid: str, key: str) -> None:
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(ssid, key)


def run(directory: str = "/") -> None:
    """Boot the node from ``node.json`` and ``board.json`` in ``directory``; never returns."""
    from umqtt.simple import MQTTClient  # type: ignore[import-not-found]

    with open(directory + "node.json") as f:
        config = parse_config(f.read())
    with open(directory + "board.json") as f:
        board = json.loads(f.read())
    lamp = PwmLamp(board["pwm_pin"], board["adc_pin"], board["volts"], board["amps_per_count"])
    ssl = None
    if config.tls:
        import ssl as _ssl

        ssl = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
        ssl.load_verify_locations(cafile=directory + "ca.pem")
    client = MQTTClient(
        config.node,
        config.broker,
        config.port,
        config.node,
        config.password,
        config.keepalive_s,
        ssl,
    )
    _wifi(board["wifi_ssid"], board["wifi_key"])
    try:
        os.mkdir(directory + "flash")
    except OSError:  # already there
        pass
    link = Link(
        config,
        client,
        lamp,
        Flash(directory + "flash"),
        time.ticks_ms,  # type: ignore[attr-defined]
        time.ticks_diff,  # type: ignore[attr-defined]
        rtc=BoardRTC(),
        rand=random.random,
    )
    watchdog = machine.WDT(timeout=30000)
    while True:
        link.poll()
        watchdog.feed()
        time.sleep_ms(POLL_MS)  # type: ignore[attr-defined]
