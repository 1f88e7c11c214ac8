// The live page: one EventSource on /events; every `snapshot` event redraws the page.
// The readings chart polls /history (stored predictions via the query function) every 5 s.
"use strict";

const $ = (id) => document.getElementById(id);
let device = new URLSearchParams(location.search).get("device") || "";
let source = null;
let chart = null;
let chartDevice = null;
let metricsChart = null;
let metricsKey = null;
let metricsRaw = [];
let metricsScores = [];
let historyDevice = "";
let historyBusy = false;
let historyAgain = false;
let historyTimer = null;
const HISTORY_EVERY_MS = 5000;
const COLORS = ["#2563eb", "#059669", "#f59e0b", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#92400e"];

const fmt = (value, digits = 2) =>
  typeof value === "number" ? value.toFixed(digits) : value === null || value === undefined ? "–" : String(value);
const shortTime = (iso) => (typeof iso === "string" ? iso.replace("T", " ").slice(0, 19) : "–");

function cell(row, text, numeric = false) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "num";
  row.appendChild(td);
}

function renderKpis(kpis) {
  $("kpi-readings").textContent = fmt(kpis.readings_per_second, 1);
  $("kpi-readings-hint").textContent = kpis.window_start
    ? `window from ${shortTime(kpis.window_start)} UTC`
    : "newest aggregation window";
  $("kpi-anomalies").textContent = String(kpis.anomalies_5min);
  $("kpi-risk").textContent = String(kpis.devices_at_risk);
  $("kpi-risk-hint").textContent = `of ${kpis.devices} devices: maintenance due or failure probability ≥ 0.5`;
}

function renderFleet(fleet, selected) {
  const body = $("fleet").querySelector("tbody");
  const rows = fleet.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.device = d.device_id;
    tr.className = (d.at_risk ? "at-risk " : "") + (d.device_id === selected ? "selected" : "");
    cell(tr, d.device_id);
    cell(tr, fmt(d.failure_probability), true);
    cell(tr, d.maintenance_due ? "yes" : "no");
    cell(tr, fmt(d.max_anomaly_score), true);
    cell(tr, fmt(d.anomalies, 0), true);
    cell(tr, fmt(d.readings, 0), true);
    cell(tr, shortTime(d.window_start));
    tr.addEventListener("click", () => choose(d.device_id));
    return tr;
  });
  body.replaceChildren(...rows);
}

function renderFeed(anomalies) {
  const items = anomalies.map((a) => {
    const li = document.createElement("li");
    const when = document.createElement("span");
    when.className = "when";
    when.textContent = `${shortTime(a.timestamp)} `;
    li.appendChild(when);
    li.appendChild(
      document.createTextNode(`${a.device_id} · score ${fmt(a.anomaly_score)} · ${a.top_metric || "?"}`),
    );
    return li;
  });
  $("feed").replaceChildren(...items);
}

function renderDevices(fleet, selected) {
  const select = $("device");
  const names = fleet.map((d) => d.device_id).sort();
  if (selected && !names.includes(selected)) names.unshift(selected);
  const current = Array.from(select.options, (o) => o.value);
  if (current.join("\n") !== names.join("\n")) {
    select.replaceChildren(...names.map((n) => new Option(n, n)));
  }
  select.value = selected || "";
}

function renderChart(name, series) {
  const box = $("chart");
  if (typeof uPlot === "undefined") {
    box.textContent = "Chart library missing: run `make setup` (npm ci installs uPlot into node_modules).";
    return;
  }
  const xs = series.window_start.map((iso) => Date.parse(iso) / 1000);
  const data = [xs, series.mean_anomaly_score, series.max_anomaly_score, series.failure_probability];
  if (chart && chartDevice === name) {
    chart.setData(data);
    return;
  }
  if (chart) chart.destroy();
  chartDevice = name;
  chart = new uPlot(
    {
      width: Math.max(box.clientWidth, 320),
      height: 260,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      scales: {
        x: { time: true, range: (u, min, max) => (min === max ? [min - 60, max + 60] : [min, max]) },
        y: { range: [0, 1] },
      },
      series: [
        {},
        { label: "mean anomaly score", stroke: "#2563eb" },
        { label: "max anomaly score", stroke: "#f59e0b" },
        { label: "failure probability", stroke: "#c0392b", width: 2 },
      ],
    },
    data,
    box,
  );
}

// Each metric scaled to its own min–max, so pressures and temperatures share one 0–1 axis.
function scaled(values) {
  const nums = values.filter((v) => typeof v === "number");
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of nums) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  return values.map((v) => (typeof v !== "number" ? null : hi === lo ? 0.5 : (v - lo) / (hi - lo)));
}

function renderMetrics(doc) {
  const box = $("metrics-chart");
  if (typeof uPlot === "undefined") return; // the window chart already says what is missing
  const points = doc.points;
  const xs = points.map((p) => Date.parse(p.timestamp) / 1000);
  metricsRaw = doc.metrics.map((name) =>
    points.map((p) => (typeof p.metrics[name] === "number" ? p.metrics[name] : null)),
  );
  metricsScores = points.map((p) => (typeof p.anomaly_score === "number" ? p.anomaly_score : null));
  const data = [xs, ...metricsRaw.map(scaled), metricsScores];
  const n = points.length;
  $("metrics-status").textContent = n
    ? `${n} readings, ${shortTime(points[0].timestamp)} – ${shortTime(points[n - 1].timestamp)} UTC` +
      (doc.truncated ? " (newest 2,000)" : "")
    : "no stored readings yet";
  box.dataset.device = doc.device_id;
  box.dataset.points = String(n);
  const key = `${doc.device_id}|${doc.metrics.join(",")}`;
  if (metricsChart && metricsKey === key) {
    metricsChart.setData(data);
    return;
  }
  if (metricsChart) metricsChart.destroy();
  box.replaceChildren();
  metricsKey = key;
  // The legend shows real values: at the cursor, else the newest reading's.
  const real = (values) => (u, v, si, idx) =>
    fmt(values()[idx === null || idx === undefined ? values().length - 1 : idx], 3);
  metricsChart = new uPlot(
    {
      width: Math.max(box.clientWidth, 320),
      height: 220,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      scales: {
        x: { time: true, range: (u, min, max) => (min === max ? [min - 60, max + 60] : [min, max]) },
        y: { range: [0, 1] },
      },
      axes: [{}, { values: (u, ticks) => ticks.map((t) => t.toFixed(1)) }],
      series: [
        {},
        ...doc.metrics.map((name, i) => ({
          label: name,
          stroke: COLORS[i % COLORS.length],
          value: real(() => metricsRaw[i]),
        })),
        { label: "anomaly score", stroke: "#c0392b", width: 2, value: real(() => metricsScores) },
      ],
    },
    data,
    box,
  );
}

function historyOff(message) {
  clearInterval(historyTimer);
  historyTimer = null;
  if (metricsChart) metricsChart.destroy();
  metricsChart = null;
  $("metrics-chart").textContent = message;
  $("metrics-status").textContent = "";
}

async function loadHistory() {
  if (!historyDevice || historyTimer === null) return;
  if (historyBusy) {
    historyAgain = true; // the selection or span changed while a fetch was out
    return;
  }
  historyBusy = true;
  const name = historyDevice;
  try {
    const query = `device=${encodeURIComponent(name)}&minutes=${encodeURIComponent($("minutes").value)}`;
    const reply = await fetch(`/history?${query}`);
    const doc = await reply.json();
    if (reply.status === 404 && doc.error && doc.error.code === "NotConfigured") {
      historyOff(
        "Raw metrics come from the stored predictions through the query function: start the " +
          "dashboard with --query-url http://127.0.0.1:7071/api and the function key in " +
          "DASHBOARD_QUERY_KEY (make demo does).",
      );
    } else if (!reply.ok) {
      $("metrics-status").textContent = `history unavailable: ${doc.error ? doc.error.message : reply.status}`;
    } else if (name === historyDevice) {
      renderMetrics(doc);
    }
  } catch (err) {
    $("metrics-status").textContent = `history unavailable: ${err}`;
  } finally {
    historyBusy = false;
    if (historyAgain) {
      historyAgain = false;
      loadHistory();
    }
  }
}

function render(snap) {
  renderKpis(snap.kpis);
  renderFleet(snap.fleet, snap.device);
  renderFeed(snap.anomalies);
  renderDevices(snap.fleet, snap.device);
  if (snap.device) renderChart(snap.device, snap.series);
  if (snap.device && snap.device !== historyDevice) {
    historyDevice = snap.device;
    loadHistory();
  }
  const status = $("status");
  status.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
  status.className = "status live";
}

function connect() {
  if (source) source.close();
  source = new EventSource("/events" + (device ? `?device=${encodeURIComponent(device)}` : ""));
  source.addEventListener("snapshot", (event) => render(JSON.parse(event.data)));
  source.onerror = () => {
    $("status").textContent = "reconnecting…";
    $("status").className = "status";
  };
}

function choose(name) {
  if (name === device) return;
  device = name;
  history.replaceState(null, "", `?device=${encodeURIComponent(name)}`);
  connect();
}

$("device").addEventListener("change", (event) => choose(event.target.value));
$("minutes").addEventListener("change", () => loadHistory());
historyTimer = setInterval(loadHistory, HISTORY_EVERY_MS);
connect();
