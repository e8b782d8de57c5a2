"""The usage spool: records on local disk before they count as accepted, so a gateway restart (or kill -9)
loses none that it accepted.

The rules:
- The spool is a directory of segment files `NNNNNNNNNN.usage`, numbered in the order they were opened. A
  segment is a sequence of frames; a frame is one batch of records as a serialized `RecordUsageRequest`
  (protobuf, the contract's own message), after an 8-byte header: its length and its CRC-32, both
  big-endian unsigned 32-bit integers (`struct`). Nothing else is in the file.
- `append` writes one frame to the current segment and fsyncs it (and, for a new segment, the directory)
  before it returns: a record is accepted once it is on disk. The current segment is closed once it holds
  `segment_bytes`; the next append opens a new one.
- A frame that would take the files past `max_bytes` is refused (SpoolFull); the feed counts and logs it.
- `replay` reads every segment at start-up, before anything is appended. A frame cut short or failing its
  CRC (a write the kill interrupted, never fsynced, so never accepted) ends its segment's replay; the
  records before it are replayed. New appends go to a new segment after the last, as they do after a write
  that failed (a full disk): a frame written after a cut one would be lost to replay.
- `remove` deletes a segment once every record in it was acknowledged by the schema service (or refused
  by it for good); a crash between acknowledgement and removal replays records the ledger already holds,
  which it acknowledges as duplicates.

Every method does blocking file I/O: the feed calls them through asyncio.to_thread, and a lock keeps a write
that outlives its cancelled caller (a shutdown) from meeting the next one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from google.protobuf.message import DecodeError

from schemaservice.v1 import usage_service_pb2 as upb

log = logging.getLogger(__name__)

HEADER = struct.Struct(">II")  # payload length, CRC-32 of the payload
SUFFIX = ".usage"
MIN_SEGMENT_BYTES = 64 * 1024
MAX_SEGMENT_BYTES = 8 * 1024 * 1024


class SpoolFull(Exception):
    """A frame that does not fit under `usage.spool_max_bytes`."""


@dataclass(frozen=True)
class Replayed:
    """One segment's records as read back at start-up."""

    segment: int
    records: list[upb.UsageRecord]


def frame(records: Sequence[upb.UsageRecord]) -> bytes:
    payload = upb.RecordUsageRequest(records=records).SerializeToString()
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def frames(data: bytes) -> Iterator[list[upb.UsageRecord]]:
    """The records of each whole frame of a segment, up to the first cut or corrupt one."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, crc = HEADER.unpack_from(data, offset)
        payload = data[offset + HEADER.size : offset + HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            return
        try:
            yield list(upb.RecordUsageRequest.FromString(payload).records)
        except DecodeError:
            return
        offset += HEADER.size + length


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory, self.max_bytes = directory, max_bytes
        self.segment_bytes = min(max(max_bytes // 8, MIN_SEGMENT_BYTES), MAX_SEGMENT_BYTES)
        self.sizes: dict[int, int] = {}  # segment -> bytes on disk
        self.current: int | None = None  # the segment appends go to
        self._file: BinaryIO | None = None
        self._next = 1
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return sum(self.sizes.values())

    def replay(self) -> list[Replayed]:
        """Every segment's records, oldest first; creates the directory if it is not there."""
        self.directory.mkdir(parents=True, exist_ok=True)
        replayed = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if not (path.stem.isascii() and path.stem.isdigit()):  # not one of ours: int() would stop the start
                log.warning("usage spool: a file that is not a segment left alone", extra={"file": path.name})
                continue
            segment = int(path.stem)
            self._next = max(self._next, segment + 1)
            data = path.read_bytes()
            self.sizes[segment] = len(data)
            records = [record for batch in frames(data) for record in batch]
            replayed.append(Replayed(segment, records))
        return replayed

    def append(self, records: Sequence[upb.UsageRecord]) -> int:
        """Write `records` as one frame and fsync it; the segment it went to. SpoolFull when it does not fit."""
        data = frame(records)
        with self._lock:
            return self._append(data)

    def _append(self, data: bytes) -> int:
        if self.size + len(data) > self.max_bytes:
            raise SpoolFull(f"{self.size + len(data):,} bytes would pass usage.spool_max_bytes ({self.max_bytes:,})")
        if self._file is None or self.current is None:
            self._open()
        assert self._file is not None and self.current is not None
        try:
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError:
            # Part of the frame may be in the file: a frame after it could never be read back (replay stops at
            # the first bad frame), so the segment takes no more. Closing flushes what is left, failing again.
            file, self._file, self.current = self._file, None, None
            with contextlib.suppress(OSError):
                file.close()
            raise
        segment = self.current
        self.sizes[segment] += len(data)
        if self.sizes[segment] >= self.segment_bytes:
            self._close()
        return segment

    def remove(self, segment: int) -> None:
        """Delete a segment whose records were all acknowledged (closing it first if appends went there)."""
        with self._lock:
            if segment == self.current:
                self._close()
            self.sizes.pop(segment, None)
            (self.directory / f"{segment:010d}{SUFFIX}").unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._close()

    def _open(self) -> None:
        self.current, self._next = self._next, self._next + 1
        self._file = open(self.directory / f"{self.current:010d}{SUFFIX}", "ab")
        self.sizes[self.current] = 0
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)  # the new file's name survives a crash too
        finally:
            os.close(directory)

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self.current = None, None
