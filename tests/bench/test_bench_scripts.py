"""The bench scripts keep the `make bench` convention; the cheapest ones run on tiny sizes.

Every script has `measure(quick=False)` returning flat, named figures and a `main()` with
`--quick` and `--json FILE`; the figures here are only checked to be there and positive (a
benchmark's numbers are printed, never asserted).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ("eventhubs", "ingest", "model_scoring", "powerbi_sink", "ratios", "simulator_generate")


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_figures(figures: dict, module: ModuleType) -> None:
    assert figures, "no figures"
    assert set(figures) <= set(module.FIGURES), set(figures) - set(module.FIGURES)
    for key, value in figures.items():
        assert isinstance(value, int | float), (key, value)
        assert not isinstance(value, bool), (key, value)
        assert value > 0, (key, value)


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_has_measure_main_and_described_figures(name):
    module = load(name)
    quick = inspect.signature(module.measure).parameters["quick"]
    assert quick.default is False
    assert callable(module.main)
    for key, (unit, meaning) in module.FIGURES.items():
        assert key.isidentifier(), key
        assert key == key.lower(), key
        assert unit, key
        assert meaning, key


def test_simulator_generate_measures_a_tiny_fleet():
    module = load("simulator_generate")
    figures = module.measure(devices=2, days=0.05)
    assert set(figures) == set(module.FIGURES)
    assert figures["simulator_generate_readings"] == 2 * 432
    assert_figures(figures, module)


def test_simulator_generate_cli_prints_each_figure_then_one_json_line(tmp_path):
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            "bench/simulator_generate.py",
            *("--devices", "2", "--days", "0.05", "--json", str(out)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    *lines, last = done.stdout.strip().splitlines()
    figures = json.loads(last)
    assert json.loads(out.read_text()) == figures
    assert [line.split(" = ")[0] for line in lines] == list(figures)


@pytest.mark.stack
def test_eventhubs_measures_a_few_hundred_events():
    module = load("eventhubs")
    figures = module.measure(events=400, batch=100)
    assert set(figures) == set(module.FIGURES)
    assert_figures(figures, module)
