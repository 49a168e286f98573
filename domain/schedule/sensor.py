"""The ambient light sensor's hysteresis: does it hold the lamps on?

Below ``on_below_lux`` the sensor takes hold (a storm at noon); once holding it lets go
only above ``off_above_lux``, so a reading hovering around one threshold does not make the
lamps flicker. The agent passes the latest reading and whether the sensor held the lamps
at the previous evaluation. No reading (sensor absent or failed) means no hold: the
schedule, which is never dark at night, takes over.
"""

from __future__ import annotations

from domain.schedule.model import LightSensor


def sensor_holds(sensor: LightSensor | None, lux: float | None, holding: bool) -> bool:
    """Whether the sensor holds the lamps on after reading ``lux``.

    Args:
        sensor: the schedule's sensor settings, None if it has none (or it is disabled).
        lux: the current illuminance, None if unknown.
        holding: whether the sensor held the lamps on until now.

    Returns:
        True while the sensor forces the lamps on.
    """
    if sensor is None or lux is None:
        return False
    if holding:
        return lux <= sensor.off_above_lux
    return lux < sensor.on_below_lux
