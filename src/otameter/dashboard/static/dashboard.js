// The org and app pages: reads the API's answers for the session's key (/dashboard/api/...)
// and the dashboard's own figures (/dashboard/data/...), and draws charts, tables and CSV
// downloads.
// Every chart has a data table and a CSV built from the same rows, so nothing depends on colour.

const main = document.getElementById("main");
const cfg = main.dataset;
const PAGE = cfg.page;
const ID = cfg.id;
const TODAY = cfg.today;
const MAX_DAYS = 90;

const NUM = new Intl.NumberFormat("en-US");
const DEC = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
const PCT = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1, minimumFractionDigits: 1 });
// Okabe-Ito: distinguishable with the common colour-vision deficiencies.
const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999933", "#332288", "#777777"];
const POINTS = ["circle", "triangle", "rect", "rectRot", "star", "crossRot", "rectRounded", "cross", "line"];
const DASHES = [[], [6, 3], [2, 2], [10, 4, 2, 4], [1, 3], [12, 3], [4, 4], [8, 2, 2, 2], [3, 6]];
const PATTERNS = ["solid", "diagonal", "dots", "cross", "vertical", "horizontal", "zigzag", "grid", "back"];

const charts = new Map();
const models = new Map();
let state = { from: cfg.from, to: cfg.to, compare: false };
let orgApps = null;
let bundles = null;

// -- small utilities ------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Bytes, one way everywhere (otameter/units.py format_bytes): decimal units, as plan limits
// are written (5GB is 5 * 10^9 bytes), one decimal dropped when zero: 999 B, 1.5 kB, 100 MB.
const BYTE_UNITS = ["kB", "MB", "GB", "TB", "PB"];
function bytes(n) {
  if (n === null || n === undefined) return "–";
  let value = Number(n);
  if (Math.abs(value) < 1000) return `${Math.trunc(value)} B`;
  let unit = 0;
  value /= 1000;
  while (Math.abs(value) >= 999.95 && unit < BYTE_UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(1).replace(/\.0$/, "")} ${BYTE_UNITS[unit]}`;
}

const count = (n) => (n === null || n === undefined ? "–" : NUM.format(n));
const percent = (n) => (n === null || n === undefined ? "–" : `${PCT.format(n)}%`);

function dayToDate(iso) {
  const [y, m, d] = iso.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d));
}

function addDays(iso, n) {
  const date = dayToDate(iso);
  date.setUTCDate(date.getUTCDate() + n);
  return date.toISOString().slice(0, 10);
}

const spanDays = (from, to) => Math.round((dayToDate(to) - dayToDate(from)) / 86400000) + 1;

function shortDay(iso) {
  return dayToDate(iso).toLocaleDateString("en-US", { month: "short", day: "numeric", timeZone: "UTC" });
}

function longDay(iso) {
  if (!iso) return "–";
  return dayToDate(iso).toLocaleDateString("en-US", {
    year: "numeric", month: "short", day: "numeric", timeZone: "UTC",
  });
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } });
  if (response.status === 401) {
    const here = location.pathname + location.search;
    location.assign(`/dashboard/login?next=${encodeURIComponent(here)}`);
    throw new Error("signed out");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return { status: response.status, ok: response.ok, body };
}

const errorText = (answer) => (answer.body && answer.body.error) || `HTTP ${answer.status}`;

// As csv_cells.py on the server (OWASP CSV injection): a string that could start a formula
// (a device's version name in a column title, say) gets a leading quote; numbers stay numbers.
function csvField(value) {
  let text = value === null || value === undefined ? "" : String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function downloadText(filename, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = el("a", { href: url, download: filename, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 5000);
}

// A fill that can be told apart without colour: the pattern differs per series.
function pattern(color, kind) {
  if (kind === "solid" || typeof document === "undefined") return color;
  const size = 10;
  const canvas = document.createElement("canvas");
  canvas.width = size;
  canvas.height = size;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = `${color}55`;
  ctx.fillRect(0, 0, size, size);
  ctx.strokeStyle = color;
  ctx.fillStyle = color;
  ctx.lineWidth = 2;
  ctx.beginPath();
  if (kind === "diagonal") { ctx.moveTo(0, size); ctx.lineTo(size, 0); }
  else if (kind === "back") { ctx.moveTo(0, 0); ctx.lineTo(size, size); }
  else if (kind === "vertical") { ctx.moveTo(size / 2, 0); ctx.lineTo(size / 2, size); }
  else if (kind === "horizontal") { ctx.moveTo(0, size / 2); ctx.lineTo(size, size / 2); }
  else if (kind === "cross" || kind === "grid") {
    ctx.moveTo(0, size / 2); ctx.lineTo(size, size / 2); ctx.moveTo(size / 2, 0); ctx.lineTo(size / 2, size);
  } else if (kind === "zigzag") { ctx.moveTo(0, size); ctx.lineTo(size / 2, size / 2); ctx.lineTo(size, size); }
  else if (kind === "dots") { ctx.arc(size / 2, size / 2, 2, 0, Math.PI * 2); ctx.fill(); }
  ctx.stroke();
  return ctx.createPattern(canvas, "repeat");
}

// -- sortable tables ------------------------------------------------------------------------

function sortableTable({ id, caption, columns, rows, sortKey, sortDir = "descending", footer }) {
  let key = sortKey;
  let dir = sortDir;
  const table = el("table", { class: "data sortable", id });
  const tbody = el("tbody");
  const headRow = el("tr");
  const headers = columns.map((column) => {
    const button = el("button", { type: "button", class: "sort", dataset: { key: column.key } },
      column.label, el("span", { class: "sort-mark", "aria-hidden": "true" }));
    const th = el("th", { scope: "col", class: column.num ? "num" : null }, button);
    button.addEventListener("click", () => {
      dir = key === column.key && dir === "descending" ? "ascending" : key === column.key ? "descending" : column.num ? "descending" : "ascending";
      key = column.key;
      draw();
    });
    headRow.append(th);
    return { column, th };
  });
  function draw() {
    const sign = dir === "ascending" ? 1 : -1;
    const sorted = [...rows].sort((a, b) => {
      const x = a[key];
      const y = b[key];
      if (typeof x === "number" && typeof y === "number") return sign * (x - y);
      return sign * String(x ?? "").localeCompare(String(y ?? ""));
    });
    for (const { column, th } of headers) {
      const active = column.key === key;
      if (active) th.setAttribute("aria-sort", dir);
      else th.removeAttribute("aria-sort");
      th.querySelector(".sort-mark").textContent = active ? (dir === "ascending" ? " ▲" : " ▼") : " ↕";
    }
    tbody.replaceChildren(...sorted.map((row) => el("tr", {}, columns.map((column, n) => {
      const content = column.render ? column.render(row) : column.format ? column.format(row[column.key]) : row[column.key];
      const attrs = { class: column.num ? "num" : null, dataset: { key: column.key, value: row[column.key] ?? "" } };
      return n === 0 ? el("th", { scope: "row", ...attrs }, content) : el("td", attrs, content);
    }))));
  }
  table.append(el("caption", {}, caption), el("thead", {}, headRow), tbody);
  if (footer) table.append(el("tfoot", {}, footer));
  draw();
  return el("div", { class: "table-scroll" }, table);
}

// -- charts ---------------------------------------------------------------------------------

// A chart's model: the rows and columns that its canvas, data table and CSV all show.
function figure(name, title, description) {
  const titleId = `chart-${name}-title`;
  const canvas = el("canvas", { role: "img", id: `chart-${name}-canvas` });
  const tableWrap = el("div", { class: "table-alt-body" });
  const button = el("button", {
    type: "button", class: "csv", dataset: { chart: name },
    "aria-label": `Download CSV: ${title}`,
    onclick: () => downloadCsv(name),
  }, "Download CSV");
  const wide = name === "activity" || name === "versions" || name.startsWith("release");
  const node = el("figure", { class: `card chart${wide ? " chart-wide" : ""}`, id: `chart-${name}`, "aria-labelledby": titleId },
    el("div", { class: "chart-head" }, el("h2", { id: titleId }, title), button),
    el("p", { class: "hint" }, description),
    el("div", { class: "canvas-wrap" }, canvas),
    el("details", { class: "table-alt" }, el("summary", {}, `Data table: ${title}`), tableWrap));
  return { node, canvas, tableWrap, title };
}

function downloadCsv(name) {
  const model = models.get(name);
  if (!model) return;
  const lines = [model.columns.map((c) => csvField(c.csv)).join(",")];
  for (const row of model.rows) lines.push(model.columns.map((c) => csvField(row[c.key])).join(","));
  const scope = `${PAGE}-${ID}`.replace(/[^A-Za-z0-9._-]+/g, "_");
  downloadText(`${scope}-${name}-${state.from}-to-${state.to}.csv`, `${lines.join("\r\n")}\r\n`, "text/csv");
}

function renderTable(fig, model) {
  const columns = model.columns.map((c, n) => ({
    key: c.key, label: c.label, num: n > 0 && c.kind !== "date", format: c.format,
  }));
  fig.tableWrap.replaceChildren(sortableTable({
    id: `table-${model.name}`, caption: `${fig.title}, ${longDay(state.from)} to ${longDay(state.to)}`,
    columns, rows: model.rows, sortKey: model.sortKey || "date", sortDir: "ascending",
  }));
}

function drawChart(fig, model, config) {
  models.set(model.name, model);
  fig.canvas.setAttribute("aria-label", model.summary);
  renderTable(fig, model);
  charts.get(model.name)?.destroy();
  if (typeof window.Chart === "undefined") {
    fig.canvas.replaceWith(el("p", { class: "hint" }, "The chart library did not load; the data table below has the figures."));
    return;
  }
  charts.set(model.name, new window.Chart(fig.canvas, config));
}

function baseOptions(yFormat, extra = {}) {
  return {
    responsive: true,
    maintainAspectRatio: false,
    animation: false,
    interaction: { mode: "index", intersect: false },
    plugins: {
      legend: {
        labels: { usePointStyle: true, boxWidth: 12, padding: 14, sort: (a, b) => a.datasetIndex - b.datasetIndex },
      },
      tooltip: {
        callbacks: {
          label: (ctx) => `${ctx.dataset.label}: ${(ctx.dataset.format || yFormat)(ctx.parsed.y)}`,
        },
      },
    },
    scales: {
      x: { ticks: { maxRotation: 0, autoSkipPadding: 12 }, grid: { display: false } },
      // Whole steps (no 0.5 device); with decimal byte units the steps land on round values.
      y: { beginAtZero: true, ticks: { precision: 0, callback: (v) => yFormat(v) } },
    },
    ...extra,
  };
}

function lineSet(label, data, n, extra = {}) {
  return {
    type: "line", label, data, borderColor: PALETTE[n], backgroundColor: PALETTE[n],
    borderWidth: 2, borderDash: DASHES[n % DASHES.length], pointStyle: POINTS[n % POINTS.length],
    pointRadius: data.length > 45 ? 0 : 3, pointHoverRadius: 5, tension: 0, ...extra,
  };
}

function barSet(label, data, n, extra = {}) {
  return {
    type: "bar", label, data, backgroundColor: pattern(PALETTE[n], PATTERNS[n % PATTERNS.length]),
    borderColor: PALETTE[n], borderWidth: 1, pointStyle: "rect", ...extra,
  };
}

function withPrevious(rows, previous, keys) {
  return rows.map((row, n) => {
    const out = { ...row };
    if (previous) {
      const before = previous[n] || {};
      out.previous_date = before.date ?? "";
      for (const key of keys) out[`previous_${key}`] = before[key] ?? null;
    }
    return out;
  });
}

function activityModel(rows, previous) {
  const merged = withPrevious(rows, previous, ["new_devices", "mau"]);
  const columns = [
    { key: "date", csv: "date", label: "Date", kind: "date", format: (v) => v },
    { key: "new_devices", csv: "new_devices", label: "New devices", format: count },
    { key: "mau", csv: "mau", label: "MAU (rolling 30 days)", format: count },
  ];
  if (previous) {
    columns.push(
      { key: "previous_date", csv: "previous_date", label: "Previous period: date", kind: "date", format: (v) => v },
      { key: "previous_new_devices", csv: "previous_new_devices", label: "Previous: new devices", format: count },
      { key: "previous_mau", csv: "previous_mau", label: "Previous: MAU", format: count },
    );
  }
  const last = rows.at(-1);
  const totalNew = rows.reduce((sum, r) => sum + r.new_devices, 0);
  const summary = last
    ? `Rolling MAU ${count(rows[0].mau)} on ${longDay(rows[0].date)} and ${count(last.mau)} on ${longDay(last.date)}; ${count(totalNew)} new devices in the range.`
    : "No data in this range.";
  return { name: "activity", columns, rows: merged, summary };
}

function bytesModel(name, key, label, rows, previous) {
  const merged = withPrevious(rows, previous, [key]);
  const columns = [
    { key: "date", csv: "date", label: "Date", kind: "date", format: (v) => v },
    { key, csv: `${key}_bytes`, label, format: bytes },
  ];
  if (previous) {
    columns.push(
      { key: "previous_date", csv: "previous_date", label: "Previous period: date", kind: "date", format: (v) => v },
      { key: `previous_${key}`, csv: `previous_${key}_bytes`, label: `Previous: ${label.toLowerCase()}`, format: bytes },
    );
  }
  const total = rows.reduce((sum, r) => sum + r[key], 0);
  const last = rows.at(-1);
  const summary = !last ? "No data in this range."
    : key === "storage" ? `Storage ${bytes(rows[0].storage)} on ${longDay(rows[0].date)} and ${bytes(last.storage)} on ${longDay(last.date)}.`
      : `Bandwidth ${bytes(total)} in the range; the busiest day served ${bytes(Math.max(...rows.map((r) => r[key])))}.`;
  return { name, columns, rows: merged, summary };
}

function drawActivity(fig, rows, previous) {
  const model = activityModel(rows, previous);
  const labels = rows.map((r) => shortDay(r.date));
  const datasets = [
    lineSet("MAU (rolling 30 days)", rows.map((r) => r.mau), 0, { yAxisID: "y", order: 0 }),
    barSet("New devices (first time this month)", rows.map((r) => r.new_devices), 1, { yAxisID: "y1", order: 2 }),
  ];
  if (previous) {
    datasets.push(lineSet("MAU, previous period", previous.map((r) => r.mau), 7, {
      // Drawn over the current MAU line, so that equal values stay visible.
      yAxisID: "y", borderDash: [6, 4], pointStyle: "triangle", order: -1,
    }));
  }
  const options = baseOptions(count);
  options.scales.y.title = { display: true, text: "MAU" };
  options.scales.y1 = {
    position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
    title: { display: true, text: "New devices per day" }, ticks: { callback: (v) => count(v) },
  };
  drawChart(fig, model, { data: { labels, datasets }, options });
}

function drawBytes(fig, name, key, label, rows, previous, asBars) {
  const model = bytesModel(name, key, label, rows, previous);
  const labels = rows.map((r) => shortDay(r.date));
  const n = key === "storage" ? 2 : 5;
  const current = asBars
    ? barSet(label, rows.map((r) => r[key]), n)
    : lineSet(label, rows.map((r) => r[key]), n, { stepped: true, fill: { target: "origin" }, backgroundColor: `${PALETTE[n]}33`, pointRadius: rows.length > 45 ? 0 : 2 });
  const datasets = [current];
  if (previous) {
    datasets.push(lineSet(`${label}, previous period`, previous.map((r) => r[key]), 7, {
      borderDash: [6, 4], pointStyle: "triangle", stepped: !asBars,
    }));
  }
  drawChart(fig, model, { data: { labels, datasets }, options: baseOptions(bytes) });
}

function drawVersions(fig, usage) {
  const columns = [{ key: "date", csv: "date", label: "Date", kind: "date", format: (v) => v }];
  usage.datasets.forEach((set, n) => {
    columns.push({ key: `v${n}`, csv: `${set.label} (% of devices)`, label: `${set.label} (%)`, format: percent });
  });
  const rows = usage.labels.map((date, i) => {
    const row = { date };
    usage.datasets.forEach((set, n) => { row[`v${n}`] = set.data[i] ?? 0; });
    return row;
  });
  const lastRow = rows.at(-1);
  let summary = "No version data in this range.";
  if (lastRow && usage.datasets.length) {
    const parts = usage.datasets.map((set, n) => `${set.label} ${percent(lastRow[`v${n}`])}`);
    summary = `Share of active devices per bundle version on ${longDay(lastRow.date)}: ${parts.join(", ")}.`;
  }
  const model = { name: "versions", columns, rows, summary };
  const datasets = usage.datasets.map((set, n) => lineSet(set.label, set.data, n, {
    fill: n === 0 ? "origin" : "-1",
    backgroundColor: pattern(PALETTE[n % PALETTE.length], PATTERNS[n % PATTERNS.length]),
    pointRadius: set.data.length > 45 ? 0 : 2,
    format: percent,
  }));
  const options = baseOptions(percent);
  options.scales.y.stacked = true;
  options.scales.y.max = 100;
  options.scales.y.title = { display: true, text: "% of active devices" };
  drawChart(fig, model, { data: { labels: usage.labels.map(shortDay), datasets }, options });
}

// -- summary cards --------------------------------------------------------------------------

function stat(metric, label, value, format, previous, note) {
  let delta = null;
  if (previous !== undefined && previous !== null) {
    let text;
    if (previous === 0) text = value === 0 ? "no change from 0" : `up from 0`;
    else {
      const change = ((value - previous) / previous) * 100;
      const word = change > 0 ? "up" : change < 0 ? "down" : "no change";
      const arrow = change > 0 ? "▲" : change < 0 ? "▼" : "=";
      text = `${arrow} ${word}${change ? ` ${PCT.format(Math.abs(change))}%` : ""} from ${format(previous)}`;
    }
    delta = el("p", { class: "delta" }, text, el("span", { class: "visually-hidden" }, " in the previous period"));
  }
  return el("div", { class: "stat", dataset: { metric } },
    el("h3", {}, label),
    el("p", { class: "value", dataset: { value: value ?? "" } }, format(value)),
    delta,
    note ? el("p", { class: "hint" }, note) : null);
}

function figures(rows) {
  const last = rows.at(-1) || { mau: 0, storage: 0 };
  const sum = (key) => rows.reduce((total, r) => total + r[key], 0);
  const bandwidth = sum("bandwidth");
  return {
    mau: last.mau, storage: last.storage, bandwidth, newDevices: sum("new_devices"),
    perUser: last.mau ? Math.round(bandwidth / last.mau) : null,
  };
}

function renderSummary(rows, previous) {
  const now = figures(rows);
  const before = previous ? figures(previous) : {};
  const cards = [
    stat("mau", "MAU at end of range", now.mau, count, before.mau, "unique devices in the 30 days to the last day"),
    stat("new_devices", "New devices", now.newDevices, count, before.newDevices, "first check-in of their month"),
    stat("bandwidth", "Bandwidth", now.bandwidth, bytes, before.bandwidth, "bundle bytes served in the range"),
    stat("storage", "Storage at end of range", now.storage, bytes, before.storage, "live bundles, external ones excluded"),
    stat("bandwidth_per_user", "Bandwidth per user", now.perUser, bytes, previous ? before.perUser : undefined, "bandwidth ÷ MAU at end of range"),
  ];
  if (PAGE === "org" && orgApps) {
    const n = orgApps.apps.length;
    const storageNow = orgApps.apps.reduce((total, a) => total + a.storage, 0);
    cards.push(stat("storage_per_app", "Storage per app", n ? Math.round(storageNow / n) : null, bytes, undefined, `now, over ${n} app${n === 1 ? "" : "s"}`));
  }
  if (PAGE === "app" && orgApps) {
    const n = orgApps.apps.length;
    const storageNow = orgApps.apps.reduce((total, a) => total + a.storage, 0);
    const mine = orgApps.apps.find((a) => a.app_id === ID);
    cards.push(stat("storage_per_app", "Storage of this app", mine ? mine.storage : null, bytes, undefined,
      n ? `organization average per app: ${bytes(Math.round(storageNow / n))}` : null));
  }
  document.getElementById("summary").replaceChildren(...cards);
}

// -- org page: plan usage and apps ----------------------------------------------------------

function usageBar(metric, label, figure, format) {
  const pct = figure.percent;
  const level = pct === null || pct === undefined ? "none" : pct >= 100 ? "over" : pct >= 80 ? "warn" : "ok";
  const limitText = figure.limit === null || figure.limit === undefined ? "no limit" : format(figure.limit);
  const pctText = pct === null || pct === undefined ? "" : ` (${percent(pct)})`;
  const tag = level === "over" ? "Over limit" : level === "warn" ? "Near limit" : null;
  const text = level === "none" ? `${format(figure.used)} used, no limit` : `${format(figure.used)} of ${limitText}${pctText}`;
  const fill = el("div", { class: "bar-fill" });
  fill.style.width = `${Math.min(pct ?? 0, 100)}%`;
  const bar = level === "none" ? null : el("div", {
    class: `bar bar-${level}`, role: "progressbar", "aria-label": `${label} used`,
    "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(Math.min(Math.round(pct ?? 0), 100)),
    "aria-valuetext": text,
  }, fill);
  return el("div", { class: "usage-row", dataset: { metric, level } },
    el("div", { class: "usage-label" }, el("strong", {}, label),
      el("span", { class: "usage-value", dataset: { used: figure.used, limit: figure.limit ?? "", percent: pct ?? "" } }, text),
      tag ? el("span", { class: `tag tag-${level}` }, level === "over" ? "⚠ " : "! ", tag) : null),
    bar);
}

// The app page says when the app's organization is locked: its devices get no updates.
async function loadOrgLock() {
  const target = document.getElementById("org-lock");
  const answer = await getJSON(`/dashboard/api/organization/${encodeURIComponent(cfg.org)}/usage`);
  // A key that may not read the org's usage sees no notice rather than an error.
  if (!answer.ok || !answer.body || !answer.body.locked) return;
  const reason = (answer.body.lock_reason || "It is over its plan").replace(/[.!]?\s*$/, ".");
  target.replaceChildren(el("div", { class: "banner banner-locked", role: "alert", id: "lock-banner" },
    el("strong", {}, "⚠ This app's organization is locked. "),
    `${reason} Devices of this app receive no updates and uploads are refused until this is fixed. `,
    el("a", { href: `/dashboard/org/${encodeURIComponent(cfg.org)}` }, "See the organization's plan usage")));
}

async function loadUsage() {
  const target = document.getElementById("usage-body");
  const answer = await getJSON(`/dashboard/api/organization/${encodeURIComponent(ID)}/usage`);
  if (answer.status === 404 && (!answer.body || answer.body.error === "Not Found")) {
    target.replaceChildren(el("p", { class: "hint", id: "usage-missing" }, "Plan usage is not available on this server."));
    return;
  }
  if (!answer.ok) {
    target.replaceChildren(el("p", { class: "banner banner-error", role: "alert" }, `Plan usage: ${errorText(answer)}`));
    return;
  }
  const u = answer.body;
  const parts = [];
  if (u.locked) {
    parts.push(el("div", { class: "banner banner-locked", role: "alert", id: "lock-banner" },
      el("strong", {}, "⚠ This organization is locked. "),
      `${(u.lock_reason || "It is over its plan").replace(/[.!]?\s*$/, ".")} Devices receive no updates and uploads are refused until this is fixed.`));
  }
  const facts = [
    ["Plan", u.plan || "none (unmetered)"],
    ["Billing cycle", `${longDay(u.cycle_start)} – ${longDay(u.cycle_end)}`],
  ];
  if (u.trial_ends) facts.push([u.in_trial === false ? "Trial ended" : "Trial ends", longDay(u.trial_ends)]);
  parts.push(el("dl", { class: "facts" }, facts.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v)))));
  parts.push(usageBar("mau", "Monthly active users", u.mau, count));
  parts.push(usageBar("storage", "Storage", u.storage, bytes));
  parts.push(usageBar("bandwidth", "Bandwidth", u.bandwidth, bytes));
  if (u.emulator_dev) {
    const ratio = (u.emulator_dev.ratio || 0) * 100;
    const threshold = (u.emulator_dev.threshold || 0) * 100;
    const over = threshold && ratio > threshold;
    parts.push(el("p", { class: "hint", id: "emudev" },
      `Emulators and dev builds: ${percent(ratio)} of active devices this cycle (allowed: ${percent(threshold)}`,
      u.emulator_dev.enforced === false ? ", not enforced yet" : "", ")",
      over ? el("strong", {}, " — over the allowed share") : ""));
  }
  if (u.refused_new_devices) {
    parts.push(el("p", { class: "hint", id: "refused-devices" },
      `New devices refused this cycle (too many from one address): ${count(u.refused_new_devices)}. They were not counted.`));
  }
  target.dataset.cycleStart = u.cycle_start;
  target.dataset.cycleEnd = u.cycle_end;
  target.replaceChildren(...parts);
}

function renderApps() {
  const target = document.getElementById("apps-table");
  if (!orgApps) return;
  const rows = orgApps.apps;
  const total = (key) => rows.reduce((sum, a) => sum + a[key], 0);
  const footer = el("tr", {}, el("th", { scope: "row" }, "Total"), el("td"),
    el("td", { class: "num" }, count(total("mau"))), el("td", { class: "num" }, bytes(total("storage"))),
    el("td", { class: "num" }, bytes(total("bandwidth"))));
  target.replaceChildren(rows.length ? sortableTable({
    id: "apps",
    caption: `Billing cycle ${longDay(orgApps.cycle_start)} – ${longDay(orgApps.cycle_end)}. MAU counts each device seen at least once since the cycle started; storage is now; bandwidth is this cycle's.`,
    columns: [
      { key: "name", label: "App", render: (a) => el("a", { href: `/dashboard/app/${encodeURIComponent(a.app_id)}` }, a.name) },
      { key: "app_id", label: "App ID", render: (a) => el("code", {}, a.app_id) },
      { key: "mau", label: "MAU this cycle", num: true, format: count },
      { key: "storage", label: "Storage", num: true, format: bytes },
      { key: "bandwidth", label: "Bandwidth this cycle", num: true, format: bytes },
    ],
    rows, sortKey: "mau", sortDir: "descending", footer,
  }) : el("p", { class: "empty" }, "No apps yet."));
}

// -- app page: bundles ------------------------------------------------------------------------

async function loadBundles() {
  const all = [];
  for (let page = 0; page < 20; page += 1) {
    const answer = await getJSON(`/dashboard/api/bundle?app_id=${encodeURIComponent(ID)}&page=${page}`);
    if (!answer.ok) throw new Error(errorText(answer));
    all.push(...answer.body);
    if (answer.body.length < 50) break;
  }
  return all;
}

function renderBundles() {
  const target = document.getElementById("bundles-table");
  if (!bundles.length) {
    target.replaceChildren(el("p", { class: "empty" }, "No bundles."));
    return;
  }
  const rows = bundles.map((b) => ({ ...b, kind: b.external ? "external" : "stored", created: b.created_at || "" }));
  const stored = rows.filter((b) => !b.external);
  const storedTotal = stored.reduce((sum, b) => sum + b.size, 0);
  target.replaceChildren(
    el("p", { class: "hint" }, `${rows.length} bundle${rows.length === 1 ? "" : "s"}; ${stored.length} stored here (${bytes(storedTotal)}, average ${bytes(stored.length ? Math.round(storedTotal / stored.length) : 0)}). External bundles are served from their own URL and never count in storage or bandwidth.`),
    sortableTable({
      id: "bundles", caption: "Bundles that are not deleted, newest first",
      columns: [
        { key: "version", label: "Version", render: (b) => el("code", {}, b.version) },
        { key: "size", label: "Size", num: true, render: (b) => (b.external && !b.size ? "unknown" : bytes(b.size)) },
        {
          key: "kind", label: "Hosting", render: (b) => (b.external
            ? el("span", { class: "tag tag-external", title: b.external_url || "" }, "↗ External — not counted")
            : el("span", { class: "tag tag-stored" }, "Stored here")),
        },
        { key: "channels", label: "Channels", render: (b) => (b.channels || []).join(", ") || "–" },
        { key: "created", label: "Uploaded (UTC)", render: (b) => (b.created ? b.created.slice(0, 16).replace("T", " ") : "–") },
      ],
      rows, sortKey: "created", sortDir: "descending",
    }));
}

// -- app page: release health and devices ----------------------------------------------------

const OUTCOME_LABELS = [
  ["offered", "Offered"], ["downloaded", "Downloaded"], ["installed", "Installed"],
  ["failed", "Failed"], ["rolled_back", "Rolled back"],
];

// Crash-free devices: of those that ran or installed the version, the share that never crashed.
function crashFree(row) {
  const users = Math.max(row.active, row.installed, row.crashed);
  return users ? Math.round(1000 * (users - row.crashed) / users) / 10 : null;
}

function drawReleaseFunnel(fig, rows) {
  const columns = [
    { key: "version", csv: "version", label: "Version", kind: "date", format: (v) => v },
    ...OUTCOME_LABELS.map(([key, label]) => ({ key, csv: key, label: `${label} (devices)`, format: count })),
  ];
  const summary = rows.length
    ? `Per bundle version, devices offered, that downloaded, installed, failed and rolled back: ${rows.map((r) => `${r.version} ${count(r.offered)} offered, ${count(r.installed)} installed, ${count(r.failed)} failed, ${count(r.rolled_back)} rolled back`).join("; ")}.`
    : "No release data in this range.";
  const model = { name: "releases", columns, rows, summary, sortKey: "version" };
  const datasets = OUTCOME_LABELS.map(([key, label], n) => barSet(label, rows.map((r) => r[key]), n));
  const options = baseOptions(count);
  options.scales.y.title = { display: true, text: "Devices" };
  drawChart(fig, model, { data: { labels: rows.map((r) => r.version), datasets }, options });
}

function drawReleaseQuality(fig, rows) {
  const shown = rows.map((r) => ({ ...r, crash_free: crashFree(r) }));
  const ms = (v) => (v === null || v === undefined ? "–" : `${NUM.format(v)} ms`);
  const columns = [
    { key: "version", csv: "version", label: "Version", kind: "date", format: (v) => v },
    { key: "crash_free", csv: "crash_free_percent", label: "Crash-free devices (%)", format: percent },
    { key: "crashed", csv: "crashed", label: "Crashed (devices)", format: count },
    { key: "launches", csv: "launches", label: "Launches", format: count },
    { key: "launch_ms_p50", csv: "launch_ms_p50", label: "Launch p50", format: ms },
    { key: "launch_ms_p95", csv: "launch_ms_p95", label: "Launch p95", format: ms },
  ];
  const summary = shown.length
    ? `Crash-free devices and launch times per version: ${shown.map((r) => `${r.version} ${percent(r.crash_free)} crash-free, p50 ${ms(r.launch_ms_p50)}, p95 ${ms(r.launch_ms_p95)}`).join("; ")}.`
    : "No release data in this range.";
  const model = { name: "release-quality", columns, rows: shown, summary, sortKey: "version" };
  const labels = shown.map((r) => r.version);
  const datasets = [
    barSet("Crash-free devices (%)", shown.map((r) => r.crash_free), 2, { yAxisID: "y", format: percent, order: 2 }),
    lineSet("Launch p50 (ms)", shown.map((r) => r.launch_ms_p50), 0, { yAxisID: "y1", format: ms, order: 0 }),
    lineSet("Launch p95 (ms)", shown.map((r) => r.launch_ms_p95), 5, { yAxisID: "y1", format: ms, order: 1 }),
  ];
  const options = baseOptions(percent);
  options.scales.y.max = 100;
  options.scales.y.title = { display: true, text: "Crash-free devices (%)" };
  options.scales.y1 = {
    position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
    title: { display: true, text: "Launch time (ms)" }, ticks: { callback: (v) => ms(v) },
  };
  drawChart(fig, model, { data: { labels, datasets }, options });
}

function renderReleaseAlerts(answer) {
  const target = document.getElementById("release-alerts");
  if (!answer.ok) {
    target.replaceChildren(el("p", { class: "banner banner-error", role: "alert" }, `Release alerts: ${errorText(answer)}`));
    return;
  }
  const alerts = answer.body.data;
  target.replaceChildren(...alerts.map((a) => el("p", {
    class: "banner banner-error release-alert", role: "status",
    dataset: { version: a.version, channel: a.channel ?? "", rolledBackTo: a.rolled_back_to ?? "" },
  },
  el("strong", {}, `⚠ Release ${a.version} regressed`),
  ` on ${a.channel ? `channel ${a.channel}` : "no channel"}: ${a.reason} rate ${percent(100 * a.rates[a.reason])} of ${count(a.devices)} installing devices (${a.created_at.slice(0, 16).replace("T", " ")} UTC). `,
  a.rolled_back_to ? el("strong", {}, `Channel ${a.channel} was rolled back to ${a.rolled_back_to}.`) : "No automatic rollback.")));
}

async function loadReleases(range) {
  const id = encodeURIComponent(ID);
  const [answer, alerts] = await Promise.all([
    getJSON(`/dashboard/api/statistics/app/${id}/releases/?${range}`),
    getJSON(`/dashboard/api/app/${id}/release_alerts`),
  ]);
  renderReleaseAlerts(alerts);
  const container = document.getElementById("release-charts");
  if (!answer.ok) {
    container.replaceChildren(el("p", { class: "banner banner-error", role: "alert" }, `Releases: ${errorText(answer)}`));
    return;
  }
  if (!figs.releases || !figs.releases.node.isConnected) {
    figs.releases = figure("releases", "Release funnel", "Per bundle version: unique devices offered the download, that downloaded it, installed it, failed to download or install it, and rolled back (never called notifyAppReady). Emulators and dev builds are not counted.");
    figs.quality = figure("release-quality", "Crash-free devices and launch time", "Per bundle version: the share of devices that ran or installed it without a crash report, and the median and 95th percentile of its launch times (app_launch_ready).");
    container.replaceChildren(figs.releases.node, figs.quality.node);
  }
  const rows = answer.body.data;
  drawReleaseFunnel(figs.releases, rows);
  drawReleaseQuality(figs.quality, rows);
}

async function showDeviceLog(device) {
  const target = document.getElementById("device-log");
  const path = `/dashboard/api/app/${encodeURIComponent(ID)}/devices/${encodeURIComponent(device)}/events?limit=200`;
  const answer = await getJSON(path);
  if (!answer.ok) {
    target.replaceChildren(el("p", { class: "banner banner-error", role: "alert" }, `Events: ${errorText(answer)}`));
    return;
  }
  const rows = answer.body.data.map((e) => ({ ...e, when: e.at, details: e.metadata ? Object.entries(e.metadata).map(([k, v]) => `${k}=${v}`).join(", ") : "" }));
  target.replaceChildren(el("h3", { id: "device-log-h" }, `Events of device ${device}`),
    rows.length ? sortableTable({
      id: "device-events", caption: "Recent plugin events of the device, newest first",
      columns: [
        { key: "when", label: "When (UTC)", render: (e) => e.when.slice(0, 19).replace("T", " ") },
        { key: "action", label: "Action", render: (e) => el("code", {}, e.action) },
        { key: "version_name", label: "Version" },
        { key: "old_version_name", label: "Previous version", render: (e) => e.old_version_name || "–" },
        { key: "details", label: "Details" },
      ],
      rows, sortKey: "when", sortDir: "descending",
    }) : el("p", { class: "empty" }, "No recent events (they are kept for a few days)."));
}

async function searchDevices(query) {
  const target = document.getElementById("device-results");
  const answer = await getJSON(`/dashboard/api/app/${encodeURIComponent(ID)}/devices?search=${encodeURIComponent(query)}`);
  if (!answer.ok) {
    target.replaceChildren(el("p", { class: "banner banner-error", role: "alert" }, `Devices: ${errorText(answer)}`));
    return;
  }
  const rows = answer.body.data.map((d) => ({ ...d, kind: d.is_emulator ? "emulator" : d.is_prod ? "production" : "dev build" }));
  target.dataset.count = String(rows.length);
  target.replaceChildren(rows.length ? sortableTable({
    id: "devices", caption: `Devices${query ? ` matching “${query}”` : ""}, most recently seen first`,
    columns: [
      { key: "device_id", label: "Device", render: (d) => el("button", { type: "button", class: "link", dataset: { device: d.device_id }, onclick: () => showDeviceLog(d.device_id) }, d.device_id) },
      { key: "custom_id", label: "Custom id", render: (d) => d.custom_id || "–" },
      { key: "last_seen", label: "Last seen (UTC)", render: (d) => d.last_seen.slice(0, 16).replace("T", " ") },
      { key: "platform", label: "Platform" },
      { key: "version_name", label: "Version", render: (d) => el("code", {}, d.version_name) },
      { key: "channel", label: "Channel", render: (d) => d.channel || "–" },
      { key: "kind", label: "Build" },
    ],
    rows, sortKey: "last_seen", sortDir: "descending",
  }) : el("p", { class: "empty" }, "No device matches."));
}

function setupDeviceSearch() {
  const form = document.getElementById("device-search");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    searchDevices(form.elements.search.value.trim()).catch((e) => console.error(e));
  });
}

// -- app page: channels -----------------------------------------------------------------------

const PLATFORMS = ["ios", "android", "electron"];
const PLATFORM_NAMES = { ios: "iOS", android: "Android", electron: "Electron" };

function autoUpdateText(c) {
  const rule = c.disable_auto_update || "none";
  const step = rule === "none" ? "Any version" : `No automatic ${rule} upgrade`;
  return c.disable_auto_update_under_native ? `${step}; never below the native build` : step;
}

async function loadChannels() {
  const answer = await getJSON(`/dashboard/api/channel?app_id=${encodeURIComponent(ID)}`);
  if (!answer.ok) throw new Error(errorText(answer));
  return answer.body;
}

function renderChannels(channels) {
  const target = document.getElementById("channels-table");
  if (!channels.length) {
    target.replaceChildren(el("p", { class: "empty" }, "No channels. Uploading a bundle creates the production channel."));
    return;
  }
  const names = (c, prefix) => PLATFORMS.filter((p) => c[`${prefix}${p}`]).map((p) => PLATFORM_NAMES[p]).join(", ") || "–";
  const rows = channels.map((c) => ({
    ...c,
    platforms: names(c, ""),
    public_for: names(c, "public_"),
    self_set: c.allow_device_self_set ? "yes" : "no",
    rule: autoUpdateText(c),
    auto: c.auto_rollback ? "on" : "off",
    version: c.version || "",
  }));
  target.replaceChildren(
    el("p", { class: "hint" }, "Each platform has one public channel: the one devices get when they name none. Devices: those seen in the last 30 days whose last check-in reported running the channel's bundle on a platform it serves (a device counts on every channel serving its bundle)."),
    sortableTable({
      id: "channels", caption: "Channels of this app",
      columns: [
        { key: "channel", label: "Channel", render: (c) => el("code", {}, c.channel) },
        { key: "version", label: "Bundle", render: (c) => (c.version ? el("code", {}, c.version) : "none") },
        { key: "platforms", label: "Platforms" },
        { key: "public_for", label: "Public for" },
        { key: "self_set", label: "Devices may join" },
        { key: "rule", label: "Auto-update" },
        { key: "auto", label: "Auto rollback" },
        { key: "devices", label: "Devices", num: true, format: count },
      ],
      rows, sortKey: "channel", sortDir: "ascending",
    }));
}

// -- range and loading ------------------------------------------------------------------------

function readUrlState() {
  const params = new URLSearchParams(location.search);
  state.compare = params.get("compare") === "1";
  state.from = cfg.from;
  state.to = cfg.to;
}

function validate(from, to) {
  if (!from || !to) return "Choose both dates.";
  if (to > TODAY) return `The range cannot end after today (${TODAY}).`;
  if (from > to) return "The first day must be on or before the last day.";
  const days = spanDays(from, to);
  if (days > MAX_DAYS) return `The range can be at most ${MAX_DAYS} days; this one has ${days}.`;
  return null;
}

function setupRange() {
  const form = document.getElementById("range");
  const error = document.getElementById("range-error");
  const from = form.elements.from;
  const to = form.elements.to;
  const compare = form.elements.compare;
  compare.checked = state.compare;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const problem = validate(from.value, to.value);
    if (problem) {
      error.textContent = problem;
      error.hidden = false;
      from.setAttribute("aria-invalid", "true");
      to.setAttribute("aria-invalid", "true");
      return;
    }
    error.hidden = true;
    from.removeAttribute("aria-invalid");
    to.removeAttribute("aria-invalid");
    state = { from: from.value, to: to.value, compare: compare.checked };
    const params = new URLSearchParams({ from: state.from, to: state.to });
    if (state.compare) params.set("compare", "1");
    history.replaceState(null, "", `${location.pathname}?${params}`);
    loadRange();
  });
  compare.addEventListener("change", () => form.requestSubmit());
  for (const button of form.querySelectorAll("[data-days]")) {
    button.addEventListener("click", () => {
      to.value = TODAY;
      from.value = addDays(TODAY, 1 - Number(button.dataset.days));
      form.requestSubmit();
    });
  }
}

const figs = {};

function buildFigures() {
  const container = document.getElementById("charts");
  const what = PAGE === "org" ? "the organization's apps" : "this app";
  figs.activity = figure("activity", "Active devices",
    `Rolling MAU (unique counted devices in the 30 days to each day) and new devices (devices seen for the first time in their calendar month), summed over ${what}.`);
  figs.storage = figure("storage", "Storage per day", "Bytes of bundles stored at the end of each day (external bundles are not counted).");
  figs.bandwidth = figure("bandwidth", "Bandwidth per day", "Bytes of bundles downloaded each day.");
  const nodes = [figs.activity.node, figs.storage.node, figs.bandwidth.node];
  if (PAGE === "app") {
    figs.versions = figure("versions", "Bundle usage", "Share of active devices on each bundle version per day (builtin: the version shipped in the store build).");
    nodes.splice(1, 0, figs.versions.node);
  }
  container.replaceChildren(...nodes);
}

// The API's per-version rows as chart series: the most used versions, the rest as "other".
const MAX_VERSIONS = 8;

function versionSeries(rows) {
  const totals = new Map();
  for (const row of rows) {
    for (const v of row.versions) totals.set(v.version, (totals.get(v.version) || 0) + v.devices);
  }
  const ranked = [...totals.keys()].sort((a, b) => totals.get(b) - totals.get(a) || a.localeCompare(b));
  const shown = ranked.slice(0, MAX_VERSIONS);
  const rest = ranked.length > MAX_VERSIONS;
  const datasets = shown.map((label) => ({
    label, data: rows.map((row) => row.versions.find((v) => v.version === label)?.share ?? 0),
  }));
  if (rest) {
    datasets.push({
      label: "other",
      data: rows.map((row) => Math.round(row.versions.filter((v) => !shown.includes(v.version))
        .reduce((sum, v) => sum + v.share, 0) * 100) / 100),
    });
  }
  return { labels: rows.map((row) => row.date), datasets };
}

async function loadRange() {
  main.dataset.state = "loading";
  main.setAttribute("aria-busy", "true");
  const scope = PAGE === "org" ? "org" : "app";
  const id = encodeURIComponent(ID);
  const range = `from=${state.from}&to=${state.to}`;
  const compare = state.compare ? "&compare=previous" : "";
  const requests = [getJSON(`/dashboard/api/statistics/${scope}/${id}/?${range}&breakdown=true${compare}`)];
  if (PAGE === "app") requests.push(getJSON(`/dashboard/api/statistics/app/${id}/bundle_usage/?${range}`));
  const [current, versions] = await Promise.all(requests);
  const status = document.getElementById("charts");
  if (!current.ok) {
    status.replaceChildren(el("p", { class: "banner banner-error", role: "alert" }, `Statistics: ${errorText(current)}`));
    document.getElementById("summary").replaceChildren();
    figs.activity = null;
    main.dataset.state = "error";
    main.removeAttribute("aria-busy");
    return;
  }
  if (!figs.activity || !figs.activity.node.isConnected) buildFigures();
  const rows = current.body.data.map((row) => ({ new_devices: 0, ...row }));
  const previous = state.compare ? rows.map((row) => ({ new_devices: 0, ...(row.previous || {}) })) : null;
  renderSummary(rows, previous);
  drawActivity(figs.activity, rows, previous);
  drawBytes(figs.storage, "storage", "storage", "Storage", rows, previous, false);
  drawBytes(figs.bandwidth, "bandwidth", "bandwidth", "Bandwidth", rows, previous, true);
  if (versions) {
    if (versions.ok) drawVersions(figs.versions, versionSeries(versions.body.data));
    else if (versions.status === 404 && (!versions.body || versions.body.error === "Not Found")) {
      figs.versions.tableWrap.replaceChildren(el("p", {}, "Bundle usage is not available on this server."));
    } else figs.versions.tableWrap.replaceChildren(el("p", { role: "alert" }, errorText(versions)));
  }
  if (PAGE === "app") await loadReleases(range);
  main.dataset.loadedFrom = state.from;
  main.dataset.loadedTo = state.to;
  main.dataset.state = "ready";
  main.removeAttribute("aria-busy");
}

async function start() {
  readUrlState();
  setupRange();
  const orgId = PAGE === "org" ? ID : cfg.org;
  const appsAnswer = getJSON(`/dashboard/data/org/${encodeURIComponent(orgId)}/apps`);
  const jobs = [];
  if (PAGE === "org") jobs.push(loadUsage().catch((e) => console.error(e)));
  if (PAGE === "app") jobs.push(loadOrgLock().catch((e) => console.error(e)));
  if (PAGE === "app") {
    setupDeviceSearch();
    jobs.push(loadBundles().then((all) => { bundles = all; renderBundles(); }).catch((e) => {
      document.getElementById("bundles-table").replaceChildren(el("p", { class: "banner banner-error", role: "alert" }, `Bundles: ${e.message}`));
    }));
    jobs.push(loadChannels().then(renderChannels).catch((e) => {
      document.getElementById("channels-table").replaceChildren(el("p", { class: "banner banner-error", role: "alert" }, `Channels: ${e.message}`));
    }));
  }
  const answer = await appsAnswer;
  orgApps = answer.ok ? answer.body : null;
  if (PAGE === "org") {
    if (orgApps) renderApps();
    else document.getElementById("apps-table").replaceChildren(el("p", { class: "banner banner-error", role: "alert" }, `Apps: ${errorText(answer)}`));
  }
  await loadRange();
  await Promise.all(jobs);
  main.dataset.complete = "true";
}

start().catch((error) => {
  if (error.message === "signed out") return;
  main.dataset.state = "error";
  main.append(el("p", { class: "banner banner-error", role: "alert" }, `Could not load the page: ${error.message}`));
});
