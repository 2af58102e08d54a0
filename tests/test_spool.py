"""config.files.Spool: a file written in pieces, counted, hashed, bounded, and on disk once it
outgrows its share of memory."""

import hashlib

import pytest

from config import files
from config.files import Spool


class Full(Exception):
    pass


def test_pieces_are_counted_hashed_and_read_back_from_the_start():
    with Spool() as spool:
        spool.write(b"abc")
        spool.write("déf\n")  # text is written as UTF-8

        assert spool.size == 8
        assert spool.sha256 == hashlib.sha256("abcdéf\n".encode()).hexdigest()
        content = spool.file()
        assert content.size == 8
        assert content.read() == "abcdéf\n".encode()
        assert not spool.on_disk


def test_past_its_share_of_memory_it_is_a_file_on_disk(monkeypatch):
    monkeypatch.setattr(files, "SPOOL_IN_MEMORY_BYTES", 1_000)
    with Spool() as spool:
        spool.write(b"x" * 999)
        assert not spool.on_disk
        spool.write(b"yy")
        assert spool.on_disk
        assert spool.file().read() == b"x" * 999 + b"yy"


def test_the_write_that_passes_the_limit_raises_the_refusal_and_keeps_nothing_of_it():
    sizes = []

    def refuse(size):
        sizes.append(size)
        return Full()

    with Spool(limit=10, refuse=refuse) as spool:
        spool.write(b"12345")
        spool.write(b"67890")  # exactly the limit
        with pytest.raises(Full):
            spool.write(b"!")
        assert sizes == [11]
        assert spool.file().read() == b"1234567890"


def test_a_limit_without_a_refusal_raises_value_error():
    with Spool(limit=1) as spool, pytest.raises(ValueError, match="more than 1"):
        spool.write(b"ab")


def test_closing_deletes_the_file(monkeypatch):
    monkeypatch.setattr(files, "SPOOL_IN_MEMORY_BYTES", 10)
    spool = Spool()
    spool.write(b"x" * 100)
    handle = spool.file().file
    spool.close()
    assert handle.closed
