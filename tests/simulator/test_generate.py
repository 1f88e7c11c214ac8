import argparse
import json
from datetime import UTC, datetime

import numpy as np

from simulator.fleet import FleetConfig
from simulator.generate import add_generate_arguments, generate, run_generate

START = datetime(2026, 1, 1, tzinfo=UTC)


def _ms(text):
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def test_generate_writes_consistent_files(tmp_path):
    cfg = FleetConfig(devices=5, seed=4, anomaly_per_day=30.0, degradation_per_day=2.0)
    manifest = generate(cfg, days=1, out=tmp_path, start=START, chunk_hours=5)
    assert manifest == json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "compressor.npz", "fan.npz", "manifest.json", "pump.npz", "truth.jsonl",
    ]  # fmt: skip
    assert manifest["steps"] == 8640
    assert manifest["start"] == "2026-01-01T00:00:00.000Z"
    assert manifest["end"] == "2026-01-01T23:59:50.000Z"
    truth = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    assert len(truth) == manifest["truth"]["records"]
    total = 0
    for info in manifest["kinds"].values():
        with np.load(tmp_path / info["file"]) as z:
            arrays = {k: z[k] for k in z.files}
        n = info["readings"]
        total += n
        assert list(arrays["device_ids"]) == info["devices"]
        assert list(arrays["metric_names"]) == info["metrics"]
        for name in ["timestamp_ms", "device", *info["metrics"], "anomaly", "health", "mode"]:
            assert arrays[name].shape == (n,), name
        assert arrays[info["metrics"][0]].dtype == np.float32
        ts, dev = arrays["timestamp_ms"], arrays["device"]
        assert ts.min() >= _ms(manifest["start"])
        assert ts.max() <= _ms(manifest["end"])
        assert (np.diff(ts) >= 0).all()
        h = arrays["health"]
        assert ((h >= 0) & (h <= 1)).all()
        mtf = arrays["minutes_to_failure"]
        healthy = (arrays["mode"] == 0) & ~arrays["failed"]
        assert (mtf[healthy] == -1).all()
        assert (mtf[~healthy] >= 0).all()
        # Every labelled anomaly lines up with the rows.
        for r in truth:
            if r["type"] != "anomaly" or r["device_id"] not in info["devices"]:
                continue
            d = info["devices"].index(r["device_id"])
            rows = (dev == d) & (ts >= _ms(r["start"])) & (ts <= _ms(r["end"]))
            expected = 1 + list(arrays["anomaly_kinds"][1:]).index(r["kind"])
            if r["metric"] is None:
                assert not rows.any()  # a whole-reading dropout writes no row
                continue
            assert rows.any()
            assert (arrays["anomaly"][rows] == expected).all()
            assert (arrays["anomaly_metric"][rows] == info["metrics"].index(r["metric"])).all()
            v = arrays[r["metric"]][rows]
            if r["kind"] == "stuck":
                assert (v == v[0]).all()
            if r["kind"] == "dropout":
                assert np.isnan(v).all()
        labelled = arrays["anomaly"] > 0
        assert labelled.any()
        assert not np.isnan(np.stack([arrays[m] for m in info["metrics"]])[:, ~labelled]).any()
    assert total == manifest["readings"]
    assert 5 * 8640 * 0.9 < total < 5 * 8640


def test_run_generate_is_deterministic(tmp_path):
    parser = argparse.ArgumentParser()
    add_generate_arguments(parser)
    for name in ("a", "b"):
        args = parser.parse_args(["--devices", "3", "--days", "0.1", "--out", str(tmp_path / name)])
        assert run_generate(args) == 0
    for f in ("pump.npz", "fan.npz", "compressor.npz", "truth.jsonl", "manifest.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_run_plot_writes_a_png(tmp_path):
    from simulator.plot import add_plot_arguments, run_plot

    parser = argparse.ArgumentParser()
    add_plot_arguments(parser)
    out = tmp_path / "p.png"
    args = ["--device", "fan-0002", "--devices", "4", "--days", "0.2", "--out", str(out)]
    assert run_plot(parser.parse_args(args)) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_plot(parser.parse_args([*args[:-2], "--device", "nope", "--out", str(out)])) == 2
