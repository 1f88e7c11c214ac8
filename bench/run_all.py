"""`make bench` / `make bench-quick`: every benchmark in one run, into results.json and RESULTS.md.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...]

Runs each script's `measure(quick)` in turn, each in a process of its own (it starts and stops
what it needs; and one script's leftovers, a heap of a million objects for the cyclic garbage
collector to walk or a thread pool still polling, do not slow the next one down), merges their
figures into `bench/results.json` (flat keys, plus `_meta`: machine, commit, date, seconds per
script, the command of each figure), derives the ratios of one figure to another from the same
run (`e2e_vs_storage_ceiling`, `e2e_vs_fresh_table_ceiling`), and writes `bench/RESULTS.md` with
every figure, the command that produced it, the acceptance checks and a plot of latency against
offered load (`bench/e2e_latency.png`). Figures are measured, never typed in: a script that
fails is reported as failed, and its keys are absent.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SCRIPTS = [
    "simulator_generate",
    "eventhubs",
    "publisher",
    "ingest",
    "model_scoring",
    "ratios",
    "table_writes",
    "powerbi_sink",
    "e2e",
]
# What the issue accepts, checked on every run (key, comparison, bound, words).
ACCEPTANCE = [
    (
        "microbatch_vs_per_reading_ratio",
        ">=",
        150.0,
        "micro-batched scoring vs one call per reading",
    ),
    ("table_write_cpu_us_per_prediction", "<=", 100.0, "score-host CPU per stored prediction, µs"),
    (
        "e2e_vs_storage_ceiling",
        ">=",
        0.7,
        "end-to-end sustained rate / Azurite's ceiling, same rows",
    ),
]


# What a child process runs: one script's `measure`, its figures written as JSON to a file.
_CHILD = """\
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import run_all
run_all.BENCH = Path(sys.argv[2])
figures = run_all._import(sys.argv[3]).measure(quick=sys.argv[4] == "quick")
with open(sys.argv[5], "w") as out:
    json.dump(figures, out)
"""


class _Apart:
    """A script whose `measure` runs in a fresh interpreter; its `FIGURES` read from here."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.FIGURES = getattr(_import(name), "FIGURES", {})

    def measure(self, quick: bool) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            out = Path(tmp) / "figures.json"
            mode = "quick" if quick else "full"
            here = str(Path(__file__).resolve().parent)
            argv = [sys.executable, "-c", _CHILD, here, str(BENCH), self.name, mode, str(out)]
            done = subprocess.run(argv, cwd=ROOT, check=False)
            if done.returncode != 0 or not out.exists():
                raise RuntimeError(f"bench/{self.name}.py exited with {done.returncode}")
            return json.loads(out.read_text())


def _load(name: str) -> _Apart:
    return _Apart(name)


def _import(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load bench/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory_gb = round(kb / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except OSError:
        return "unknown"


def run(names: list[str], quick: bool) -> dict[str, Any]:
    """Every chosen script's figures, merged; with `_meta`."""
    figures: dict[str, Any] = {}
    meta: dict[str, Any] = {
        "machine": machine(),
        "commit": _commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "seconds": {},
        "failed": {},
        "source": {},
        "units": {},
    }
    started = time.monotonic()
    for name in names:
        print(f"==> bench/{name}.py{' --quick' if quick else ''}", flush=True)
        t0 = time.monotonic()
        try:
            module = _load(name)
            got = module.measure(quick=quick)
        except Exception as exc:  # one broken benchmark must not hide the others
            traceback.print_exc()
            meta["failed"][name] = f"{type(exc).__name__}: {exc}"[:300]
            got = {}
        meta["seconds"][name] = round(time.monotonic() - t0, 1)
        for key, value in got.items():
            figures[key] = value
            meta["source"][key] = name
            described = getattr(module, "FIGURES", {}).get(key) if got else None
            if described:
                meta["units"][key] = list(described)
            if not isinstance(value, dict | list):
                print(f"  {key} = {value}", flush=True)
    e2e = figures.get("e2e_sustained_readings_per_s")
    for key, ceiling_key, source in (
        # The acceptance ratio: Azurite's ceiling in the e2e run's own Azurite and table.
        ("e2e_vs_storage_ceiling", "e2e_storage_ceiling_entities_per_s", "e2e"),
        # The same against a fresh table (table_writes.py), which flatters Azurite.
        ("e2e_vs_fresh_table_ceiling", "storage_ceiling_entities_per_s", "e2e / table_writes"),
    ):
        if e2e and figures.get(ceiling_key):
            figures[key] = round(e2e / figures[ceiling_key], 3)
            meta["source"][key] = source
    meta["total_seconds"] = round(time.monotonic() - started, 1)
    return {**figures, "_meta": meta}


def _check(value: Any, op: str, bound: float) -> str:
    if not isinstance(value, int | float):
        return "not measured"
    ok = value >= bound if op == ">=" else value <= bound
    return "met" if ok else "NOT met"


def write_plot(results: dict[str, Any], path: Path) -> bool:
    """Latency (p50, p99) against offered load, from the e2e stages."""
    stages = results.get("e2e_stages") or []
    if not stages:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offered = [s["offered_per_s"] for s in stages]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("p50_s", "p50"), ("p99_s", "p99")):
        ax.plot(offered, [s[key] for s in stages], marker="o", label=label)
    for s in stages:
        if not s["sustained"]:
            ax.axvline(s["offered_per_s"], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("offered readings/s (dotted: not sustained)")
    ax.set_ylabel("202 → stored prediction, s")
    ax.set_title(f"fleetscore end to end on {results['_meta']['machine']['cores']} cores")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_markdown(results: dict[str, Any], path: Path, plot: bool) -> None:
    """RESULTS.md: acceptance, the end-to-end stages, every figure with its command."""
    meta = results["_meta"]
    m = meta["machine"]
    flag = " --quick" if meta["quick"] else ""
    lines = [
        "# Benchmark results",
        "",
        f"Measured {meta['date']} at commit `{meta['commit']}` on {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB, {m['os']}, Python {m['python']}; "
        f"{'quick' if meta['quick'] else 'full'} run, {meta['total_seconds']:.0f} s in all. "
        f"Written by `.venv/bin/python bench/run_all.py{flag}` "
        f"(`make bench{'-quick' if meta['quick'] else ''}`); "
        "every figure below comes from that run. All processes share the machine's cores.",
        "",
        "## Acceptance",
        "",
        "| check | figure | bound | result |",
        "|---|---|---|---|",
    ]
    for key, op, bound, words in ACCEPTANCE:
        value = results.get(key)
        lines.append(
            f"| {words} (`{key}`) | {value} | {op} {bound:g} | {_check(value, op, bound)} |"
        )
    bottleneck = results.get("e2e_bottleneck")
    if bottleneck:
        lines += [
            "",
            f"End to end, the process that used the most CPU where the load stopped being "
            f"sustained was **{bottleneck}** ({results.get('e2e_bottleneck_cpu_per_s')} CPU-s "
            "per second; each process is bound to about one core).",
        ]
    before_after = [
        (
            "Table writes, client CPU µs per prediction",
            "table_write_cpu_us_per_prediction_sdk",
            "table_write_cpu_us_per_prediction",
            "the SDK's submit_transaction → the lean $batch writer",
        ),
        (
            "Model, score_request readings/s (100 devices x 20)",
            "model_score_request_readings_per_s",
            "model_score_request_readings_per_s_contract_2",
            "an object per reading (contract 1) → columns (contract 2)",
        ),
        (
            "Model through azmlinfsrv, readings/s per worker",
            "aml_http_readings_per_s_per_worker",
            "aml_http_readings_per_s_per_worker_contract_2",
            "an object per reading (contract 1) → columns (contract 2)",
        ),
        (
            "Ingest publish, requests/s of 100 devices",
            "publish_per_device_batches_requests_per_s",
            "publish_per_partition_batches_requests_per_s",
            "a batch per device → a batch per partition",
        ),
        (
            "Ingest publish, client CPU µs per event",
            "publish_per_device_batches_cpu_us_per_event",
            "publish_per_partition_batches_cpu_us_per_event",
            "a batch per device → a batch per partition",
        ),
    ]
    lines += [
        "",
        "## Profiled improvements (before and after, in this run)",
        "",
        "| what | before | after | change |",
        "|---|---|---|---|",
    ]
    for what, before, after, how in before_after:
        lines.append(f"| {what} | {results.get(before)} | {results.get(after)} | {how} |")
    stages = results.get("e2e_stages") or []
    if stages:
        lines += [
            "",
            "## End to end, stage by stage",
            "",
            "| offered/s | accepted/s | sustained | backlog growth/s | p50 s | p99 s "
            "| busiest process |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in stages:
            cpu = s.get("cpu_per_s") or {}
            name, used = max(cpu.items(), key=lambda kv: kv[1], default=("?", 0))
            lines.append(
                f"| {s['offered_per_s']:g} | {s['accepted_per_s']} "
                f"| {'yes' if s['sustained'] else 'no'} "
                f"| {s.get('backlog_growth_per_s')} | {s['p50_s']} | {s['p99_s']} | {name} {used} |"
            )
        if plot:
            lines += ["", "![latency against offered load](e2e_latency.png)"]
    lines += [
        "",
        "## Every figure",
        "",
        "| figure | value | unit / meaning | command |",
        "|---|---|---|---|",
    ]
    for key, value in results.items():
        if key.startswith("_") or isinstance(value, dict | list):
            continue
        source = meta["source"].get(key, "?")
        unit = " — ".join(meta["units"].get(key, []))
        command = (
            f"`.venv/bin/python bench/{source}.py{flag}`"
            if source in SCRIPTS
            else f"derived: {source}"
        )
        lines.append(f"| `{key}` | {value} | {unit} | {command} |")
    if meta["failed"]:
        lines += ["", "## Failed", ""]
        lines += [f"- `bench/{name}.py`: {why}" for name, why in meta["failed"].items()]
    lines += [
        "",
        "Seconds per script: " + ", ".join(f"{k} {v}" for k, v in meta["seconds"].items()),
        "",
    ]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """Run, write results.json, RESULTS.md and the plot; exit 1 if a script failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: about 3 minutes")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these scripts")
    parser.add_argument(
        "--out", type=Path, default=BENCH, help="where the files go (default bench/)"
    )
    args = parser.parse_args(argv)
    results = run(args.only or SCRIPTS, args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    plot = write_plot(results, args.out / "e2e_latency.png")
    write_markdown(results, args.out / "RESULTS.md", plot)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'RESULTS.md'}")
    for key, op, bound, words in ACCEPTANCE:
        print(
            f"  {words}: {results.get(key)} ({op} {bound:g}: {_check(results.get(key), op, bound)})"
        )
    return 1 if results["_meta"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
