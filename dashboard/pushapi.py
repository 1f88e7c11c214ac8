"""The push-rows REST API of a Power BI push dataset, answering as Power BI does.

URL shapes (the same ones `shared.powerbi.PowerBISink` posts to):
  * `POST /v1.0/myorg[/groups/{ws}]/datasets/{id}/tables/{table}/rows`, `Authorization: Bearer
    <token>`, body `{"rows": [...]}`: 401 without a bearer token, 403 with a wrong one.
  * `POST /beta/{tenant}/datasets/{id}/rows?key=<key>`, body a bare JSON array: the push URL
    Power BI shows for a dataset; it writes the dataset's first table; 403 without the key.
  * `POST /v1.0/myorg[/groups/{ws}]/datasets[?defaultRetentionPolicy=basicFIFO]` creates a push
    dataset (`{"name", "tables": [{"name", "columns": [{"name", "dataType"}]}]}`), 201 with its
    new id. Like Power BI (whose docs list only 201/202, no conflict), a name already taken
    makes a second dataset of that name: callers that want one list first.
  * `GET /v1.0/myorg[/groups/{ws}]/datasets` and `.../datasets/{id}/tables` list what exists.
  * `PUT .../datasets/{id}/tables/{table}`, body `{"name", "columns": [...]}`: replaces an
    existing table's columns (200 `{"name"}`); 404 for a table the dataset lacks (the API
    updates tables, it does not add them), 400 for a bad definition or a name that differs.

Given a list of workspaces, a REST path naming another group is 404 `PowerBIEntityNotFound`.
Every answer is (status, headers, body); errors carry Power BI's `{"error": {...}}` document.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from shared.powerbi import DATASET_TABLES

from .limits import Limits, PushError, RateGate, parse_rows
from .store import Dataset, RowStore, StoredRow, dataset_id_for

__all__ = [
    "FLEET_TABLES",
    "PushApi",
    "Reply",
    "Route",
    "check_bearer",
    "check_key",
    "parse_route",
]

log = logging.getLogger(__name__)

Reply = tuple[int, dict[str, str], bytes]
RowsListener = Callable[[Dataset, str, Sequence[StoredRow]], None]

FLEET_TABLES: dict[str, dict[str, str]] = DATASET_TABLES
"""The two tables shared/powerbi.py pushes, with the columns of its rows (defined there)."""

_DATA_TYPES = {
    t.lower(): t for t in ("Int64", "Double", "Boolean", "DateTime", "String", "Decimal")
} | {"bool": "Boolean"}  # Power BI's own samples write "string" and "bool"
_RETENTIONS = {"None", "basicFIFO"}
_SEG = r"([^/]+)"
_ROUTES = (
    ("rows", re.compile(rf"/v1\.0/myorg(?:/groups/{_SEG})?/datasets/{_SEG}/tables/{_SEG}/rows")),
    ("table", re.compile(rf"/v1\.0/myorg(?:/groups/{_SEG})?/datasets/{_SEG}/tables/{_SEG}")),
    ("tables", re.compile(rf"/v1\.0/myorg(?:/groups/{_SEG})?/datasets/{_SEG}/tables")),
    ("datasets", re.compile(rf"/v1\.0/myorg(?:/groups/{_SEG})?/datasets")),
    ("push", re.compile(rf"/beta/{_SEG}/datasets/{_SEG}/rows")),
)


@dataclass(frozen=True, slots=True)
class Route:
    """What a request path addresses; `workspace` is "" for My workspace."""

    kind: str  # rows | table | tables | datasets | push
    workspace: str = ""
    dataset_id: str = ""
    table: str = ""


def parse_route(path: str) -> Route | None:
    """Match a request path (no query) against the API's URL shapes."""
    for kind, pattern in _ROUTES:
        match = pattern.fullmatch(path)
        if match is None:
            continue
        parts = [unquote(g) if g else "" for g in match.groups()]
        if kind == "push":
            return Route(kind, dataset_id=parts[1])
        return Route(kind, *parts)
    return None


def check_bearer(headers: Mapping[str, str], token: str) -> None:
    """Raise 401 without a bearer token, 403 with a wrong one (`headers` keys lower-case)."""
    auth = headers.get("authorization", "")
    if not auth.startswith("Bearer "):
        raise PushError(401, "PowerBINotAuthorizedException", "no bearer token")
    if not hmac.compare_digest(auth.encode(), f"Bearer {token}".encode()):
        raise PushError(403, "TokenExpired", "access token is not valid")


def check_key(query: str, key: str) -> None:
    """Raise 403 unless the push URL's `key` parameter is `key`."""
    given = parse_qs(query).get("key", [""])
    if len(given) != 1 or not hmac.compare_digest(given[0].encode(), key.encode()):
        raise PushError(403, "Unauthorized", "key is missing or wrong")


def _not_found(what: str) -> PushError:
    return PushError(404, "ItemNotFound", f"{what} not found")


class PushApi:
    """Answers the API's requests against a `RowStore`, one `RateGate` per dataset.

    Args:
        store: where datasets and rows live.
        token: the bearer token REST calls must carry.
        push_key: the `key` push URLs must carry.
        limits: Power BI's limits (tests tighten them).
        clock: monotonic seconds for rate limits.
        wall: epoch seconds stamped on stored rows.
        on_rows: called after rows are stored (the live page listens).
        workspaces: the workspace (group) ids that exist; a REST path naming another is 404
            `PowerBIEntityNotFound`, as Power BI answers an unknown group. None: any id.
    """

    def __init__(
        self,
        store: RowStore,
        *,
        token: str,
        push_key: str,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        on_rows: RowsListener | None = None,
        workspaces: Collection[str] | None = None,
    ) -> None:
        self.store, self.limits = store, limits or Limits()
        self.workspaces = None if workspaces is None else frozenset(workspaces)
        self._token, self._key = token, push_key
        self._clock, self._wall, self._on_rows = clock, wall, on_rows
        self._gates: dict[str, RateGate] = {}
        self._lock = threading.Lock()

    def ensure_dataset(
        self,
        name: str,
        tables: Mapping[str, Mapping[str, str]],
        *,
        workspace: str = "",
        retention: str = "basicFIFO",
    ) -> Dataset:
        """Create a dataset unless it exists (by workspace and name); return it."""
        tables_copy = {t: dict(cols) for t, cols in tables.items()}
        dataset = Dataset(dataset_id_for(workspace, name), workspace, name, retention, tables_copy)
        return self.store.upsert_dataset(dataset)[0]

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Answer one request; `target` is the path with its query, header keys any case."""
        parts = urlsplit(target)
        lowered = {k.lower(): v for k, v in headers.items()}
        route = parse_route(parts.path)
        try:
            if route is None:
                raise PushError(404, "NotFound", "unknown path")
            if route.kind == "push":
                check_key(parts.query, self._key)
            else:
                check_bearer(lowered, self._token)
                self._check_workspace(route.workspace)
            return self._dispatch(method, route, parts.query, body)
        except PushError as exc:
            return exc.reply()
        except Exception:  # a bug or a broken database: a transient 500, never a dropped socket
            log.exception("push API failed on %s %s", method, parts.path)
            return PushError(500, "InternalServerError", "the stand-in failed").reply()

    def _check_workspace(self, workspace: str) -> None:
        if workspace and self.workspaces is not None and workspace not in self.workspaces:
            raise PushError(404, "PowerBIEntityNotFound", f"workspace {workspace!r} not found")

    def _dispatch(self, method: str, route: Route, query: str, body: bytes) -> Reply:
        if route.kind == "datasets" and method == "GET":
            listed = [d.describe() for d in self.store.list_datasets(route.workspace)]
            return _json(200, {"value": listed})
        if route.kind == "datasets" and method == "POST":
            return self._create_dataset(route.workspace, query, body)
        if route.kind == "tables" and method == "GET":
            tables = self._dataset(route).describe()["tables"]
            return _json(200, {"value": tables})
        if route.kind == "table" and method == "PUT":
            return self._put_table(route, body)
        if route.kind in ("rows", "push") and method == "POST":
            return self._post_rows(route, body)
        raise PushError(405, "MethodNotAllowed", f"{method} is not supported here")

    def _dataset(self, route: Route) -> Dataset:
        dataset = self.store.get_dataset(route.dataset_id)
        # A push URL names a tenant, not a workspace; REST paths must name the dataset's own.
        if dataset is None or (route.kind != "push" and dataset.workspace != route.workspace):
            raise _not_found(f"dataset {route.dataset_id!r}")
        return dataset

    def _gate(self, dataset_id: str) -> RateGate:
        with self._lock:
            return self._gates.setdefault(dataset_id, RateGate(self.limits))

    def _post_rows(self, route: Route, body: bytes) -> Reply:
        dataset = self._dataset(route)
        table = route.table if route.kind == "rows" else next(iter(dataset.tables), "")
        if table not in dataset.tables:
            raise _not_found(f"table {table!r}")
        gate = self._gate(dataset.id)
        with gate.pending():
            now = self._clock()
            big = self.store.largest_table(dataset.id) >= self.limits.big_table_rows
            gate.admit_post(now, big_table=big)
            rows = parse_rows(body, bare=route.kind == "push", limits=self.limits)
            gate.admit_rows(now, len(rows))
            stored = self.store.add_rows(dataset, table, rows, self._wall())
        if self._on_rows is not None and stored:
            self._on_rows(dataset, table, stored)
        return 200, {}, b""

    def _create_dataset(self, workspace: str, query: str, body: bytes) -> Reply:
        retention = parse_qs(query).get("defaultRetentionPolicy", ["None"])[-1]
        if retention not in _RETENTIONS:
            raise PushError(400, "InvalidRequest", f"unknown retention policy {retention!r}")
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise PushError(400, "InvalidRequest", "body is not JSON") from exc
        name, tables = _dataset_definition(doc, self.limits)
        dataset = Dataset(str(uuid.uuid4()), workspace, name, retention, tables)
        stored, _ = self.store.upsert_dataset(dataset)
        return _json(201, {"id": stored.id, "name": name, "defaultRetentionPolicy": retention})

    def _put_table(self, route: Route, body: bytes) -> Reply:
        dataset = self._dataset(route)
        if route.table not in dataset.tables:
            raise _not_found(f"table {route.table!r}")
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise PushError(400, "InvalidRequest", "body is not JSON") from exc
        name, columns = _table_definition(doc, self.limits, set())
        if name != route.table:
            message = f"the body names table {name!r}, the URL {route.table!r}"
            raise PushError(400, "InvalidRequest", message)
        self.store.replace_table(dataset.id, name, columns)
        return _json(200, {"name": name})


def _dataset_definition(doc: object, limits: Limits) -> tuple[str, dict[str, dict[str, str]]]:
    """Validate a create-dataset body; return (name, table → column → dataType)."""

    def bad(message: str) -> PushError:
        return PushError(400, "InvalidRequest", message)

    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str) or not doc["name"]:
        raise bad("a dataset needs a name")
    raw_tables = doc.get("tables")
    if not isinstance(raw_tables, list) or not 0 < len(raw_tables) <= limits.tables_per_dataset:
        raise bad(f"a dataset needs 1 to {limits.tables_per_dataset} tables")
    tables: dict[str, dict[str, str]] = {}
    for table in raw_tables:
        name, columns = _table_definition(table, limits, set(tables))
        tables[name] = columns
    return doc["name"], tables


def _table_definition(table: object, limits: Limits, taken: set[str]) -> tuple[str, dict[str, str]]:
    """Validate one table of a dataset or PUT body; return (name, column → dataType)."""

    def bad(message: str) -> PushError:
        return PushError(400, "InvalidRequest", message)

    name = table.get("name") if isinstance(table, dict) else None
    columns = table.get("columns") if isinstance(table, dict) else None
    if not isinstance(name, str) or not name or name in taken:
        raise bad("every table needs a unique name")
    if not isinstance(columns, list) or not 0 < len(columns) <= limits.columns_per_table:
        raise bad(f"table {name!r} needs 1 to {limits.columns_per_table} columns")
    out: dict[str, str] = {}
    for column in columns:
        if not isinstance(column, dict) or not isinstance(column.get("name"), str):
            raise bad(f"table {name!r} has a column without a name")
        data_type = column.get("dataType")
        canonical = _DATA_TYPES.get(data_type.lower()) if isinstance(data_type, str) else None
        if canonical is None:
            raise bad(f"column {column['name']!r} has an unknown dataType {data_type!r}")
        if column["name"] in out:
            raise bad(f"table {name!r} has two columns named {column['name']!r}")
        out[column["name"]] = canonical
    return name, out


def _json(status: int, doc: Any) -> Reply:
    return status, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(doc).encode()
