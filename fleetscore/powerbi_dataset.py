"""Create the Power BI push dataset the score function streams to, or check the one that exists.

Power BI's `POST .../datasets` always makes a new dataset (its docs list 201/202 and no name
conflict), so running it twice would leave two datasets of one name and the app pointing at
one of them. Idempotence therefore comes from listing first: `ensure_dataset` looks the name up
with `GET .../datasets`, creates the dataset only when none has it, and otherwise compares the
tables (`GET .../datasets/{id}/tables`) with `shared.powerbi.DATASET_TABLES`, the schema of the
rows the sink pushes. A table whose columns differ can be brought in line with
`PUT .../tables/{name}` (`update=True`); a missing table cannot, because that call updates a
table and Power BI has no call that adds one to an existing push dataset.

REST reference: learn.microsoft.com/rest/api/power-bi/push-datasets (PostDatasetInGroup,
GetTablesInGroup, PutTableInGroup) and .../datasets/get-datasets-in-group.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from shared.errors import FleetscoreError
from shared.powerbi import DATASET_TABLES

__all__ = [
    "DEFAULT_NAME",
    "AmbiguousDatasetError",
    "DatasetOutcome",
    "Difference",
    "PowerBIApiError",
    "PowerBIClient",
    "Request",
    "compare_tables",
    "create_request",
    "dataset_definition",
    "describe_request",
    "ensure_dataset",
    "table_definition",
]

DEFAULT_NAME = "fleetscore"
RETENTION = "basicFIFO"

Tables = Mapping[str, Mapping[str, str]]
TokenSource = Callable[[], str]

# Power BI's samples write "string" and "bool"; what it answers may be cased either way.
_TYPE_ALIASES = {"bool": "boolean"}


class PowerBIApiError(FleetscoreError):
    """Power BI refused a call: the HTTP status, its error code and message, and what was tried."""

    def __init__(self, status: int, code: str, message: str, *, action: str) -> None:
        self.status, self.code, self.message, self.action = status, code, message, action
        super().__init__(f"{action}: {status} {code}: {message}".rstrip(": "))

    @property
    def auth(self) -> bool:
        """True when the token was missing, expired or lacks permission (401 or 403)."""
        return self.status in (401, 403)


class AmbiguousDatasetError(FleetscoreError):
    """Several datasets in the workspace carry the name, so none can be chosen safely."""


@dataclass(frozen=True, slots=True)
class Request:
    """One REST call as it would be sent (for `--dry-run` and for the record)."""

    method: str
    url: str
    body: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Difference:
    """One way an existing table departs from the expected schema."""

    table: str
    column: str | None
    expected: str | None  # dataType, or None when the column/table should not be there
    found: str | None  # dataType, or None when missing

    def __str__(self) -> str:
        if self.column is None:
            return f"table {self.table}: missing" if self.found is None else f"table {self.table}"
        where = f"{self.table}.{self.column}"
        if self.found is None:
            return f"{where}: missing (expected {self.expected})"
        if self.expected is None:
            return f"{where}: not pushed by fleetscore (found {self.found})"
        return f"{where}: dataType {self.found}, expected {self.expected}"


@dataclass(slots=True)
class DatasetOutcome:
    """What `ensure_dataset` found or did.

    `status` is one of: `would-create` (dry run), `created`, `matches`, `updated`, `differs`.
    """

    status: str
    name: str
    dataset_id: str | None = None
    workspace_id: str | None = None
    differences: list[Difference] = field(default_factory=list)
    updated_tables: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def table_definition(name: str, columns: Mapping[str, str]) -> dict[str, Any]:
    """One table as the REST API takes it: `{"name", "columns": [{"name", "dataType"}]}`."""
    return {"name": name, "columns": [{"name": c, "dataType": t} for c, t in columns.items()]}


def dataset_definition(name: str, tables: Tables = DATASET_TABLES) -> dict[str, Any]:
    """The PostDataset body for a push dataset holding `tables`."""
    return {
        "name": name,
        "defaultMode": "Push",
        "tables": [table_definition(t, cols) for t, cols in tables.items()],
    }


def _group(api_url: str, workspace_id: str | None) -> str:
    group = f"/groups/{quote(workspace_id, safe='')}" if workspace_id else ""
    return f"{api_url.rstrip('/')}/v1.0/myorg{group}"


def create_request(
    api_url: str, name: str, *, workspace_id: str | None = None, tables: Tables = DATASET_TABLES
) -> Request:
    """The POST that creates the dataset with `basicFIFO` retention."""
    url = f"{_group(api_url, workspace_id)}/datasets?defaultRetentionPolicy={RETENTION}"
    return Request("POST", url, dataset_definition(name, tables))


def _norm(data_type: str) -> str:
    lowered = data_type.lower()
    return _TYPE_ALIASES.get(lowered, lowered)


def compare_tables(expected: Tables, found: list[dict[str, Any]]) -> tuple[list[Difference], bool]:
    """Compare GetTables' `value` with the expected schema.

    Returns (differences, columns_listed). Type names compare case-insensitively (`bool` is
    Boolean). A table the dataset has but fleetscore does not push is no difference: reports
    may add their own. If the service lists tables without their columns, `columns_listed` is
    False and only table names were compared.
    """
    by_name = {t.get("name"): t for t in found if isinstance(t, dict)}
    differences: list[Difference] = []
    listed = True
    for table, columns in expected.items():
        have = by_name.get(table)
        if have is None:
            differences.append(Difference(table, None, "table", None))
            continue
        raw = have.get("columns")
        if raw is None:
            listed = False
            continue
        named = [c for c in raw if isinstance(c, dict) and "name" in c]
        actual = {str(c["name"]): str(c.get("dataType", "")) for c in named}
        for column, data_type in columns.items():
            if column not in actual:
                differences.append(Difference(table, column, data_type, None))
            elif _norm(actual[column]) != _norm(data_type):
                differences.append(Difference(table, column, data_type, actual[column]))
        for column, data_type in actual.items():
            if column not in columns:
                differences.append(Difference(table, column, None, data_type))
    return differences, listed


class PowerBIClient:
    """The four Power BI REST calls `ensure_dataset` needs, through one `requests.Session`.

    Args:
        api_url: the API root, e.g. https://api.powerbi.com (or the local dashboard).
        token: returns a bearer token; called per request so a credential can refresh it.
        workspace_id: the workspace (group) id; None is My workspace.
        session: the HTTP session (tests pass their own).
        timeout: seconds per request.
    """

    def __init__(
        self,
        api_url: str,
        token: TokenSource,
        *,
        workspace_id: str | None = None,
        session: requests.Session | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.api_url, self.workspace_id = api_url, workspace_id
        self._token, self._timeout = token, timeout
        self._session = session or requests.Session()
        self._base = _group(api_url, workspace_id)

    def close(self) -> None:
        """Release the HTTP connections."""
        self._session.close()

    def list_datasets(self) -> list[dict[str, Any]]:
        """GetDatasets(InGroup): every dataset of the workspace."""
        return list(self._call("GET", f"{self._base}/datasets", "list datasets").get("value", []))

    def list_tables(self, dataset_id: str) -> list[dict[str, Any]]:
        """GetTables(InGroup): the push dataset's tables."""
        url = f"{self._base}/datasets/{quote(dataset_id, safe='')}/tables"
        return list(self._call("GET", url, f"list tables of dataset {dataset_id}").get("value", []))

    def create_dataset(self, request: Request) -> dict[str, Any]:
        """PostDataset(InGroup): returns Power BI's answer (`id`, `name`, ...)."""
        return self._call(request.method, request.url, "create dataset", request.body)

    def put_table(self, dataset_id: str, name: str, columns: Mapping[str, str]) -> Request:
        """PutTable(InGroup): replace an existing table's columns; returns the request sent."""
        url = f"{self._base}/datasets/{quote(dataset_id, safe='')}/tables/{quote(name, safe='')}"
        request = Request("PUT", url, table_definition(name, columns))
        self._call("PUT", url, f"update table {name}", request.body)
        return request

    def _call(
        self, method: str, url: str, action: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        try:
            response = self._session.request(
                method, url, json=body, headers=headers, timeout=self._timeout
            )
        except requests.RequestException as exc:
            raise PowerBIApiError(0, type(exc).__name__, str(exc)[:300], action=action) from exc
        with response:
            if response.status_code >= 300:
                code, message = _error_of(response)
                raise PowerBIApiError(response.status_code, code, message, action=action)
            if not response.content:
                return {}
            try:
                doc = response.json()
            except ValueError as exc:
                raise PowerBIApiError(
                    response.status_code, "NotJson", "the answer is not JSON", action=action
                ) from exc
        return doc if isinstance(doc, dict) else {}


def _error_of(response: requests.Response) -> tuple[str, str]:
    """Power BI's `{"error": {"code", "message"}}`, else the reason phrase and a snippet."""
    try:
        error = response.json().get("error", {})
        return str(error.get("code") or response.reason), str(error.get("message") or "")
    except (ValueError, AttributeError):
        return str(response.reason or "error"), response.text[:200]


def ensure_dataset(
    client: PowerBIClient,
    name: str = DEFAULT_NAME,
    *,
    tables: Tables = DATASET_TABLES,
    update: bool = False,
) -> DatasetOutcome:
    """Create the dataset unless one of that name exists; else verify (and optionally fix) it.

    Raises:
        PowerBIApiError: a call was refused or failed.
        AmbiguousDatasetError: several datasets carry the name.
    """
    outcome = DatasetOutcome("matches", name, workspace_id=client.workspace_id)
    found = [d for d in client.list_datasets() if d.get("name") == name]
    if len(found) > 1:
        ids = ", ".join(str(d.get("id")) for d in found)
        raise AmbiguousDatasetError(
            f"{len(found)} datasets are named {name!r} ({ids}): the app can push to one only; "
            "delete the extras in Power BI, or pass another --name"
        )
    if not found:
        request = create_request(client.api_url, name, workspace_id=client.workspace_id)
        answer = client.create_dataset(request)
        outcome.status, outcome.dataset_id = "created", str(answer.get("id", ""))
        outcome.requests.append(request)
        return outcome
    dataset = found[0]
    outcome.dataset_id = str(dataset.get("id", ""))
    if dataset.get("addRowsAPIEnabled") is False:
        outcome.notes.append("this dataset is not a push dataset (addRowsAPIEnabled is false)")
        outcome.status = "differs"
    retention = dataset.get("defaultRetentionPolicy")
    if retention is not None and str(retention).lower() != RETENTION.lower():
        outcome.notes.append(
            f"retention is {retention!r}, not {RETENTION}: tables past 250,000 rows slow to "
            "120 POSTs an hour; recreate the dataset to change it"
        )
    differences, listed = compare_tables(tables, client.list_tables(outcome.dataset_id))
    if not listed:
        outcome.notes.append("Power BI listed the tables without columns: only names compared")
    outcome.differences = differences
    fixable = sorted({d.table for d in differences if d.column is not None})
    if update and fixable:
        for table in fixable:
            outcome.requests.append(client.put_table(outcome.dataset_id, table, tables[table]))
            outcome.updated_tables.append(table)
        outcome.differences = [d for d in differences if d.column is None]
    if outcome.differences or outcome.status == "differs":
        outcome.status = "differs"
    elif outcome.updated_tables:
        outcome.status = "updated"
    return outcome


def describe_request(request: Request) -> str:
    """`METHOD URL` and the pretty JSON body, for a dry run."""
    body = "" if request.body is None else "\n" + json.dumps(request.body, indent=2)
    return f"{request.method} {request.url}{body}"
