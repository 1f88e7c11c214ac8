"""An Event Hubs partition as an append-only log on disk.

Event Hubs numbers each partition's events with a `sequence_number` from 0 and gives each an
`offset`; both only grow, and a consumer may start at either, or at an enqueued time. A
`PartitionLog` keeps exactly that on disk, so after a restart every acknowledged event is there
with the same numbers. Payloads are opaque bytes (the server stores encoded AMQP messages). The
file format, crash recovery and the index are described in `local.eventhubs._segment`.

Durability (`fsync`): "always" fsyncs every append before it returns, and the directory when a
segment is created or deleted; "batch" fsyncs at most once a second of the injected clock, at a
segment roll and at close (`sync()` forces one); "never" leaves it to the OS. Appends are
`os.pwrite` calls, never buffered in the process, so a killed process loses nothing under any
policy: only a machine crash can, and under "always" not an acknowledged event.

Retention deletes whole segments whose newest event is older than `retention`. When even the
active segment's newest event has expired, the log first rolls to a fresh empty segment, so the
active segment is never deleted and an all-expired log is empty with begin = next. Enqueued
times never go backwards within a partition (a clock that steps back is clamped): that is what
makes a lookup by time a bisection.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

from ._segment import (
    FRAME_SIZE,
    HEADER_SIZE,
    INDEX_INTERVAL_BYTES,
    NO_KEY,
    Frame,
    LogCorruptError,
    Plan,
    Segment,
    create_segment,
    encode_frame,
    now_ms,
    recover,
    scan,
    sync_directory,
)

__all__ = ["FsyncPolicy", "LogClosedError", "LogCorruptError", "PartitionLog", "Record"]

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "batch", "never"]

_BATCH_FSYNC_INTERVAL_MS = 1000


class LogClosedError(RuntimeError):
    """The log or store was used after `close()`."""


@dataclass(frozen=True, slots=True)
class Record:
    """One stored event with the numbers its partition gave it (offset: a byte position)."""

    sequence_number: int
    offset: int
    enqueued_time_ms: int
    partition_key: str | None
    payload: bytes


class PartitionLog:
    """One partition's events on disk: append, read from a position, find a position.

    Thread-safe. Appends are serialised by a write lock and published under a short state lock;
    readers take the state lock only to snapshot what is published, then read through their own
    file handles, so they never see a half-written event and never wait for a writer's fsync.
    """

    def __init__(
        self,
        directory: Path,
        *,
        fsync: FsyncPolicy = "always",
        retention: timedelta = timedelta(hours=24),
        segment_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        """Open the log in `directory`, creating it, or recovering it after a crash.

        Args:
            directory: the partition's own directory (created if missing).
            fsync: durability policy, see the module docstring.
            retention: how long events are kept (applied by `apply_retention`).
            segment_bytes: size at which the next append starts a new segment file.
            clock: milliseconds since the epoch, UTC; injected so tests control time.

        Raises:
            ValueError: an unknown fsync policy, or a non-positive size or retention.
            LogCorruptError: damage a torn write cannot explain (a bad header, overlapping
                segments); recovery refuses to guess.
        """
        if fsync not in ("always", "batch", "never"):
            raise ValueError(f"fsync must be 'always', 'batch' or 'never', not {fsync!r}")
        if segment_bytes <= 0 or retention <= timedelta(0):
            raise ValueError("segment_bytes and retention must be positive")
        self.directory = Path(directory)
        self._fsync, self._segment_bytes, self._clock = fsync, segment_bytes, clock
        self._retention_ms = retention // timedelta(milliseconds=1)
        self._write_lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._closed, self._dirty, self._synced_ms = False, False, clock()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._segments = recover(self.directory, sync=fsync != "never")
        self._fd = os.open(self._segments[-1].path, os.O_WRONLY)

    # --- state -----------------------------------------------------------------------------
    @property
    def begin_sequence_number(self) -> int:
        """The first retained event's number; equals `next_sequence_number` when empty."""
        with self._cond:
            return self._segments[0].first_seq

    @property
    def next_sequence_number(self) -> int:
        """The number the next appended event will get."""
        with self._cond:
            return self._segments[-1].next_seq

    @property
    def last_sequence_number(self) -> int:
        """The last event ever appended (still reported once expired); -1 if none ever was."""
        return self.next_sequence_number - 1

    @property
    def last_offset(self) -> int:
        """The offset of the last event ever appended; -1 if none ever was."""
        with self._cond:
            return self._segments[-1].last_offset

    @property
    def last_enqueued_time_ms(self) -> int:
        """The enqueued time of the last event ever appended; 0 if none ever was."""
        with self._cond:
            return self._segments[-1].last_ms

    @property
    def is_empty(self) -> bool:
        """True when no event is retained: none was ever appended, or all have expired."""
        with self._cond:
            return self._segments[0].first_seq == self._segments[-1].next_seq

    # --- writing ---------------------------------------------------------------------------
    def append(self, items: Sequence[tuple[str | None, bytes]]) -> list[Record]:
        """Append (partition key, payload) pairs in one write; durable on return if "always".

        The batch gets consecutive sequence numbers and one enqueued time.

        Raises:
            LogClosedError: after `close()`.
            ValueError: a partition key of 65,535 UTF-8 bytes or more.
            OSError: the write or fsync failed; the file is cut back and nothing is published.
        """
        encoded = [(key, None if key is None else key.encode(), bytes(data)) for key, data in items]
        if any(raw is not None and len(raw) >= NO_KEY for _, raw, _ in encoded):
            raise ValueError(f"a partition key must be under {NO_KEY} UTF-8 bytes")
        if not encoded:
            return []
        total = sum(FRAME_SIZE + len(raw or b"") + len(data) for _, raw, data in encoded)
        with self._write_lock:
            self._check_open()
            active = self._segments[-1]
            if active.count and active.size + total > self._segment_bytes:
                active = self._roll()
            now = max(self._clock(), active.last_ms)
            first, start = active.next_seq, active.size
            frames = [
                encode_frame(first + i, now, raw, data) for i, (_, raw, data) in enumerate(encoded)
            ]
            self._write(b"".join(frames), start, now)
            records, pos = [], start
            with self._cond:
                for i, frame in enumerate(frames):
                    key, _, data = encoded[i]
                    records.append(Record(first + i, active.offset_of(pos), now, key, data))
                    active.add(pos, len(frame), now)
                    pos += len(frame)
                self._cond.notify_all()
        return records

    def _write(self, data: bytes, at: int, clock_ms: int) -> None:
        try:
            done = 0
            while done < len(data):
                done += os.pwrite(self._fd, data[done:], at + done)
            self._dirty = True
            if self._fsync == "always" or (
                self._fsync == "batch" and clock_ms - self._synced_ms >= _BATCH_FSYNC_INTERVAL_MS
            ):
                os.fsync(self._fd)
                self._synced_ms, self._dirty = clock_ms, False
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, at)
            raise

    def _roll(self) -> Segment:
        """Seal the active segment and start a new one after it (write lock held)."""
        old = self._segments[-1]
        if self._dirty and self._fsync != "never":
            os.fsync(self._fd)  # a later segment must never be on disk before this one's data
            self._dirty = False
        new = create_segment(
            self.directory,
            old.next_seq,
            old.end_offset,
            old.last_offset,
            old.last_ms,
            sync=self._fsync != "never",
        )
        sync_directory(self.directory, sync=self._fsync != "never")
        fd = os.open(new.path, os.O_WRONLY)
        os.close(self._fd)
        self._fd = fd
        with self._cond:
            self._segments = [*self._segments, new]
        return new

    def sync(self) -> None:
        """Fsync what "batch" has not yet (for a server that flushes on a timer)."""
        with self._write_lock:
            if self._dirty and self._fsync != "never" and not self._closed:
                os.fsync(self._fd)
                self._synced_ms, self._dirty = self._clock(), False

    def apply_retention(self) -> int:
        """Delete whole segments whose newest event is older than retention.

        Returns:
            How many events were dropped; `begin_sequence_number` moved up by as many.
        """
        with self._write_lock:
            self._check_open()
            cutoff = self._clock() - self._retention_ms
            if self._segments[-1].count and self._segments[-1].last_ms < cutoff:
                self._roll()
            doomed: list[Segment] = []
            for seg in self._segments[:-1]:
                if seg.last_ms >= cutoff:
                    break
                doomed.append(seg)
            if not doomed:
                return 0
            with self._cond:
                self._segments = self._segments[len(doomed) :]
            for seg in doomed:
                seg.path.unlink(missing_ok=True)
            sync_directory(self.directory, sync=self._fsync != "never")
        dropped = sum(seg.count for seg in doomed)
        log.info(
            "%s: retention dropped %d events (%d segments)", self.directory, dropped, len(doomed)
        )
        return dropped

    def close(self) -> None:
        """Flush per policy, release the file, and wake every `wait_for` caller. Idempotent."""
        with self._write_lock:
            if self._closed:
                return
            try:
                if self._dirty and self._fsync != "never":
                    os.fsync(self._fd)
            finally:
                os.close(self._fd)
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()

    def __enter__(self) -> PartitionLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosedError(f"{self.directory}: the log is closed")

    # --- reading ---------------------------------------------------------------------------
    def read(
        self, start_sequence: int, *, max_count: int = 300, max_bytes: int = 1 << 20
    ) -> list[Record]:
        """Events from `start_sequence` (raised to begin) in order, within the limits.

        At least one event is returned when one is available, even if its payload alone is over
        `max_bytes` (payload bytes are what is counted); none when the start is past the end.
        """
        while True:
            with self._cond:
                self._check_open()
                segs = self._segments
                start = max(start_sequence, segs[0].first_seq)
                if max_count < 1 or start >= segs[-1].next_seq:
                    return []
                i = bisect.bisect_right(segs, start, key=lambda s: s.first_seq) - 1
                plan = self._plan(i, segs[i].seek(segs[i].idx_seq, start, right=True))
            records: list[Record] = []
            used = 0
            try:
                with contextlib.closing(scan(plan)) as frames:
                    for seg, f in frames:
                        if f.seq < start:
                            continue
                        if len(records) >= max_count or (
                            records and used + len(f.payload) > max_bytes
                        ):
                            break
                        records.append(
                            Record(f.seq, seg.offset_of(f.pos), f.time_ms, f.key, f.payload)
                        )
                        used += len(f.payload)
            except FileNotFoundError as exc:
                self._check_moved(segs, exc)
                continue
            return records

    def sequence_at_or_after_offset(self, offset: int, *, inclusive: bool) -> int:
        """The first retained event whose offset is >= (or >) `offset`; next when none is."""
        target = offset if inclusive else offset + 1

        def locate(segs: list[Segment]) -> tuple[int, int]:
            i = max(bisect.bisect_right(segs, target, key=lambda s: s.base_offset) - 1, 0)
            pos = target - segs[i].base_offset + HEADER_SIZE
            return i, segs[i].seek(segs[i].idx_pos, pos, right=True)

        return self._find(locate, lambda seg, f: seg.offset_of(f.pos) >= target)

    def sequence_at_or_after_time(self, time_ms: int, *, inclusive: bool) -> int:
        """The first retained event enqueued at or after (or strictly after) `time_ms`."""
        # Times never decrease, so the answer lies in the first segment whose newest event
        # qualifies, just after the last indexed event that does not.
        side = bisect.bisect_left if inclusive else bisect.bisect_right

        def locate(segs: list[Segment]) -> tuple[int, int]:
            i = side(segs, time_ms, key=lambda s: s.last_ms)
            if i == len(segs):
                return i, HEADER_SIZE
            return i, segs[i].seek(segs[i].idx_ms, time_ms, right=not inclusive)

        return self._find(
            locate, lambda _, f: f.time_ms >= time_ms if inclusive else f.time_ms > time_ms
        )

    def _find(
        self,
        locate: Callable[[list[Segment]], tuple[int, int]],
        hit: Callable[[Segment, Frame], bool],
    ) -> int:
        """The first event from `locate`'s (segment, position) on that satisfies `hit`.

        Returns `next_sequence_number` when no retained event does. The scan is short: from an
        indexed position to the next one, or into the first event of the following segment.
        """
        while True:
            with self._cond:
                self._check_open()
                segs, nxt = self._segments, self._segments[-1].next_seq
                if segs[0].first_seq == nxt:
                    return nxt
                i, pos = locate(segs)
                if i >= len(segs):
                    return nxt
                plan = self._plan(i, pos)
            try:
                # A lookup ends within one index interval: read little more than that.
                with contextlib.closing(scan(plan, chunk=2 * INDEX_INTERVAL_BYTES)) as frames:
                    for seg, f in frames:
                        if hit(seg, f):
                            return f.seq
            except FileNotFoundError as exc:
                self._check_moved(segs, exc)
                continue
            return nxt

    def _check_moved(self, segs: list[Segment], exc: FileNotFoundError) -> None:
        """Let a reader retry after retention deleted a segment it was about to read.

        Retention publishes the shorter segment list before it deletes files, so a missing
        file with the list unchanged was deleted behind the log's back: that is an error.
        """
        with self._cond:
            if self._segments[0] is segs[0]:
                raise LogCorruptError(f"{exc.filename}: segment file is missing") from exc

    def _plan(self, i: int, pos: int) -> Plan:
        """Segments from the i-th (from `pos`) to the last, with their published ends."""
        segs = self._segments
        return [(segs[i], pos, segs[i].size)] + [(s, HEADER_SIZE, s.size) for s in segs[i + 1 :]]

    def wait_for(self, sequence_number: int, timeout: float) -> bool:
        """Block until event `sequence_number` exists, the log closes, or `timeout` s pass.

        Returns:
            Whether the event exists (it may since have expired).
        """
        with self._cond:
            self._cond.wait_for(
                lambda: self._closed or self._segments[-1].next_seq > sequence_number, timeout
            )
            return self._segments[-1].next_seq > sequence_number
