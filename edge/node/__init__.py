"""Firmware of a field-bus luminaire node: one lamp's own controller, on MicroPython.

Every module here except :mod:`edge.node.board` (the board's pins, radio and clock) runs
unchanged on MicroPython and on CPython: no ``machine``, ``network`` or ``socket`` import, no
``__future__``, no dataclasses; clocks, the MQTT client, the lamp output and the flash
directory are passed in. The bus contract they speak is :mod:`edge.node.bus`, documented in
docs/fieldbus.md. Virtual nodes on a PC (CPython only) are :mod:`edge.fieldbus.simulate`.
"""
