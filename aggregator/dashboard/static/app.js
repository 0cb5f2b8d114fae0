"use strict";
// The fleet dashboard: polls the aggregator's JSON API and redraws.
const REFRESH_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
// ?node=NAME is that node's page: its charts, its row and its decisions.
const NODE = new URLSearchParams(location.search).get("node");
// #token=TOKEN is the aggregator's API token, when it has one: a fragment
// never goes to the server, so it stays out of its logs and of Referer.
const TOKEN = new URLSearchParams(location.hash.slice(1)).get("token");

// Very coarse continent outlines (lon, lat), enough to place the dots.
const LAND = [
  [[-168,65],[-140,70],[-95,72],[-75,62],[-55,52],[-67,45],[-80,32],[-81,25],[-97,26],[-97,18],[-87,15],[-78,8],[-105,22],[-117,32],[-124,40],[-125,49],[-140,60],[-165,60]],
  [[-78,8],[-60,10],[-50,0],[-35,-6],[-40,-22],[-58,-38],[-68,-55],[-74,-45],[-72,-20],[-81,-5]],
  [[-10,36],[-9,43],[-2,48],[-5,54],[5,58],[10,63],[20,70],[30,70],[40,66],[60,69],[100,77],[140,72],[180,68],[160,60],[140,52],[130,42],[122,30],[108,20],[100,8],[95,16],[80,8],[72,20],[58,25],[50,30],[35,36],[28,41],[15,38],[5,43],[-5,36]],
  [[-17,21],[-6,35],[10,37],[32,31],[43,12],[51,11],[40,-15],[35,-25],[20,-35],[12,-18],[9,4],[-8,4],[-17,14]],
  [[114,-22],[122,-18],[131,-12],[137,-12],[145,-15],[153,-28],[150,-38],[140,-38],[131,-31],[115,-34]],
];

const project = (lon, lat) => [(lon + 180) * 2, (90 - lat) * 2];

function el(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function drawMap(regions) {
  const map = document.getElementById("map");
  map.replaceChildren();
  for (let lon = -150; lon <= 150; lon += 30) el("line", {class: "grid", x1: project(lon, 0)[0], y1: 0, x2: project(lon, 0)[0], y2: 360}, map);
  for (let lat = -60; lat <= 60; lat += 30) el("line", {class: "grid", x1: 0, y1: project(0, lat)[1], x2: 720, y2: project(0, lat)[1]}, map);
  for (const poly of LAND) el("polygon", {class: "land", points: poly.map(p => project(p[0], p[1]).join(",")).join(" ")}, map);
  const unplaced = document.getElementById("unplaced");
  unplaced.replaceChildren();
  for (const r of regions) {
    if (!r.coord) {
      const li = document.createElement("li");
      li.textContent = `${r.name || "(no region)"}: ${r.up}/${r.nodes} up, ${r.rps.toFixed(0)} rps (location unknown)`;
      unplaced.appendChild(li);
      continue;
    }
    const [x, y] = project(r.coord.lon, r.coord.lat);
    const health = r.up === r.nodes ? "up" : r.up > 0 ? "stale" : "down";
    const color = {up: "#5fd17a", stale: "#e3b341", down: "#f0605d"}[health];
    const g = el("g", {class: "region", "data-region": r.name}, map);
    el("circle", {cx: x, cy: y, r: 4 + Math.min(14, Math.sqrt(r.rps) / 3), fill: color, "fill-opacity": .75}, g);
    el("text", {x: x + 8, y: y - 6}, g).textContent = `${r.name} ${r.up}/${r.nodes} · ${r.rps.toFixed(0)} rps · p99 ${r.p99_ms.toFixed(0)} ms`;
  }
}

// niceStep is a round step (1, 2 or 5 times a power of ten) that cuts
// span into about n parts.
function niceStep(span, n) {
  const raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  return [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw);
}

const WINDOW_MS = 15 * 60 * 1000;

// drawChart plots the series' lines over the last WINDOW_MS, with round
// ticks on both axes, the unit on the value axis and a legend. The value
// axis reaches at least minTop, so a flat zero still has readable ticks.
function drawChart(id, points, lines, unit, minTop) {
  const svg = document.getElementById(id);
  svg.replaceChildren();
  const L = 40, R = 395, T = 18, B = 118;
  el("line", {class: "axis", x1: L, y1: B, x2: R, y2: B}, svg);
  el("line", {class: "axis", x1: L, y1: T, x2: L, y2: B}, svg);
  el("text", {x: 2, y: 10}, svg).textContent = unit;
  // Each legend entry is as wide as its label.
  let lx = 100;
  for (const l of lines) {
    el("line", {x1: lx, y1: 7, x2: lx + 14, y2: 7, stroke: l.color, "stroke-width": 2}, svg);
    el("text", {x: lx + 18, y: 10}, svg).textContent = l.label;
    lx += 30 + 5 * l.label.length;
  }
  const t1 = Date.now(), t0 = t1 - WINDOW_MS;
  // A point without a line's value (a step of nodes that send no status
  // classes) is left out of that line.
  const has = (p, l) => Number.isFinite(p[l.key]);
  const max = Math.max(minTop, ...points.flatMap(p => lines.filter(l => has(p, l)).map(l => p[l.key])));
  const step = niceStep(max, 3), top = Math.ceil(max / step - 1e-9) * step;
  const y = v => B - (B - T) * v / top, x = t => L + (R - L) * (t - t0) / (t1 - t0);
  for (let i = 0; i * step <= top + step / 2; i++) {
    const v = i * step;
    el("line", {class: "tick", x1: L, y1: y(v), x2: R, y2: y(v)}, svg);
    el("text", {class: "value", x: L - 4, y: y(v) + 3, "text-anchor": "end"}, svg).textContent = +v.toFixed(6);
  }
  // Round times, five minutes apart over the quarter hour, in 24-hour time.
  const tick = 5 * 60 * 1000;
  for (let t = Math.ceil(t0 / tick) * tick; t <= t1; t += tick) {
    el("line", {class: "axis", x1: x(t), y1: B, x2: x(t), y2: B + 3}, svg);
    el("text", {class: "time", x: x(t), y: B + 13, "text-anchor": "middle"}, svg).textContent =
      new Date(t).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", hourCycle: "h23"});
  }
  if (points.length === 0) { el("text", {x: 170, y: 70}, svg).textContent = "no data yet"; return; }
  for (const l of lines) {
    const xy = points.filter(p => has(p, l)).map(p => [x(Date.parse(p.t)), y(p[l.key])]);
    el("polyline", {points: xy.map(p => p.join(",")).join(" "), stroke: l.color}, svg);
    // A dot per step, so a lone sample or a gap still shows.
    for (const [cx, cy] of xy) el("circle", {cx, cy, r: 1.2, fill: l.color}, svg);
  }
}

// emptyState says so, in the table's footer, when its body is empty.
function emptyState(body, text) {
  const foot = body.parentElement.createTFoot();
  foot.replaceChildren();
  if (body.rows.length > 0) return;
  const tr = foot.insertRow(), td = tr.insertCell();
  td.colSpan = body.parentElement.tHead.rows[0].cells.length;
  td.className = "empty";
  td.textContent = text;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
}

function drawNodes(nodes) {
  const body = document.getElementById("nodes");
  body.replaceChildren();
  for (const n of nodes) {
    const tr = document.createElement("tr");
    tr.dataset.node = n.node;
    const name = document.createElement("td"), link = document.createElement("a");
    link.href = "?node=" + encodeURIComponent(n.node) + location.hash; // the token goes along
    link.textContent = n.node;
    name.appendChild(link);
    tr.appendChild(name);
    cell(tr, n.region); cell(tr, n.status, n.status);
    cell(tr, n.rps.toFixed(1), "num");
    cell(tr, n.status_rps ? n.status_rps["3xx"].toFixed(1) : "", "num");
    cell(tr, n.p99_ms.toFixed(1), "num");
    cell(tr, (100 * n.error_rate).toFixed(2) + "%", "num"); cell(tr, n.cpu.toFixed(2), "num");
    cell(tr, `${n.healthy_backends}/${n.backends}`, "num");
    // Circuit breaker refusals over the aggregator's memory window, each
    // service and threshold in the cell's title.
    const over = n.circuit_overflow || [];
    cell(tr, over.length ? String(over.reduce((sum, o) => sum + o.count, 0)) : "", "num");
    tr.lastChild.title = over.map(o => `${o.service} ${o.reason}: ${o.count}`).join("\n");
    cell(tr, n.telemetry_bytes_per_sec.toFixed(0), "num");
    cell(tr, new Date(n.last_seen).toLocaleTimeString());
    // A clock more than a few seconds off is worth seeing: such batches
    // are re-stamped by the aggregator.
    const skew = Math.abs(n.clock_skew_seconds) >= 5 ? `${n.clock_skew_seconds.toFixed(0)} s` : "";
    cell(tr, skew, "num");
    body.appendChild(tr);
  }
  emptyState(body, NODE ? `node ${NODE} has not reported to this aggregator` : "no node has reported yet");
}

function drawDecisions(decisions) {
  const body = document.getElementById("decisions");
  body.replaceChildren();
  for (const d of decisions) {
    const tr = document.createElement("tr");
    cell(tr, new Date(d.time).toLocaleTimeString()); cell(tr, d.node); cell(tr, d.action);
    cell(tr, [d.service, d.target].filter(Boolean).join(" ")); cell(tr, String(d.value), "num");
    cell(tr, d.reason || ""); cell(tr, d.rejected ? "rejected: " + d.rejected : d.dry_run ? "dry run" : d.applied ? "applied" : "not applied");
    body.appendChild(tr);
  }
  emptyState(body, "no scaling decisions yet");
}

// count writes n things in English: "1 node", "2 nodes".
const count = (n, one, many = one + "s") => `${n} ${n === 1 ? one : many}`;

async function getJSON(path) {
  const r = await fetch(path, {cache: "no-store", headers: TOKEN ? {Authorization: "Bearer " + TOKEN} : {}});
  if (!r.ok) {
    // The API says why in {"error": ...}: show that, not just the status.
    const why = await r.json().then(b => b.error, () => "");
    throw new Error(`${path}: ${r.status} ${why}`);
  }
  return r.json();
}

// setupPage turns the page into a node's page when ?node= names one.
function setupPage() {
  if (!NODE) return;
  document.title = `Perigee node ${NODE}`;
  document.getElementById("title").textContent = `Perigee node ${NODE}`;
  document.getElementById("back").hidden = false;
  document.getElementById("regions").hidden = true;
  document.getElementById("nodes-title").textContent = "Node";
  for (const s of document.querySelectorAll(".scope")) s.textContent = `(${NODE}, last 15 min)`;
}

async function refresh() {
  const scope = NODE ? `scope=node&name=${encodeURIComponent(NODE)}` : "scope=fleet";
  const only = NODE ? `&node=${encodeURIComponent(NODE)}` : "";
  try {
    const [fleet, series, decisions] = await Promise.all([
      getJSON("/v1/fleet"), getJSON(`/v1/series?${scope}&window=15m&step=10s`), getJSON(`/v1/decisions?limit=20${only}`),
    ]);
    const nodes = NODE ? fleet.nodes.filter(n => n.node === NODE) : fleet.nodes;
    const up = fleet.nodes.filter(n => n.status === "up").length;
    document.getElementById("totals").textContent = NODE
      ? nodes.map(n => `${n.region} · ${n.status} · ${count(n.batches, "batch", "batches")}`).join("") || "not known here"
      : `${count(fleet.nodes.length, "node")} (${up} up) in ${count(fleet.regions.length, "region")} · ${count(fleet.batches, "batch", "batches")}, ${count(fleet.records, "record")}`;
    if (!NODE) drawMap(fleet.regions);
    drawNodes(nodes);
    // Status classes flattened for the charts; served is what is load:
    // every response but the redirects.
    const points = series.points.map(p => ({...p, error_pct: 100 * p.error_rate,
      ...(p.status_rps && Object.fromEntries(Object.entries(p.status_rps).map(([c, v]) => ["s" + c, v]))),
      served: p.status_rps && Object.entries(p.status_rps).reduce((sum, [c, v]) => c === "3xx" ? sum : sum + v, 0)}));
    const classes = points.some(p => p.status_rps);
    drawChart("chart-rps", points, classes
      ? [{key: "served", color: "#58a6ff", label: "served (non-3xx)"}, {key: "s3xx", color: "#b083f0", label: "redirects (3xx)"}]
      : [{key: "rps", color: "#58a6ff", label: "requests/s, redirects included"}], "req/s", 1);
    drawChart("chart-status", points.filter(p => p.status_rps), [
      {key: "s1xx", color: "#7d8791", label: "1xx"}, {key: "s2xx", color: "#5fd17a", label: "2xx"},
      {key: "s3xx", color: "#b083f0", label: "3xx"}, {key: "s4xx", color: "#e3b341", label: "4xx"},
      {key: "s5xx", color: "#f0605d", label: "5xx"}], "resp/s", 1);
    drawChart("chart-lat", points, [{key: "p50_ms", color: "#5fd17a", label: "p50"}, {key: "p99_ms", color: "#f0605d", label: "p99"}], "ms", 1);
    drawChart("chart-err", points, [{key: "error_pct", color: "#f0605d", label: "5xx or failed"}], "% of resp.", 1);
    drawChart("chart-cpu", points, [{key: "cpu", color: "#e3b341", label: "cores busy"}], "cores", 1);
    drawDecisions(decisions.decisions);
    document.getElementById("status").textContent = "updated " + new Date().toLocaleTimeString() +
      (fleet.warming ? " (restarted: still reading recent history from the store)" : "");
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
  } catch (e) {
    document.getElementById("status").textContent = "refresh failed: " + e.message;
  }
}

setupPage();
refresh();
setInterval(refresh, REFRESH_MS);
