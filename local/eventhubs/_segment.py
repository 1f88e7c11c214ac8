"""The on-disk format of a partition log: segment files of CRC-framed records.

All integers are big-endian. A partition is a directory of segment files named
`<first sequence number, 20 digits>.seg`:

- Segment header, 44 bytes: magic `FSEHSEG1`; first sequence number (i64, equal to the name);
  base offset (i64, the offset of its first record); the offset and enqueued ms of the last
  record *before* this segment (i64 each; -1 and 0 when there never was one: they let the log
  report its last event after retention deleted it); CRC32 of the 40 bytes before it. A segment
  is written as `.tmp` and renamed into place, so a crash never leaves a half-made header.
- Record frame: a 26-byte header — body length (u32), sequence number (i64), enqueued ms (i64),
  key length (u16; 0xFFFF = no partition key), CRC32 (u32) of the header's first 22 bytes and
  the body — then the body: the UTF-8 partition key, then the payload.
- A record's offset is its segment's base offset plus its position after the header: a byte
  position in the concatenated record stream of the partition, so offsets rise strictly, start
  at 0 and mean the same after a restart.

Loading a segment checks every frame's CRC and sequence number; the first incomplete or corrupt
frame (a torn write: the process or machine died mid-append) and everything after it is cut
off, with a warning, and every complete record before it keeps its number and offset.

The index is sparse and in memory: the sequence number, position and time of the first record
in every `INDEX_INTERVAL_BYTES` of a segment (Kafka's scheme), rebuilt when a segment is loaded.
A lookup is a bisection plus a scan of at most one interval, and the index costs 24 bytes per
4 KiB of log however small the events are.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
import time
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FRAME_SIZE",
    "HEADER_SIZE",
    "INDEX_INTERVAL_BYTES",
    "NO_KEY",
    "READ_CHUNK_BYTES",
    "SUFFIX",
    "Frame",
    "LogCorruptError",
    "Plan",
    "Segment",
    "create_segment",
    "encode_frame",
    "iter_frames",
    "load_segment",
    "now_ms",
    "recover",
    "scan",
    "segment_path",
    "sync_directory",
]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">8sqqqqI")
_MAGIC = b"FSEHSEG1"
_FRAME = struct.Struct(">IqqHI")
_CRC_COVERS = _FRAME.size - 4
HEADER_SIZE = _HEADER.size
FRAME_SIZE = _FRAME.size
NO_KEY = 0xFFFF
INDEX_INTERVAL_BYTES = 4096
READ_CHUNK_BYTES = 64 * 1024
SUFFIX = ".seg"


def now_ms() -> int:
    """Milliseconds since the epoch, UTC: the logs' default clock."""
    return time.time_ns() // 1_000_000


class LogCorruptError(RuntimeError):
    """A log file is damaged where a torn write cannot explain it; names the file and byte."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded record frame and where it sits in its segment file."""

    pos: int
    length: int
    seq: int
    time_ms: int
    key: str | None
    payload: bytes


def encode_frame(seq: int, time_ms: int, key: bytes | None, payload: bytes) -> bytes:
    """The bytes of one record frame (header with CRC, key, payload)."""
    key_bytes = key or b""
    key_len = NO_KEY if key is None else len(key_bytes)
    head = _FRAME.pack(len(key_bytes) + len(payload), seq, time_ms, key_len, 0)[:_CRC_COVERS]
    crc = zlib.crc32(payload, zlib.crc32(key_bytes, zlib.crc32(head)))
    return b"".join((head, crc.to_bytes(4, "big"), key_bytes, payload))


def iter_frames(
    fd: int, pos: int, end: int, *, strict: bool, path: Path, chunk: int = READ_CHUNK_BYTES
) -> Iterator[Frame]:
    """Yield the frames in [pos, end) of an open segment, reading `chunk` bytes at a time.

    Memory stays at one chunk plus one record: a segment is never read whole. A frame that is
    incomplete or fails its CRC ends the iteration quietly when not `strict` (loading: it is a
    torn tail) and raises `LogCorruptError` when `strict` (reading published data: the file
    changed under us).
    """
    buf, buf_at = b"", pos

    def take(at: int, n: int) -> bytes:
        nonlocal buf, buf_at
        if at + n > end:
            return b""  # never read past `end`: beyond it an append may be in progress
        if at < buf_at or at + n > buf_at + len(buf):
            buf, buf_at = os.pread(fd, max(n, min(chunk, end - at)), at), at
        return buf[at - buf_at : at - buf_at + n]

    while pos < end:
        problem, head, body = "", take(pos, _FRAME.size), b""
        if len(head) < _FRAME.size:
            problem = "incomplete frame header"
        else:
            body_len, seq, time_ms, key_len, crc = _FRAME.unpack(head)
            key_n = 0 if key_len == NO_KEY else key_len
            if key_n > body_len or pos + _FRAME.size + body_len > end:
                problem = "incomplete frame"
            else:
                body = take(pos + _FRAME.size, body_len)
                if len(body) < body_len:
                    problem = "incomplete frame"
                elif zlib.crc32(body, zlib.crc32(head[:_CRC_COVERS])) != crc:
                    problem = "CRC mismatch"
        if problem:
            if strict:
                raise LogCorruptError(f"{path}: {problem} at byte {pos}")
            return
        key = None if key_len == NO_KEY else body[:key_n].decode()
        yield Frame(pos, _FRAME.size + body_len, seq, time_ms, key, body[key_n:])
        pos += _FRAME.size + body_len


class Segment:
    """One segment file: where it starts, how much of it is published, and its sparse index.

    The owning log mutates it only while holding its state lock, and readers query it only
    under the same lock, so the index columns are never read mid-append.
    """

    def __init__(
        self, path: Path, first_seq: int, base_offset: int, prev_offset: int, prev_ms: int
    ) -> None:
        self.path, self.first_seq, self.base_offset = path, first_seq, base_offset
        self.prev_offset = prev_offset
        self.size, self.count, self.last_pos, self.last_ms = HEADER_SIZE, 0, -1, prev_ms
        self.idx_seq, self.idx_pos, self.idx_ms = array("q"), array("q"), array("q")

    @property
    def next_seq(self) -> int:
        """The sequence number a record appended to this segment would get."""
        return self.first_seq + self.count

    @property
    def last_offset(self) -> int:
        """Offset of the last record here, else of the last one before this segment."""
        return self.offset_of(self.last_pos) if self.count else self.prev_offset

    @property
    def end_offset(self) -> int:
        """The offset the next segment starts at."""
        return self.offset_of(self.size)

    def offset_of(self, pos: int) -> int:
        """The offset of the record at file position `pos`."""
        return self.base_offset + pos - HEADER_SIZE

    def add(self, pos: int, length: int, time_ms: int) -> None:
        """Publish one record written at `pos`, indexing it if it starts a new interval."""
        if not self.idx_pos or pos - self.idx_pos[-1] >= INDEX_INTERVAL_BYTES:
            self.idx_seq.append(self.next_seq)
            self.idx_pos.append(pos)
            self.idx_ms.append(time_ms)
        self.count += 1
        self.last_pos, self.size, self.last_ms = pos, pos + length, time_ms

    def seek(self, column: array, value: int, *, right: bool) -> int:
        """File position to scan from for `value` in an index column.

        The position of the last indexed record whose column value is <= `value` (`right`) or
        < `value` (not `right`); the first record's position when there is none.
        """
        i = (bisect.bisect_right if right else bisect.bisect_left)(column, value) - 1
        return self.idx_pos[i] if i >= 0 else HEADER_SIZE


def segment_path(directory: Path, first_seq: int) -> Path:
    """Where the segment starting at `first_seq` lives (names sort in sequence order)."""
    return directory / f"{first_seq:020d}{SUFFIX}"


def create_segment(
    directory: Path, first_seq: int, base_offset: int, prev_offset: int, prev_ms: int, *, sync: bool
) -> Segment:
    """Write a new empty segment atomically (temp file, fsync if `sync`, rename)."""
    path = segment_path(directory, first_seq)
    tmp = path.with_suffix(".tmp")
    head = _HEADER.pack(_MAGIC, first_seq, base_offset, prev_offset, prev_ms, 0)[:-4]
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, head + zlib.crc32(head).to_bytes(4, "big"))
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return Segment(path, first_seq, base_offset, prev_offset, prev_ms)


def load_segment(path: Path) -> Segment:
    """Read a segment file, rebuild its index, and cut off a torn or corrupt tail.

    Raises:
        LogCorruptError: the header is missing or damaged (it is never torn: segments are
            renamed into place), so the file cannot be trusted at all.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        raw = os.pread(fd, HEADER_SIZE, 0)
        fields = _HEADER.unpack(raw) if len(raw) == HEADER_SIZE else None
        if (
            fields is None
            or fields[0] != _MAGIC
            or zlib.crc32(raw[:-4]) != fields[-1]
            or segment_path(path.parent, fields[1]) != path
        ):
            raise LogCorruptError(f"{path}: not a segment file of this format (bad header)")
        seg = Segment(path, *fields[1:5])
        file_end = os.fstat(fd).st_size
        for frame in iter_frames(fd, HEADER_SIZE, file_end, strict=False, path=path):
            if frame.seq != seg.next_seq:
                break
            seg.add(frame.pos, frame.length, frame.time_ms)
    finally:
        os.close(fd)
    if seg.size < file_end:
        log.warning(
            "%s: cut %d bytes of torn or corrupt data after sequence number %d",
            path,
            file_end - seg.size,
            seg.next_seq - 1,
        )
        os.truncate(path, seg.size)
    return seg


def recover(directory: Path, *, sync: bool) -> list[Segment]:
    """Load a partition directory's segments in order; create the first if there is none.

    Stray `.tmp` files (a crash mid-roll) are deleted, and so is a sealed segment left with no
    complete record. A gap between segments (only possible without fsync) is logged.

    Raises:
        LogCorruptError: a bad header, or a segment starting inside the previous one.
    """
    for stray in directory.glob("*.tmp"):
        stray.unlink()
    paths = sorted(directory.glob(f"*{SUFFIX}"))
    segments: list[Segment] = []
    for n, path in enumerate(paths):
        seg = load_segment(path)
        if segments and seg.first_seq < segments[-1].next_seq:
            raise LogCorruptError(f"{path}: starts inside the previous segment")
        if segments and seg.first_seq > segments[-1].next_seq:
            log.warning(
                "%s: events %d to %d were lost", path, segments[-1].next_seq, seg.first_seq - 1
            )
        if seg.count == 0 and n < len(paths) - 1:
            log.warning("%s: no complete event left; deleted", path)
            path.unlink()
            continue
        segments.append(seg)
    if not segments:
        segments.append(create_segment(directory, 0, 0, -1, 0, sync=sync))
        sync_directory(directory, sync=sync)
    return segments


def sync_directory(directory: Path, *, sync: bool) -> None:
    """Make created, renamed and deleted file names in `directory` durable (if `sync`)."""
    if not sync:
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


Plan = list[tuple[Segment, int, int]]
"""Segments to scan, each with the position to start at and its published end."""


def scan(plan: Plan, *, chunk: int = READ_CHUNK_BYTES) -> Iterator[tuple[Segment, Frame]]:
    """Yield every frame of a plan, opening each file for the scan only.

    A reader's own short-lived handle survives a concurrent append, and a segment deleted by
    retention shows up as `FileNotFoundError`, which the reader answers by starting again.
    Close the generator (`contextlib.closing`) when stopping early.
    """
    for seg, pos, end in plan:
        if pos >= end:
            continue
        fd = os.open(seg.path, os.O_RDONLY)
        try:
            for frame in iter_frames(fd, pos, end, strict=True, path=seg.path, chunk=chunk):
                yield seg, frame
        finally:
            os.close(fd)
