"""The node's flash: few writes, counted, atomic, and a torn file never trusted.
Runs on CPython and MicroPython."""

from edge.node.bus import encode_program
from edge.node.flash import PROGRAM_FILE, TEMP_FILE, Flash
from edge.node.program import Program
from tests.edge.node.portable import exists, read_file, scratch_dir, write_file

T0 = 1774699200


def _program(number, level=100):
    return Program(number, T0, 86400, [0, 3600], [0, level])


def test_a_program_is_written_once_however_often_it_arrives():
    directory = scratch_dir()
    flash = Flash(directory)
    assert flash.load() is None and flash.fault is None
    assert flash.save(_program(1)) is True
    for _ in range(100):  # a retained program, delivered on each of 100 reconnections
        assert flash.save(_program(1)) is False
    assert flash.writes == 1
    assert not exists(directory + "/" + TEMP_FILE)


def test_the_program_and_its_write_count_survive_a_reboot():
    directory = scratch_dir()
    flash = Flash(directory)
    flash.save(_program(1))
    flash.save(_program(2, 50))
    again = Flash(directory)
    program = again.load()
    assert program.same_as(_program(2, 50))
    assert again.writes == 2
    assert again.save(_program(2, 50)) is False
    again.save(_program(3))
    assert Flash(directory).load() is not None and again.writes == 3


def test_a_torn_program_file_is_reported_and_not_used():
    directory = scratch_dir()
    Flash(directory).save(_program(1))
    data = read_file(directory + "/" + PROGRAM_FILE)
    for cut in (0, 1, 2, len(data) // 2, len(data) - 1):
        write_file(directory + "/" + PROGRAM_FILE, data[:cut])
        flash = Flash(directory)
        assert flash.load() is None, cut
        assert flash.fault.startswith(PROGRAM_FILE), (cut, flash.fault)


def test_a_cut_between_removing_and_renaming_leaves_the_temporary_file_which_is_read():
    directory = scratch_dir()
    write_file(directory + "/" + TEMP_FILE, b"4\n" + encode_program(_program(7)))
    flash = Flash(directory)
    assert flash.load().same_as(_program(7))
    assert flash.writes == 4


def test_an_impossible_stored_program_is_refused_like_one_from_the_bus():
    directory = scratch_dir()
    write_file(directory + "/" + PROGRAM_FILE, b'1\n{"n":1,"t0":1774699200,"e":60,"p":[[0,900]]}')
    flash = Flash(directory)
    assert flash.load() is None
    assert "program.p[0][1]" in flash.fault
