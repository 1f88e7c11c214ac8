"""Fixtures shared with other rooms: the dashboard's Power BI stand-in on a free port."""

from tests.dashboard.conftest import make_dashboard

__all__ = ["make_dashboard"]
