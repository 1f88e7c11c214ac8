// The live page: one EventSource on /events; every `snapshot` event redraws the page.
"use strict";

const $ = (id) => document.getElementById(id);
let device = new URLSearchParams(location.search).get("device") || "";
let source = null;
let chart = null;
let chartDevice = null;

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

function render(snap) {
  renderKpis(snap.kpis);
  renderFleet(snap.fleet, snap.device);
  renderFeed(snap.anomalies);
  renderDevices(snap.fleet, snap.device);
  if (snap.device) renderChart(snap.device, snap.series);
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
connect();
