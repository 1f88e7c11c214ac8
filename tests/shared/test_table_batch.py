"""The lean `$batch` writer against the SDK it replaces: same bytes, same rows, same errors."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.data.tables import (
    EdmType,
    TableClient,
    TableServiceClient,
    TableTransactionError,
    UpdateMode,
)

from shared._entities import _letter_entity, _prediction_entity, _state_entity
from shared.deadletters import DeadLetter
from shared.errors import PermanentError, TransientError
from shared.predictions import Prediction
from shared.store import TableStore, _mapped
from shared.table_batch import (
    Guarded,
    _all_succeeded,
    _sdk_operations,
    encode_upserts,
    upsert_transaction,
    write_transaction,
)
from tests.support.azurite import connection_string
from tests.support.http_server import QuietHandler, serving

T0 = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
# Nothing listens on port 9: requests are captured before they would leave the process.
NOWHERE = connection_string(9)


def prediction(device: str, i: int, **extra: Any) -> Prediction:
    return Prediction(
        device_id=device,
        timestamp=T0 + timedelta(seconds=i),
        anomaly_score=1.0,  # a whole-number double must stay a double
        is_anomaly=i % 2 == 0,
        top_metric="température ✓",
        failure_probability=0.125,
        maintenance_due=False,
        model_version="m-1",
        metrics={"rpm": 50.0, "temperature_c": 60.5, "naïve": -1e-300},
        extra=extra,
    )


EXTRAS = {
    "small": 7,
    "negative": -(2**31),
    "wide": 2**40,  # Edm.Int64
    "widest": -(2**63),
    "huge": 2**70,  # beyond int64: a double
    "ratio": 3.0,
    "flag": True,
    "note": "quote ' and \" and \\ and 😀 and \u2028",
    "absent": None,
}


def every_kind_of_entity(partition_key: str) -> list[dict[str, Any]]:
    """What the store writes (predictions, dead letters, states), all under one PartitionKey."""
    letter = DeadLetter(
        payload="é" * 70_000,  # chunked into payload_0..payload_2
        reason="undecodable",
        source="event",
        occurred_at=T0,
        partition="3",
        offset="4096",
        sequence_number=2**35,
        device_id="d'1",
    )
    state = _state_entity("d'1", {"window": ["ü" * 40_000]}, "m-1", T0)
    return [
        _prediction_entity(prediction("d'1", 0, **EXTRAS), partition_key, "20261127T070000.000Z"),
        _prediction_entity(prediction("d'1", 1), partition_key, "20261127T070001.000Z_d'1"),
        {**_letter_entity(letter), "PartitionKey": partition_key},
        {**state, "PartitionKey": partition_key, "RowKey": "state ü+&=%;,'()"},
        {
            "PartitionKey": partition_key,
            "RowKey": "odd values",
            "nan": math.nan,
            "inf": math.inf,
            "ninf": -math.inf,
            "zero": -0.0,
            "typed": (5, EdmType.INT64),
            "typed_text": (6, "Edm.Int64"),
            "typed_none": (None, EdmType.INT64),
            "when": datetime(2026, 11, 27, 7, 0, 1, 500, tzinfo=UTC),
            "guid": uuid.UUID(int=7),
            "raw": b"\x00\xff",
            "double_typed": (2.5, EdmType.DOUBLE),
            "int32_typed": (3, EdmType.INT32),
        },
    ]


class _Captured(Exception):
    pass


def captured_request(send) -> tuple[dict[str, str], bytes]:
    """Run `send(client)` against a client that captures its first request instead of sending."""
    seen = {}

    def hook(request) -> None:
        seen["request"] = request.http_request
        raise _Captured

    client = TableClient.from_connection_string(NOWHERE, "Predictions", raw_request_hook=hook)
    with client, pytest.raises(_Captured):
        send(client)
    request = seen["request"]
    return dict(request.headers), bytes(request.content)


_VARIES = re.compile(rb"(batch|changeset)_[0-9a-f-]{36}|(?<=[Dd]ate: )[^\r]*")
_PER_REQUEST = {"x-ms-date", "Date", "x-ms-client-request-id", "Authorization", "Content-Type"}


def normalised(headers: dict[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
    kept = {k: v for k, v in headers.items() if k not in _PER_REQUEST}
    kept["Content-Type"] = _VARIES.sub(rb"\1_X", headers["Content-Type"].encode()).decode()
    return kept, _VARIES.sub(rb"\1_X", body)


def sdk_body(entities) -> tuple[dict[str, str], bytes]:
    return captured_request(
        lambda client: client.submit_transaction(
            [("upsert", e, {"mode": UpdateMode.REPLACE}) for e in entities]
        )
    )


def lean_body(entities) -> tuple[dict[str, str], bytes]:
    return captured_request(lambda client: upsert_transaction(client, entities))


# --- the body ------------------------------------------------------------------------------


@pytest.mark.parametrize("partition_key", ["d'1", "device 7 é+&=", "plain"])
def test_upsert_transaction_sends_the_sdks_bytes(partition_key):
    entities = every_kind_of_entity(partition_key)
    sdk = normalised(*sdk_body(entities))
    lean = normalised(*lean_body(entities))
    assert lean == sdk
    assert sdk[1].count(b"\r\nPUT ") == len(entities)


def test_upsert_transaction_sends_the_sdks_bytes_for_100_predictions():
    entities = [
        _prediction_entity(prediction("d", i, wide=2**40 + i), "d", f"20261127T0700{i:02d}.000Z")
        for i in range(100)
    ]
    assert normalised(*lean_body(entities)) == normalised(*sdk_body(entities))


@pytest.mark.parametrize(
    "odd",
    [
        {"a": "x", "a@odata.type": "Edm.Int32"},  # a name that collides with an annotation
        {"naïve": 1.5, "x\ty": "tab"},  # names that JSON must escape
        {"n": 2**31 - 1, "m": -(2**31), "typed": (0, EdmType.INT64), "t": True},
    ],
    ids=["annotation-name", "escaped-names", "int-edges"],
)
def test_upsert_transaction_sends_the_sdks_bytes_for_odd_properties(odd):
    entities = [{"PartitionKey": "p", "RowKey": "1", **odd}, {"PartitionKey": "p", "RowKey": "2"}]
    assert normalised(*lean_body(entities)) == normalised(*sdk_body(entities))


class _Token:
    """A TokenCredential that hands out one fixed token."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("token-for-tests", 4_102_444_800)


def test_upsert_transaction_authenticates_through_the_clients_pipeline():
    seen = {}

    def hook(request) -> None:
        seen["request"] = request.http_request
        raise _Captured

    key_client = TableClient.from_connection_string(NOWHERE, "T", raw_request_hook=hook)
    token_client = TableClient(
        "https://127.0.0.1:9", "T", credential=_Token(), raw_request_hook=hook
    )
    signed = []
    for client in (key_client, token_client):
        with client, pytest.raises(_Captured):
            upsert_transaction(client, [{"PartitionKey": "a", "RowKey": "1"}])
        signed.append(seen["request"].headers["Authorization"].split(" ")[0])
        assert seen["request"].url == f"{client.scheme}://{client._primary_hostname}/$batch"
    assert signed == ["SharedKey", "Bearer"]


def test_encode_upserts_is_deterministic_given_ids_and_date():
    entity = {"PartitionKey": "a", "RowKey": "1", "v": 1.5, "s": "é", "n": None}
    content_type, body = encode_upserts(
        [entity],
        table_url="http://h/acct/T",
        version="2019-02-02",
        date="Fri, 27 Nov 2026 07:00:00 GMT",
        batch_id="B",
        changeset_id="C",
    )
    text = (
        '{"PartitionKey": "a", "PartitionKey@odata.type": "Edm.String", "RowKey": "1",'
        ' "RowKey@odata.type": "Edm.String", "v": 1.5, "v@odata.type": "Edm.Double",'
        ' "s": "\\u00e9", "s@odata.type": "Edm.String"}'
    )
    assert content_type == "multipart/mixed; boundary=batch_B"
    assert body.decode() == (
        "--batch_B\r\n"
        "Content-Type: multipart/mixed; boundary=changeset_C\r\n"
        "\r\n"
        "--changeset_C\r\n"
        "Content-Type: application/http\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        "Content-ID: 0\r\n"
        "\r\n"
        "PUT http://h/acct/T(PartitionKey='a',RowKey='1') HTTP/1.1\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(text)}\r\n"
        "x-ms-version: 2019-02-02\r\n"
        "DataServiceVersion: 3.0\r\n"
        "Accept: application/json\r\n"
        "x-ms-date: Fri, 27 Nov 2026 07:00:00 GMT\r\n"
        "Date: Fri, 27 Nov 2026 07:00:00 GMT\r\n"
        "\r\n"
        f"{text}\r\n"
        "--changeset_C--\r\n"
        "\r\n"
        "--batch_B--\r\n"
    )


@pytest.mark.parametrize(
    "entities",
    [
        [{"PartitionKey": "a", "RowKey": "1"}, {"PartitionKey": "b", "RowKey": "2"}],
        [{"PartitionKey": "a"}],
        [{"PartitionKey": "a", "RowKey": 1}],
        [{"PartitionKey": "a", "RowKey": "1", "v": [1]}],
        [{"PartitionKey": "a", "RowKey": "1", "v": 2**31}],
        [{"PartitionKey": "a", "RowKey": "1", "v": (2**63, EdmType.INT64)}],
    ],
    ids=["two-partitions", "no-row-key", "int-key", "list", "int32-overflow", "int64-overflow"],
)
def test_upsert_transaction_refuses_what_the_sdk_refuses_with_its_error(entities):
    with pytest.raises((ValueError, TypeError)) as sdk:
        sdk_body(entities)
    with pytest.raises((ValueError, TypeError)) as lean:
        lean_body(entities)
    # submit_transaction wraps a TypeError in one about the shape of `operations`: the lean
    # path raises the SDK's inner error itself, which says what is wrong.
    reason = sdk.value.__cause__ if isinstance(sdk.value, TypeError) else sdk.value
    assert (type(lean.value), str(lean.value)) == (type(sdk.value), str(reason))


def test_all_succeeded_needs_one_2xx_status_line_per_operation():
    ok = b"--cs\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 No Content\r\nETag: x\r\n\r\n"
    bad = b"--cs\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 400 Bad Request\r\n\r\n{}\r\n"
    assert _all_succeeded(ok * 3, 3)
    assert not _all_succeeded(ok * 2, 3)
    assert not _all_succeeded(ok * 2 + bad, 3)
    assert not _all_succeeded(bad, 1)
    assert not _all_succeeded(b"", 1)


ETAG = "W/\"datetime'2026-11-27T20%3A56%3A27.6754617Z'\""


@pytest.mark.parametrize("etag", [None, ETAG], ids=["create", "if-match"])
@pytest.mark.parametrize("upserts", [0, 1, 99])
def test_write_transaction_sends_the_sdks_bytes_for_a_guarded_state(etag, upserts):
    entities = [
        _prediction_entity(prediction("d é'", i), "d é'", f"2026{i:04d}") for i in range(upserts)
    ]
    guarded = Guarded(_state_entity("d é'", {"seen": 3, "name": "ü"}, "m-1", T0), etag)
    sdk = captured_request(lambda c: c.submit_transaction(_sdk_operations(entities, guarded)))
    lean = captured_request(lambda c: write_transaction(c, entities, guarded))
    assert normalised(*lean) == normalised(*sdk)
    assert (b"If-Match: " + ETAG.encode() in lean[1]) is (etag is not None)


def test_write_transaction_refuses_an_etag_that_would_break_the_body():
    guarded = Guarded({"PartitionKey": "a", "RowKey": "state"}, 'W/"x"\r\nX-Evil: 1')
    with pytest.raises(ValueError, match="line break"):
        captured_request(lambda c: write_transaction(c, [], guarded))


# --- against Azurite -----------------------------------------------------------------------


@pytest.fixture
def two_tables(azurite_tables: str) -> Iterator[tuple[TableClient, TableClient]]:
    """Two fresh tables on Azurite: one written by the lean path, one by the SDK."""
    names = [f"t{uuid.uuid4().hex[:12]}{side}" for side in ("lean", "sdk")]
    with TableServiceClient.from_connection_string(azurite_tables) as service:
        clients = tuple(service.create_table(name) for name in names)
        try:
            yield clients
        finally:
            for name in names:
                service.delete_table(name)


def stored(client: TableClient) -> list[list[tuple[str, str, str]]]:
    """Every row as (name, type, repr) triples: values and types, NaN included."""
    return [
        [(name, type(value).__name__, repr(value)) for name, value in sorted(row.items())]
        for row in client.list_entities()
    ]


@pytest.mark.azurite
def test_upsert_transaction_rows_read_back_as_the_sdks_do(two_tables):
    lean, sdk = two_tables
    entities = every_kind_of_entity("d'1 é")
    upsert_transaction(lean, entities)
    sdk.submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}) for e in entities])
    rows = stored(lean)
    assert rows == stored(sdk)
    assert len(rows) == len(entities)
    first = dict(lean.get_entity("d'1 é", "20261127T070000.000Z"))
    assert (first["anomaly_score"], type(first["anomaly_score"])) == (1.0, float)
    assert first["wide"] == (2**40, EdmType.INT64)
    assert first["huge"] == float(2**70)
    assert first["note"] == EXTRAS["note"]
    letter = dict(lean.get_entity("d'1 é", every_kind_of_entity("x")[2]["RowKey"]))
    assert "".join(letter[f"payload_{i}"] for i in range(3)) == "é" * 70_000


@pytest.mark.azurite
def test_upsert_transaction_replaces_whole_rows(two_tables):
    lean, _ = two_tables
    upsert_transaction(lean, [{"PartitionKey": "a", "RowKey": "1", "old": 1}])
    upsert_transaction(
        lean, [{"PartitionKey": "a", "RowKey": "1", "new": 2}, {"PartitionKey": "a", "RowKey": "2"}]
    )
    assert [dict(row) for row in lean.list_entities()] == [
        {"PartitionKey": "a", "RowKey": "1", "new": 2},
        {"PartitionKey": "a", "RowKey": "2"},
    ]


def refused_batch() -> list[Prediction]:
    oversized = {f"note{i}": "x" * 32_000 for i in range(40)}  # over 1 MiB as the service counts
    return [
        prediction("a", 0),
        prediction("a", 1, **oversized),
        prediction("a", 2),
    ]


@pytest.mark.azurite
def test_table_store_refused_row_raises_the_permanent_error_it_raised_before(table_store):
    batch = refused_batch()
    with pytest.raises(PermanentError) as lean:
        table_store.upsert_predictions(batch)
    table = table_store.table_name("Predictions")
    entities = [_prediction_entity(p, "a", f"20261127T07000{i}.000Z") for i, p in enumerate(batch)]
    with pytest.raises(PermanentError) as before, _mapped(f"write 3 rows to {table}"):
        table_store._client(table).submit_transaction(
            [("upsert", e, {"mode": UpdateMode.REPLACE}) for e in entities]
        )
    assert (str(lean.value), lean.value.status) == (str(before.value), before.value.status)
    assert lean.value.status == 400
    assert isinstance(lean.value.__cause__, HttpResponseError)
    assert type(lean.value.__cause__) is type(before.value.__cause__)
    assert table_store.list_predictions("a", start=T0, end=T0 + timedelta(days=1)).items == []


# --- a stand-in that answers what Azurite will not ------------------------------------------

_BATCH_OK_PART = (
    "--changesetresponse_c\r\n"
    "Content-Type: application/http\r\n"
    "Content-Transfer-Encoding: binary\r\n"
    "\r\n"
    "HTTP/1.1 204 No Content\r\n"
    "DataServiceVersion: 3.0;\r\n"
    "ETag: W/\"datetime'2026-11-27T07%3A00%3A00.000Z'\"\r\n"
    "\r\n"
)
_BATCH_FAILED_PART = (
    "--changesetresponse_c\r\n"
    "Content-Type: application/http\r\n"
    "Content-Transfer-Encoding: binary\r\n"
    "\r\n"
    "HTTP/1.1 500 Internal Server Error\r\n"
    "Content-ID: 1\r\n"
    "DataServiceVersion: 3.0;\r\n"
    "Content-Type: application/json;odata=minimalmetadata;charset=utf-8\r\n"
    "\r\n"
    '{"odata.error":{"code":"InternalError","message":{"lang":"en-US","value":"1:boom"}}}\r\n'
)


def batch_response(*parts: str) -> tuple[int, dict[str, str], bytes]:
    body = (
        "--batchresponse_b\r\n"
        "Content-Type: multipart/mixed; boundary=changesetresponse_c\r\n"
        "\r\n" + "".join(parts) + "--changesetresponse_c--\r\n--batchresponse_b--\r\n"
    )
    return 202, {"Content-Type": "multipart/mixed; boundary=batchresponse_b"}, body.encode()


class _StandIn(QuietHandler):
    """Answers `$batch` with `batch`, creates tables with 204, and counts the batches."""

    batch: ClassVar[tuple[int, dict[str, str], bytes]] = (503, {}, b"")
    batches: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.endswith("/$batch"):
            type(self).batches.append(body)
            status, headers, answer = self.batch
        else:
            status, headers, answer = 204, {}, b""
        self.reply(status, answer, headers, content_type=None)


@pytest.fixture
def standin() -> Iterator[type[_StandIn]]:
    handler = type("Handler", (_StandIn,), {"batches": []})
    with serving(handler) as port:
        handler.port = port
        yield handler


def standin_store(standin: type[_StandIn]) -> TableStore:
    return TableStore.from_connection_string(connection_string(standin.port), retry_total=0)


def test_table_store_batch_success_is_one_request(standin):
    standin.batch = batch_response(_BATCH_OK_PART, _BATCH_OK_PART)
    with standin_store(standin) as store:
        store.upsert_predictions([prediction("a", 0), prediction("a", 1)])
    assert len(standin.batches) == 1
    assert standin.batches[0].count(b"\r\nPUT ") == 2


def test_table_store_batch_503_is_a_transient_error_with_retry_after(standin):
    standin.batch = (
        503,
        {"Retry-After": "7", "Content-Type": "application/json"},
        b'{"odata.error":{"code":"ServerBusy","message":{"value":"busy"}}}',
    )
    with standin_store(standin) as store, pytest.raises(TransientError) as caught:
        store.upsert_predictions([prediction("a", 0), prediction("a", 1)])
    assert caught.value.retry_after == 7.0
    assert isinstance(caught.value.__cause__, HttpResponseError)
    assert caught.value.__cause__.status_code == 503
    assert len(standin.batches) == 2  # the lean attempt, then the SDK's for its error


def test_table_store_batch_part_500_is_a_transient_error(standin):
    standin.batch = batch_response(_BATCH_FAILED_PART)
    with standin_store(standin) as store, pytest.raises(TransientError) as caught:
        store.upsert_predictions([prediction("a", 0), prediction("a", 1)])
    assert str(caught.value).startswith("table storage answered 500 InternalError")
    assert len(standin.batches) == 2


def test_table_store_batch_with_a_missing_part_is_resent_through_the_sdk(standin):
    standin.batch = batch_response(_BATCH_OK_PART)  # one answer for two operations
    with standin_store(standin) as store:
        store.upsert_predictions([prediction("a", 0), prediction("a", 1)])
    assert len(standin.batches) == 2


@pytest.mark.azurite
def test_write_transaction_guards_the_state_row_and_returns_its_new_etag(two_tables):
    client, _ = two_tables
    state = {"PartitionKey": "a", "RowKey": "state", "s": "one"}
    tag = write_transaction(client, [{"PartitionKey": "a", "RowKey": "1"}], Guarded(state, None))
    assert tag == client.get_entity("a", "state").metadata["etag"]
    with pytest.raises(TableTransactionError) as exists:
        write_transaction(client, [{"PartitionKey": "a", "RowKey": "2"}], Guarded(state, None))
    assert exists.value.error_code == "EntityAlreadyExists"
    newer = write_transaction(
        client, [{"PartitionKey": "a", "RowKey": "3"}], Guarded({**state, "s": "two"}, tag)
    )
    assert newer not in (None, tag)
    with pytest.raises(TableTransactionError) as stale:
        write_transaction(
            client, [{"PartitionKey": "a", "RowKey": "4"}], Guarded({**state, "s": "old"}, tag)
        )
    assert stale.value.error_code == "UpdateConditionNotSatisfied"
    rows = {row["RowKey"]: row.get("s") for row in client.list_entities()}
    assert rows == {"1": None, "3": None, "state": "two"}  # 2 and 4 fell with their guard
