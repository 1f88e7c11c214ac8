"""`make bench`'s runner: merged figures, derived ratios, RESULTS.md and the plot."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run_all", ROOT / "bench" / "run_all.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_run_merges_figures_records_the_source_and_a_failure(monkeypatch):
    run_all = _runner()

    class Good:
        FIGURES: ClassVar[dict] = {"a_per_s": ("1/s", "something")}

        @staticmethod
        def measure(quick: bool) -> dict:
            return {"a_per_s": 3.0 if quick else 4.0}

    class Broken:
        @staticmethod
        def measure(quick: bool) -> dict:
            raise RuntimeError("no Azurite")

    monkeypatch.setattr(run_all, "_load", lambda name: Good if name == "good" else Broken)
    results = run_all.run(["good", "broken"], quick=True)
    assert results["a_per_s"] == 3.0
    meta = results["_meta"]
    assert meta["source"]["a_per_s"] == "good"
    assert meta["units"]["a_per_s"] == ["1/s", "something"]
    assert meta["failed"] == {"broken": "RuntimeError: no Azurite"}
    assert meta["quick"] is True
    assert meta["machine"]["cores"] >= 1


def test_the_storage_ratio_is_derived_from_two_scripts_of_the_same_run(monkeypatch):
    run_all = _runner()

    class E2e:
        @staticmethod
        def measure(quick: bool) -> dict:
            return {
                "e2e_sustained_readings_per_s": 2000.0,
                "e2e_storage_ceiling_entities_per_s": 2500.0,
            }

    class Tables:
        @staticmethod
        def measure(quick: bool) -> dict:
            return {"storage_ceiling_entities_per_s": 5000.0}

    monkeypatch.setattr(run_all, "_load", lambda name: E2e if name == "e2e" else Tables)
    results = run_all.run(["e2e", "table_writes"], quick=False)
    assert results["e2e_vs_storage_ceiling"] == 0.8  # the e2e run's own Azurite and table
    assert results["_meta"]["source"]["e2e_vs_storage_ceiling"] == "e2e"
    assert results["e2e_vs_fresh_table_ceiling"] == 0.4  # against table_writes' fresh table
    assert results["_meta"]["source"]["e2e_vs_fresh_table_ceiling"] == "e2e / table_writes"


def test_markdown_lists_acceptance_stages_and_every_figure_with_its_command(tmp_path):
    run_all = _runner()
    stages = [
        {
            "offered_per_s": 500.0,
            "accepted_per_s": 499.0,
            "sustained": True,
            "p50_s": 1.5,
            "p99_s": 3.0,
            "backlog_growth_per_s": 1.0,
            "cpu_per_s": {"azurite": 0.3},
        },
        {
            "offered_per_s": 1000.0,
            "accepted_per_s": 990.0,
            "sustained": False,
            "p50_s": 4.0,
            "p99_s": 9.0,
            "backlog_growth_per_s": 300.0,
            "cpu_per_s": {"azurite": 0.9},
        },
    ]
    results = {
        "microbatch_vs_per_reading_ratio": 160.0,
        "table_write_cpu_us_per_prediction": 48.0,
        "e2e_sustained_readings_per_s": 499.0,
        "e2e_stages": stages,
        "e2e_bottleneck": "azurite",
        "_meta": {
            "machine": {"cpu": "x", "cores": 2, "memory_gb": 24, "os": "linux", "python": "3.11"},
            "commit": "abc1234",
            "date": "2026-11-27T15:00:00+00:00",
            "quick": False,
            "total_seconds": 600.0,
            "seconds": {"ratios": 50.0},
            "failed": {},
            "source": {
                "microbatch_vs_per_reading_ratio": "ratios",
                "table_write_cpu_us_per_prediction": "table_writes",
                "e2e_sustained_readings_per_s": "e2e",
            },
            "units": {},
        },
    }
    assert run_all.write_plot(results, tmp_path / "e2e_latency.png")
    assert (tmp_path / "e2e_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run_all.write_markdown(results, tmp_path / "RESULTS.md", plot=True)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| 160.0 | >= 150 | met |" in text
    assert "| 48.0 | <= 100 | met |" in text
    assert "`e2e_vs_storage_ceiling`) | None | >= 0.7 | not measured |" in text
    assert "**azurite**" in text
    assert "| 1000 | 990.0 | no |" in text
    assert "`.venv/bin/python bench/ratios.py`" in text
    assert "![latency against offered load](e2e_latency.png)" in text
    json.dumps(results)  # what results.json holds is plain JSON


def test_each_script_is_measured_in_a_process_of_its_own(monkeypatch, tmp_path):
    run_all = _runner()
    (tmp_path / "apart.py").write_text(
        "import os\n"
        "FIGURES = {'pid': ('pid', 'the measuring process')}\n"
        "def measure(quick):\n"
        "    return {'pid': os.getpid(), 'quick': quick}\n"
    )
    (tmp_path / "broken.py").write_text("def measure(quick):\n    raise SystemExit(3)\n")
    monkeypatch.setattr(run_all, "BENCH", tmp_path)
    script = run_all._load("apart")
    assert script.FIGURES == {"pid": ("pid", "the measuring process")}
    got = script.measure(quick=True)
    assert got["quick"] is True
    assert got["pid"] != os.getpid()
    with pytest.raises(RuntimeError, match=r"bench/broken\.py exited with 3"):
        run_all._load("broken").measure(quick=False)
