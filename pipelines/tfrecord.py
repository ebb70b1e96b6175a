"""TFRecord files through robolake/storage.py (local, gs://, s3://): records framed as
length, its masked CRC32C, the data, the data's masked CRC32C. Writing frames records;
reading checks both CRCs and tells where each record lies."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

import google_crc32c

from robolake.storage import open_read, open_write

HEADER = 12  # length (8 bytes) and its CRC (4)
OVERHEAD = 16  # header and the data's CRC (4)


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)  # hardware CRC32C: 30x crcmod on shard-sized records
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


# -- writing ------------------------------------------------------------------------------


def frame_record(record: bytes) -> bytes:
    """One TFRecord: length, its masked CRC32C, the data, the data's masked CRC32C."""
    length = struct.pack("<Q", len(record))
    return b"".join((length, _masked_crc(length), record, _masked_crc(record)))


def write_tfrecord(path: str, records: Iterable[bytes]) -> tuple[int, int]:
    """Write records to one TFRecord file; returns (record count, file bytes)."""
    count = size = 0
    with open_write(path) as f:
        for record in records:
            framed = frame_record(record)
            f.write(framed)
            count += 1
            size += len(framed)
    return count, size


# -- reading ------------------------------------------------------------------------------


class FramingError(Exception):
    """A record that cannot be read; `fatal` when the records after it cannot be found."""

    def __init__(self, start: int, reason: str, fatal: bool):
        super().__init__(reason)
        self.start = start
        self.reason = reason
        self.fatal = fatal


def _check_header(header: bytes, start: int) -> int:
    if len(header) < HEADER:
        raise FramingError(start, f"truncated record header at byte {start}", fatal=True)
    if _masked_crc(header[:8]) != header[8:HEADER]:
        raise FramingError(start, f"record length CRC mismatch at byte {start}", fatal=True)
    return struct.unpack("<Q", header[:8])[0]


def _check_body(data: bytes, footer: bytes, length: int, start: int) -> None:
    if len(data) < length or len(footer) < 4:
        raise FramingError(start, f"record at byte {start} is truncated ({length} bytes announced)", fatal=True)
    if _masked_crc(data) != footer:
        raise FramingError(start, f"record data CRC mismatch at byte {start}", fatal=False)


def tfrecords(path: str) -> Iterator[tuple[int, int, bytes | FramingError]]:
    """(start, stop, record) of each record of a TFRecord file, one record in memory; a
    record that fails its CRC comes as a FramingError in its place, and a fatal one ends the file."""
    with open_read(path) as f:
        start = 0
        while header := f.read(HEADER):
            try:
                length = _check_header(header, start)
                data, footer = f.read(length), f.read(4)
                _check_body(data, footer, length, start)
            except FramingError as exc:
                yield start, start + OVERHEAD + (length if not exc.fatal else 0), exc
                if exc.fatal:
                    return
            else:
                yield start, start + OVERHEAD + length, data
            start += OVERHEAD + length


def read_record(path: str, start: int, stop: int) -> bytes:
    """The record at bytes [start, stop) of a TFRecord file, CRCs checked; FramingError if not."""
    with open_read(path) as f:
        f.seek(start)
        framed = f.read(stop - start)
    length = _check_header(framed[:HEADER], start)
    if length != stop - start - OVERHEAD:
        raise FramingError(start, f"record at byte {start} is {length} bytes, planned {stop - start - OVERHEAD}",
                           fatal=True)
    _check_body(framed[HEADER : HEADER + length], framed[HEADER + length :], length, start)
    return framed[HEADER : HEADER + length]
