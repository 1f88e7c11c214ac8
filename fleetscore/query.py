"""A client of the query function's HTTP API, with the function key.

`GET {api}/devices/{id}/predictions` and `GET {api}/anomalies?date=` answer one page and a
`continuation` token; `QueryClient` follows the tokens until `limit` items are read, so a
caller asks for "the first 500" without paging by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import requests

__all__ = ["PAGE_LIMIT", "QueryClient", "QueryError"]

PAGE_LIMIT = 1000  # the query function's largest page


class QueryError(Exception):
    """The query function refused the request or could not be reached; says which and why."""


class QueryClient:
    """Reads predictions and anomalies from the query function."""

    def __init__(
        self,
        api_url: str,
        key: str,
        *,
        timeout: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        """`api_url` is the functions root, e.g. `http://127.0.0.1:7071/api`."""
        self.api_url = api_url.rstrip("/")
        self._headers = {"x-functions-key": key}
        self._timeout = timeout
        self._session = session or requests.Session()

    def list_predictions(
        self,
        device_id: str,
        *,
        start: str | None = None,
        end: str | None = None,
        anomalies_only: bool = False,
        newest_first: bool = False,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Up to `limit` predictions of one device with `start <= timestamp < end`."""
        params: dict[str, str] = {"order": "desc" if newest_first else "asc"}
        if start:
            params["from"] = start
        if end:
            params["to"] = end
        if anomalies_only:
            params["anomalies_only"] = "true"
        path = f"/devices/{quote(device_id, safe='')}/predictions"
        return list(self._items(path, params, limit))

    def list_anomalies(self, day: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """Up to `limit` anomalies of one UTC day (`YYYY-MM-DD`)."""
        return list(self._items("/anomalies", {"date": day}, limit))

    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    def _items(self, path: str, params: dict[str, str], limit: int) -> Iterator[dict[str, Any]]:
        left, token = limit, None
        while left > 0:
            page = {**params, "limit": str(min(left, PAGE_LIMIT))}
            if token:
                page["continuation"] = token
            body = self._get(path, page)
            items = body.get("items", [])
            yield from items[:left]
            left -= len(items)
            token = body.get("continuation")
            if not token or not items:
                return

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        url = self.api_url + path
        try:
            response = self._session.get(
                url, params=params, headers=self._headers, timeout=self._timeout
            )
        except requests.RequestException as exc:
            raise QueryError(f"cannot reach {url}: {type(exc).__name__}") from exc
        if response.status_code == 200:
            return dict(response.json())
        if response.status_code == 401:
            raise QueryError(f"{url}: 401, the function key was refused")
        try:
            detail = response.json()
        except ValueError:
            detail = response.text[:500]
        raise QueryError(f"{url}: HTTP {response.status_code}: {detail}")
