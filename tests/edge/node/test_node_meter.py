"""Metering and power faults. Runs on CPython and MicroPython."""

from edge.node.meter import CONFIRM_MS, Meter


def test_energy_is_the_integral_of_power():
    meter = Meter(60.0)
    meter.measure(60.0, 0, 100)
    for _ in range(3600):
        meter.measure(60.0, 1000, 100)
    assert meter.energy_wh == 60


def test_a_dead_lamp_is_a_fault_once_confirmed_and_clears_when_it_draws_again():
    meter = Meter(60.0)
    meter.measure(0.0, 0, 100)
    assert meter.faults == ()
    meter.measure(0.0, CONFIRM_MS - 1, 100)
    assert meter.faults == ()
    meter.measure(0.0, 1, 100)
    assert meter.faults == ("lamp",)
    meter.measure(58.0, 100, 100)
    assert meter.faults == ()


def test_off_and_dim_lamps_are_not_faulty_and_overcurrent_is_a_driver_fault():
    meter = Meter(60.0)
    for _ in range(5):
        meter.measure(0.4, 1000, 0)
    assert meter.faults == ()
    for _ in range(5):
        meter.measure(9.0, 1000, 20)
    assert meter.faults == ()
    for _ in range(5):
        meter.measure(95.0, 1000, 100)
    assert meter.faults == ("driver",)
