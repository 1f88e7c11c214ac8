import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local.eventhubs._segment import FRAME_SIZE, HEADER_SIZE
from local.eventhubs.log import LogClosedError, LogCorruptError, PartitionLog, Record
from local.eventhubs.store import HubStore


class FakeClock:
    """Milliseconds since the epoch, moved by the test."""

    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def frame(key: str | None, payload: bytes) -> int:
    """Bytes one record takes in the log (and so the offset step it causes)."""
    return FRAME_SIZE + len((key or "").encode()) + len(payload)


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def open_log(directory: Path, **kwargs: Any) -> PartitionLog:
    kwargs.setdefault("fsync", "never")
    return PartitionLog(directory, **kwargs)


def test_append_returns_numbered_records_that_read_returns(tmp_path: Path) -> None:
    clock = FakeClock(1_000)
    with open_log(tmp_path, clock=clock) as plog:
        first = plog.append([("device-1", b"a"), (None, b"bc")])
        clock.now = 2_000
        second = plog.append([("ключ", b"")])

        assert first == [
            Record(0, 0, 1_000, "device-1", b"a"),
            Record(1, frame("device-1", b"a"), 1_000, None, b"bc"),
        ]
        assert second == [
            Record(2, frame("device-1", b"a") + frame(None, b"bc"), 2_000, "ключ", b"")
        ]
        assert plog.read(0) == first + second
        assert plog.read(1) == first[1:] + second
        assert (
            plog.begin_sequence_number,
            plog.last_sequence_number,
            plog.next_sequence_number,
        ) == (0, 2, 3)
        assert (plog.last_offset, plog.last_enqueued_time_ms, plog.is_empty) == (
            second[0].offset,
            2_000,
            False,
        )


def test_new_log_is_empty_with_sentinel_properties(tmp_path: Path) -> None:
    with open_log(tmp_path / "p0") as plog:
        assert plog.append([]) == []
        assert (
            plog.begin_sequence_number,
            plog.next_sequence_number,
            plog.last_sequence_number,
            plog.last_offset,
            plog.last_enqueued_time_ms,
            plog.is_empty,
        ) == (0, 0, -1, -1, 0, True)
        assert plog.read(0) == []
        assert plog.sequence_at_or_after_offset(0, inclusive=True) == 0
        assert plog.sequence_at_or_after_time(0, inclusive=True) == 0
    assert segments(tmp_path / "p0") == ["00000000000000000000.seg"]


def test_numbers_are_contiguous_and_offsets_strictly_increasing_across_segments(
    tmp_path: Path,
) -> None:
    with open_log(tmp_path, segment_bytes=256) as plog:
        for n in range(20):
            plog.append([(f"k{n}", bytes(n)), (None, b"x" * (n % 7))])
        records = plog.read(0, max_count=1000)

    assert [r.sequence_number for r in records] == list(range(40))
    assert records[0].offset == 0
    assert all(
        b.offset == a.offset + frame(a.partition_key, a.payload)
        for a, b in itertools.pairwise(records)
    )
    assert len(segments(tmp_path)) > 5


def test_read_honours_max_count_and_max_bytes_but_returns_at_least_one(tmp_path: Path) -> None:
    with open_log(tmp_path) as plog:
        plog.append([(None, b"a" * 10), (None, b"b" * 10), (None, b"c" * 100), (None, b"d")])

        assert [r.sequence_number for r in plog.read(0, max_count=2)] == [0, 1]
        assert [r.sequence_number for r in plog.read(0, max_bytes=20)] == [0, 1]
        assert [r.sequence_number for r in plog.read(0, max_bytes=19)] == [0]
        assert [r.sequence_number for r in plog.read(2, max_bytes=5)] == [2]
        assert [r.sequence_number for r in plog.read(2, max_bytes=101)] == [2, 3]
        assert plog.read(0, max_count=0) == []
        assert plog.read(4) == []
        assert [r.sequence_number for r in plog.read(-5, max_count=1)] == [0]


def test_restart_keeps_every_record_with_the_same_numbers(tmp_path: Path) -> None:
    with open_log(tmp_path, segment_bytes=200, fsync="always") as plog:
        written = [r for n in range(12) for r in plog.append([(str(n), b"p" * n), (None, b"q")])]
    with open_log(tmp_path, segment_bytes=200) as plog:
        assert plog.read(0, max_count=1000) == written
        assert plog.next_sequence_number == 24
        assert plog.last_offset == written[-1].offset
        assert plog.append([(None, b"after")])[0] == Record(
            24,
            written[-1].offset + frame(None, b"q"),
            plog.last_enqueued_time_ms,
            None,
            b"after",
        )


@pytest.mark.parametrize(
    "damage",
    [
        "truncate-mid-payload",
        "truncate-mid-header",
        "flip-payload-byte",
        "flip-crc-byte",
        "garbage-after",
    ],
)
def test_recovery_cuts_a_torn_tail_and_reuses_its_number(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    with open_log(tmp_path) as plog:
        kept = plog.append([("a", b"first"), ("b", b"second")])
        torn = plog.append([("c", b"third-record")])[0]
    path = tmp_path / "00000000000000000000.seg"
    data = bytearray(path.read_bytes())
    torn_at = HEADER_SIZE + torn.offset
    if damage == "truncate-mid-payload":
        data = data[:-3]
    elif damage == "truncate-mid-header":
        data = data[: torn_at + 10]
    elif damage == "flip-payload-byte":
        data[-1] ^= 0xFF
    elif damage == "flip-crc-byte":
        data[torn_at + FRAME_SIZE - 1] ^= 0x01
    else:
        data = data[: torn_at + frame("c", b"third-record")] + b"\x00\x00\x01\x00garbage"
    path.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING), open_log(tmp_path) as plog:
        expected = kept if damage != "garbage-after" else [*kept, torn]
        assert plog.read(0) == expected
        assert plog.next_sequence_number == len(expected)
        again = plog.append([("d", b"x")])[0]

    assert "torn or corrupt" in caplog.text
    assert (again.sequence_number, again.offset) == (
        (2, torn.offset)
        if damage != "garbage-after"
        else (3, torn.offset + frame("c", b"third-record"))
    )
    assert path.stat().st_size == HEADER_SIZE + again.offset + frame("d", b"x")


CHILD = """
import sys
from pathlib import Path
from local.eventhubs.log import PartitionLog

plog = PartitionLog(Path(sys.argv[1]), fsync="always", segment_bytes=4096)
n = 0
while True:
    records = plog.append([(None, b"%d" % (n + i)) for i in range(3)])
    n += 3
    print(records[-1].sequence_number, records[-1].offset, flush=True)
"""


def test_every_acknowledged_record_survives_a_killed_process(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], cwd=root, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        acked = [tuple(map(int, child.stdout.readline().split())) for _ in range(100)]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()

    with open_log(tmp_path) as plog:
        records = plog.read(0, max_count=100_000, max_bytes=1 << 30)
    last_seq, last_offset = acked[-1]
    assert len(records) >= last_seq + 1
    assert (records[last_seq].sequence_number, records[last_seq].offset) == (last_seq, last_offset)
    assert [r.payload for r in records] == [b"%d" % i for i in range(len(records))]
    assert len(segments(tmp_path)) > 1


def test_recovery_refuses_a_damaged_segment_header(tmp_path: Path) -> None:
    with open_log(tmp_path) as plog:
        plog.append([(None, b"x")])
    path = tmp_path / "00000000000000000000.seg"
    data = bytearray(path.read_bytes())
    data[9] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(LogCorruptError, match="bad header"):
        open_log(tmp_path)


def test_recovery_deletes_a_stray_temporary_segment(tmp_path: Path) -> None:
    with open_log(tmp_path) as plog:
        plog.append([(None, b"x")])
    (tmp_path / "00000000000000000001.tmp").write_bytes(b"FSEH")

    with open_log(tmp_path) as plog:
        assert plog.next_sequence_number == 1
    assert segments(tmp_path) == ["00000000000000000000.seg"]


def test_a_failed_write_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_log(tmp_path, fsync="always") as plog:

        def broken_fsync(fd: int) -> None:
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(os, "fsync", broken_fsync)
        with pytest.raises(OSError, match="Input/output"):
            plog.append([(None, b"lost")])
        monkeypatch.undo()

        assert (plog.next_sequence_number, plog.read(0)) == (0, [])
        assert plog.append([(None, b"kept")])[0].offset == 0
    with open_log(tmp_path) as plog:
        assert [r.payload for r in plog.read(0)] == [b"kept"]


def test_retention_drops_whole_expired_segments_and_keeps_the_active_one(tmp_path: Path) -> None:
    clock = FakeClock(0)
    options: dict[str, Any] = {
        "retention": timedelta(seconds=10),
        "segment_bytes": 1,
        "clock": clock,
    }
    with open_log(tmp_path, **options) as plog:
        for at in (0, 5_000, 12_000):  # one segment each: segment_bytes=1
            clock.now = at
            plog.append([(None, b"e")])
        last = plog.read(2)[0]

        assert plog.apply_retention() == 1
        assert (plog.begin_sequence_number, [r.sequence_number for r in plog.read(0)]) == (
            1,
            [1, 2],
        )
        assert plog.sequence_at_or_after_offset(0, inclusive=True) == 1
        assert plog.sequence_at_or_after_time(0, inclusive=True) == 1
        assert segments(tmp_path) == ["00000000000000000001.seg", "00000000000000000002.seg"]

        clock.now = 30_000
        assert plog.apply_retention() == 2
        assert plog.apply_retention() == 0
        state = (
            plog.is_empty,
            plog.begin_sequence_number,
            plog.next_sequence_number,
            plog.last_sequence_number,
            plog.last_offset,
            plog.last_enqueued_time_ms,
        )
        assert state == (True, 3, 3, 2, last.offset, 12_000)
        assert plog.read(0) == []
        assert plog.sequence_at_or_after_offset(0, inclusive=True) == 3
        assert plog.sequence_at_or_after_time(0, inclusive=True) == 3
        assert segments(tmp_path) == ["00000000000000000003.seg"]

    with open_log(tmp_path, **options) as plog:
        assert (plog.is_empty, plog.begin_sequence_number, plog.last_offset) == (
            True,
            3,
            last.offset,
        )
        assert plog.append([(None, b"new")])[0] == Record(
            3, last.offset + frame(None, b"e"), 30_000, None, b"new"
        )


def test_retention_keeps_a_segment_while_its_newest_event_is_young(tmp_path: Path) -> None:
    clock = FakeClock(0)
    with open_log(tmp_path, retention=timedelta(seconds=10), clock=clock) as plog:
        plog.append([(None, b"old")])
        clock.now = 9_000
        plog.append([(None, b"young")])
        clock.now = 15_000

        assert plog.apply_retention() == 0
        assert plog.begin_sequence_number == 0


def test_enqueued_time_never_goes_backwards(tmp_path: Path) -> None:
    clock = FakeClock(5_000)
    with open_log(tmp_path, clock=clock) as plog:
        plog.append([(None, b"a")])
        clock.now = 4_000

        assert plog.append([(None, b"b")])[0].enqueued_time_ms == 5_000


@pytest.fixture
def four_records(tmp_path: Path) -> PartitionLog:
    """Offsets 0, 56, 112, 168 in two segments; times 1000, 1000, 2000, 3000."""
    clock = FakeClock(1_000)
    plog = open_log(tmp_path, segment_bytes=HEADER_SIZE + 2 * frame(None, b"x" * 30), clock=clock)
    plog.append([(None, b"x" * 30), (None, b"x" * 30)])
    clock.now = 2_000
    plog.append([(None, b"x" * 30)])
    clock.now = 3_000
    plog.append([(None, b"x" * 30)])
    assert [r.offset for r in plog.read(0)] == [0, 56, 112, 168]
    assert len(segments(tmp_path)) == 2
    yield plog
    plog.close()


@pytest.mark.parametrize(
    ("offset", "inclusive", "expected"),
    [
        (-1, True, 0),
        (-1, False, 0),
        (0, True, 0),
        (0, False, 1),
        (56, True, 1),
        (56, False, 2),
        (57, True, 2),
        (111, False, 2),
        (112, True, 2),
        (112, False, 3),
        (168, True, 3),
        (168, False, 4),
        (10_000, True, 4),
    ],
)
def test_sequence_at_or_after_offset(
    four_records: PartitionLog, offset: int, inclusive: bool, expected: int
) -> None:
    assert four_records.sequence_at_or_after_offset(offset, inclusive=inclusive) == expected


@pytest.mark.parametrize(
    ("time_ms", "inclusive", "expected"),
    [
        (0, True, 0),
        (999, False, 0),
        (1_000, True, 0),
        (1_000, False, 2),
        (1_500, True, 2),
        (2_000, True, 2),
        (2_000, False, 3),
        (3_000, True, 3),
        (3_000, False, 4),
        (9_999, True, 4),
    ],
)
def test_sequence_at_or_after_time(
    four_records: PartitionLog, time_ms: int, inclusive: bool, expected: int
) -> None:
    assert four_records.sequence_at_or_after_time(time_ms, inclusive=inclusive) == expected


def test_lookups_near_the_end_of_100k_records_read_only_a_few_kib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(0)
    with open_log(tmp_path, clock=clock) as plog:
        for batch in range(100):
            clock.now = batch * 10
            plog.append([(None, b"%099d" % (batch * 1000 + i)) for i in range(1000)])
        size = (tmp_path / "00000000000000000000.seg").stat().st_size
        target = Record(99_990, 99_990 * frame(None, b"x" * 99), 990, None, b"%099d" % 99_990)
        real_pread, reads = os.pread, []

        me = threading.get_ident()

        def counting_pread(fd: int, n: int, at: int) -> bytes:
            data = real_pread(fd, n, at)
            if threading.get_ident() == me:  # other tests' servers may still be winding down
                reads.append(len(data))
            return data

        monkeypatch.setattr(os, "pread", counting_pread)
        assert plog.read(99_990, max_count=5)[0] == target
        assert plog.sequence_at_or_after_offset(target.offset, inclusive=True) == 99_990
        assert plog.sequence_at_or_after_offset(target.offset, inclusive=False) == 99_991
        assert plog.sequence_at_or_after_time(980, inclusive=False) == 99_000
        assert plog.sequence_at_or_after_time(500, inclusive=True) == 50_000
        monkeypatch.undo()

    assert size > 12_000_000
    assert len(reads) == 5
    assert sum(reads) < 5 * 8 * 1024  # each: about one 4 KiB index interval, not 12 MB


def test_concurrent_appenders_get_unique_contiguous_numbers(tmp_path: Path) -> None:
    results: dict[int, list[Record]] = {}
    barrier = threading.Barrier(4)

    with open_log(tmp_path, segment_bytes=2_000) as plog:

        def appender(worker: int) -> None:
            barrier.wait()
            mine = []
            for n in range(50):
                mine += plog.append(
                    [(f"w{worker}", b"%d-%d-a" % (worker, n)), (None, b"%d-%d-b" % (worker, n))]
                )
            results[worker] = mine

        threads = [threading.Thread(target=appender, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stored = plog.read(0, max_count=1_000, max_bytes=1 << 30)

    returned = sorted((r for rs in results.values() for r in rs), key=lambda r: r.sequence_number)
    assert [r.sequence_number for r in returned] == list(range(400))
    assert stored == returned
    for rs in results.values():  # each batch got two adjacent numbers
        assert all(
            b.sequence_number == a.sequence_number + 1
            for a, b in zip(rs[::2], rs[1::2], strict=True)
        )


def test_readers_never_see_a_partial_append(tmp_path: Path) -> None:
    total = 2_000
    with open_log(tmp_path, segment_bytes=4_096) as plog:

        def writer() -> None:
            for n in range(0, total, 4):
                plog.append([(None, b"%d" % (n + i)) for i in range(4)])

        thread = threading.Thread(target=writer)
        thread.start()
        seen = 0
        while seen < total:
            records = plog.read(0, max_count=total, max_bytes=1 << 30)
            assert [r.payload for r in records] == [b"%d" % i for i in range(len(records))]
            assert len(records) % 4 == 0
            seen = len(records)
            if seen < total:
                assert plog.wait_for(seen, timeout=5)
        thread.join()


def test_wait_for_wakes_on_append_and_on_close(tmp_path: Path) -> None:
    plog = open_log(tmp_path)
    answers: list[bool] = []
    waiting = threading.Event()

    def waiter(sequence: int) -> None:
        waiting.set()
        answers.append(plog.wait_for(sequence, timeout=30))

    first = threading.Thread(target=waiter, args=(0,))
    first.start()
    assert waiting.wait(5)
    plog.append([(None, b"x")])
    first.join(5)
    assert not first.is_alive()

    waiting.clear()
    second = threading.Thread(target=waiter, args=(5,))
    second.start()
    assert waiting.wait(5)
    plog.close()
    second.join(5)
    assert not second.is_alive()

    assert answers == [True, False]
    assert plog.wait_for(0, timeout=0) is True
    with pytest.raises(LogClosedError):
        plog.append([(None, b"late")])
    with pytest.raises(LogClosedError):
        plog.read(0)


def test_wait_for_times_out_without_an_event(tmp_path: Path) -> None:
    with open_log(tmp_path) as plog:
        assert plog.wait_for(0, timeout=0.01) is False


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    return calls


def test_fsync_always_syncs_every_append_before_returning(
    tmp_path: Path, fsyncs: list[int]
) -> None:
    with open_log(tmp_path, fsync="always") as plog:
        assert fsyncs  # the new segment file and its directory
        fsyncs.clear()
        for _ in range(3):
            plog.append([(None, b"x"), (None, b"y")])
        assert len(fsyncs) == 3
        fsyncs.clear()
    assert fsyncs == []  # nothing left to flush at close


def test_fsync_never_never_syncs(tmp_path: Path, fsyncs: list[int]) -> None:
    clock = FakeClock(0)
    with open_log(
        tmp_path, fsync="never", segment_bytes=1, retention=timedelta(seconds=1), clock=clock
    ) as plog:
        for _ in range(3):
            plog.append([(None, b"x")])  # each one rolls a segment
        clock.now = 5_000
        plog.apply_retention()
        plog.sync()
    assert fsyncs == []


def test_fsync_batch_syncs_once_a_second_and_at_close(tmp_path: Path, fsyncs: list[int]) -> None:
    clock = FakeClock(0)
    with open_log(tmp_path, fsync="batch", clock=clock) as plog:
        fsyncs.clear()
        plog.append([(None, b"a")])
        clock.now = 999
        plog.append([(None, b"b")])
        assert fsyncs == []
        clock.now = 1_000
        plog.append([(None, b"c")])
        assert len(fsyncs) == 1
        plog.append([(None, b"d")])
        assert len(fsyncs) == 1
    assert len(fsyncs) == 2


def test_a_segment_deleted_behind_the_logs_back_is_an_error(tmp_path: Path) -> None:
    with open_log(tmp_path, segment_bytes=1) as plog:
        plog.append([(None, b"a")])
        plog.append([(None, b"b")])
        (tmp_path / "00000000000000000000.seg").unlink()

        with pytest.raises(LogCorruptError, match="missing"):
            plog.read(0)


def test_partition_key_too_long_is_refused(tmp_path: Path) -> None:
    with open_log(tmp_path) as plog, pytest.raises(ValueError, match="partition key"):
        plog.append([("k" * 65_535, b"x")])


def test_invalid_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync"):
        PartitionLog(tmp_path, fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        PartitionLog(tmp_path, retention=timedelta(0))


# --- the store --------------------------------------------------------------------------------


def test_hub_store_opens_partitions_lazily_and_case_insensitively(tmp_path: Path) -> None:
    store = HubStore(tmp_path / "data", fsync="never")
    assert not (tmp_path / "data").exists()

    plog = store.partition("Readings", "3")
    assert store.partition("readings", "3") is plog
    plog.append([(None, b"x")])
    store.close()

    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "data").rglob("*")) == [
        "data/readings",
        "data/readings/3",
        "data/readings/3/00000000000000000000.seg",
        "data/readings/hub.json",
    ]
    with pytest.raises(LogClosedError):
        plog.read(0)
    with pytest.raises(LogClosedError):
        store.partition("readings", "0")


def test_hub_store_keeps_the_creation_time_across_restarts(tmp_path: Path) -> None:
    clock = FakeClock(1_111)
    store = HubStore(tmp_path, clock=clock)
    assert store.created_at_ms("readings") == 1_111
    store.close()

    clock.now = 2_222
    store = HubStore(tmp_path, clock=clock)
    assert store.created_at_ms("READINGS") == 1_111
    assert store.created_at_ms("predictions") == 2_222
    store.close()


def test_hub_store_rewrites_an_unreadable_creation_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "readings").mkdir()
    (tmp_path / "readings" / "hub.json").write_text("{", encoding="utf-8")
    store = HubStore(tmp_path, clock=FakeClock(7))

    with caplog.at_level(logging.WARNING):
        assert store.created_at_ms("readings") == 7
    assert "unreadable" in caplog.text
    store.close()


def test_hub_store_applies_retention_to_open_partitions(tmp_path: Path) -> None:
    clock = FakeClock(0)
    store = HubStore(tmp_path, fsync="never", retention=timedelta(seconds=1), clock=clock)
    store.partition("readings", "0").append([(None, b"x")])
    store.partition("readings", "1").append([(None, b"y"), (None, b"z")])
    clock.now = 10_000

    assert store.apply_retention() == 3
    assert store.partition("readings", "1").begin_sequence_number == 2
    store.close()


@pytest.mark.parametrize(
    ("hub", "partition"), [("../etc", "0"), ("readings", "../0"), ("readings", "01"), ("", "0")]
)
def test_hub_store_refuses_names_that_are_not_entity_names(
    tmp_path: Path, hub: str, partition: str
) -> None:
    store = HubStore(tmp_path)
    with pytest.raises(ValueError, match="not a valid"):
        store.partition(hub, partition)
    store.close()


# --- invariants -------------------------------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.lists(
            st.tuples(st.none() | st.text(max_size=4), st.binary(max_size=40)),
            min_size=1,
            max_size=4,
        ).map(lambda items: ("append", items)),
        st.just(("restart", None)),
    ),
    max_size=12,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=operations,
    segment_bytes=st.sampled_from([1, 120, 400, 1 << 20]),
    steps=st.lists(st.integers(0, 3), min_size=12, max_size=12),
)
def test_log_invariants_hold_across_appends_and_restarts(
    tmp_path_factory: pytest.TempPathFactory,
    ops: list[tuple[str, Any]],
    segment_bytes: int,
    steps: list[int],
) -> None:
    directory = tmp_path_factory.mktemp("log")
    clock = FakeClock(0)
    model: list[Record] = []
    appended: list[tuple[str | None, bytes]] = []
    plog = open_log(directory, segment_bytes=segment_bytes, clock=clock)
    try:
        for step, (op, items) in zip(steps, ops, strict=False):
            clock.now += step
            if op == "append":
                model += plog.append(items)
                appended += items
            else:
                plog.close()
                plog = open_log(directory, segment_bytes=segment_bytes, clock=clock)
            assert plog.read(0, max_count=1_000, max_bytes=1 << 30) == model
            assert [r.sequence_number for r in model] == list(range(len(model)))
            assert [(r.partition_key, r.payload) for r in model] == appended
            assert all(a.offset < b.offset for a, b in itertools.pairwise(model))
            assert plog.next_sequence_number == len(model)
            assert plog.last_offset == (model[-1].offset if model else -1)
            for r in model:
                t = r.enqueued_time_ms
                at_t = [m.sequence_number for m in model if m.enqueued_time_ms >= t]
                after_t = [m.sequence_number for m in model if m.enqueued_time_ms > t]
                assert plog.sequence_at_or_after_time(t, inclusive=True) == at_t[0]
                assert (
                    plog.sequence_at_or_after_time(t, inclusive=False) == [*after_t, len(model)][0]
                )
                assert (
                    plog.sequence_at_or_after_offset(r.offset, inclusive=True) == r.sequence_number
                )
                assert plog.read(r.sequence_number, max_count=1) == [r]
    finally:
        plog.close()
