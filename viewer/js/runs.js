// The runs dashboard: metrics across layers, L0 frontiers and a sortable table of every SAE in
// the served sweeps, multiruns and eval runs. Plain SVG; one colour per series
// (served folder x SAE family x location), named in one legend shared by every chart.
import { fmt, h, section } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#0969da", "#d1242f", "#1a7f37", "#8250df", "#bc4c00", "#0a7b83", "#bf3989", "#6e7781", "#9a6700", "#1b1f24"];
export const METRICS = [
  ["reconstruction/nmse", "nmse", "lower is better"],
  ["reconstruction/explained_variance", "explained variance", "higher is better"],
  ["downstream/ce_loss_recovered", "CE loss recovered", "higher is better"],
  ["downstream/delta_ce", "Δ CE (nats)", "lower is better"],
  ["downstream/kl", "KL (nats)", "lower is better"],
  ["sparsity/l0", "L0", "active latents per token"],
  ["density/dead_fraction", "dead fraction", "latents that never fired"],
  ["explain/f1", "N2G explanation F1", "higher is better (export.explain=true)"],
  ["ablation_sparsity/mean", "ablation sparsity", "lower is sparser (evals=[ablation_sparsity])"],
];
const L0 = "sparsity/l0";

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text != null) el.textContent = text;
  return el;
}

const finite = (v) => typeof v === "number" && Number.isFinite(v);
const baseName = (path) => path.split(/[\\/]/).filter(Boolean).pop() || path;

// Every row of every served results folder, tagged with its folder and series.
export function collect(runs) {
  const folders = runs.filter((r) => r.kind === "results" && r.parent == null);
  const names = folders.map((r) => baseName(r.path));
  const label = (r, i) => (names.filter((n) => n === names[i]).length > 1 ? `${names[i]} (#${r.index})` : names[i]);
  const rows = [];
  const series = new Map();
  folders.forEach((run, i) => {
    for (const row of run.rows) {
      const key = `${run.index}|${row.family}|${row.location}`;
      if (!series.has(key)) {
        const name = `${row.family} · ${row.location}`;
        series.set(key, { key, name: folders.length > 1 ? `${label(run, i)} · ${name}` : name, color: PALETTE[series.size % PALETTE.length] });
      }
      rows.push({ ...row, folder: run.index, folderName: label(run, i), series: series.get(key) });
    }
  });
  return { folders, rows, series: [...series.values()] };
}

function ticks(lo, hi, n) {
  if (lo === hi) return [lo];
  const step = 10 ** Math.floor(Math.log10((hi - lo) / n));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((st) => (hi - lo) / st <= n) ?? step * 10;
  const out = [];
  for (let v = Math.ceil(lo / nice) * nice; v <= hi + nice * 1e-9; v += nice) out.push(Number(v.toPrecision(12)));
  return out;
}

// One small chart: per series its points (x, y, row), joined by a line when `lines`.
function chart({ title, metric, points, xLabel, logX = false, integerX = false, lines = true, width = 340, height = 210 }) {
  const pad = { left: 50, right: 12, top: 8, bottom: 34 };
  const w = width - pad.left - pad.right;
  const hgt = height - pad.top - pad.bottom;
  const tx = logX ? Math.log10 : (v) => v;
  const all = points.flatMap((p) => p.points);
  const xs = all.map((p) => tx(p.x));
  const ys = all.map((p) => p.y);
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) { x0 -= integerX ? 1 : 0.5; x1 += integerX ? 1 : 0.5; }
  if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 0.1; y0 -= d; y1 += d; }
  const ypad = (y1 - y0) * 0.08;
  y0 -= ypad; y1 += ypad;
  const xpad = (x1 - x0) * 0.05;
  x0 -= xpad; x1 += xpad;
  const X = (v) => pad.left + ((tx(v) - x0) / (x1 - x0)) * w;
  const Y = (v) => pad.top + hgt - ((v - y0) / (y1 - y0)) * hgt;

  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "data-metric": metric });
  svg.appendChild(s("title", {}, title));
  for (const v of ticks(y0, y1, 4)) {
    svg.appendChild(s("line", { x1: pad.left, x2: pad.left + w, y1: Y(v), y2: Y(v), class: "grid" }));
    svg.appendChild(s("text", { x: pad.left - 5, y: Y(v) + 4, class: "tick", "text-anchor": "end" }, fmt(v, 3)));
  }
  const xticks = logX
    ? ticks(Math.floor(x0), Math.ceil(x1), 6).filter((e) => e >= x0 - 1e-9 && e <= x1 + 1e-9 && Number.isInteger(e)).map((e) => 10 ** e)
    : ticks(x0, x1, 6).filter((v) => !integerX || Number.isInteger(v));
  if (logX && xticks.length < 2) xticks.splice(0, xticks.length, 10 ** x0, 10 ** ((x0 + x1) / 2), 10 ** x1);
  for (const v of xticks) {
    svg.appendChild(s("line", { x1: X(v), x2: X(v), y1: pad.top, y2: pad.top + hgt, class: "grid" }));
    svg.appendChild(s("text", { x: X(v), y: pad.top + hgt + 14, class: "tick", "text-anchor": "middle" }, fmt(v, 2)));
  }
  svg.appendChild(s("line", { x1: pad.left, x2: pad.left + w, y1: pad.top + hgt, y2: pad.top + hgt, class: "axis" }));
  svg.appendChild(s("line", { x1: pad.left, x2: pad.left, y1: pad.top, y2: pad.top + hgt, class: "axis" }));
  svg.appendChild(s("text", { x: pad.left + w / 2, y: height - 4, class: "axis-label", "text-anchor": "middle" }, xLabel));
  for (const { series, points: pts } of points) {
    const g = s("g", { class: "series", "data-series": series.name });
    const sorted = [...pts].sort((a, b) => a.x - b.x);
    if (lines) {
      const d = sorted.map((p, i) => `${i ? "L" : "M"}${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`).join(" ");
      g.appendChild(s("path", { d, class: "line", stroke: series.color, fill: "none" }));
    }
    for (const p of sorted) {
      const dot = s("circle", { cx: X(p.x).toFixed(1), cy: Y(p.y).toFixed(1), r: 3.5, class: "pt", fill: series.color });
      dot.appendChild(s("title", {}, `${series.name} · layer ${p.row.layer}: ${xLabel} ${fmt(p.x, 4)}, ${title} ${fmt(p.y, 4)}`));
      g.appendChild(dot);
    }
    svg.appendChild(g);
  }
  return svg;
}

function bySeries(rows, series, xOf, yOf) {
  return series
    .map((se) => ({ series: se, points: rows.filter((r) => r.series === se).map((row) => ({ x: xOf(row), y: yOf(row), row })).filter((p) => finite(p.x) && finite(p.y)) }))
    .filter((p) => p.points.length);
}

function legend(series) {
  return h("ul", { class: "legend" }, series.map((se) => {
    const swatch = s("svg", { width: 22, height: 10, class: "swatch" });
    swatch.appendChild(s("line", { x1: 1, x2: 21, y1: 5, y2: 5, stroke: se.color, "stroke-width": 2.5 }));
    swatch.appendChild(s("circle", { cx: 11, cy: 5, r: 3.5, fill: se.color }));
    return h("li", { "data-series": se.name }, swatch, se.name);
  }));
}

const COLUMNS = [
  { key: "folderName", label: "folder" },
  { key: "family", label: "family" },
  { key: "location", label: "location" },
  { key: "layer", label: "layer", num: true },
  { key: "sparsity/l0", label: "L0", num: true },
  ...METRICS.filter(([k]) => k !== L0).map(([key, label, hint]) => ({ key, label, num: true, hint })),
  { key: "n_tokens", label: "tokens", num: true },
];

function compare(key, dir) {
  return (a, b) => {
    const [x, y] = [a[key], b[key]];
    const missing = (v) => v == null || (typeof v === "number" && !Number.isFinite(v));
    if (missing(x) || missing(y)) return missing(x) - missing(y); // missing values last
    return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * dir;
  };
}

function table(rows, multiple) {
  const columns = COLUMNS.filter((c) => (c.key !== "folderName" || multiple) && (!c.num || rows.some((r) => finite(r[c.key]))));
  let sort = { key: null, dir: 1 };
  const body = h("tbody");
  const header = h("tr");
  const fill = () => {
    const ordered = sort.key ? [...rows].sort(compare(sort.key, sort.dir)) : rows;
    body.replaceChildren(...ordered.map((row) => h("tr", { "data-run": row.run },
      columns.map((c) => {
        const v = row[c.key];
        const cell = c.key === "folderName" || c.key === "family" ? h("span", {}, swatch(row.series.color), " ", v) : c.num && c.key !== "layer" && c.key !== "n_tokens" ? fmt(v, 4) : v ?? "–";
        return h("td", { class: c.num ? "num" : null }, cell);
      }),
      h("td", {}, h("a", { href: `/data/${row.folder}/${row.run ? `${row.run.split("/").map(encodeURIComponent).join("/")}/` : ""}metrics.json`, class: "run-link", title: `${row.folderName}/${row.run}` }, row.run || "(this run)")),
      h("td", {}, row.export != null ? h("a", { href: `#/r/${row.export}`, class: "features" }, "features") : h("span", { class: "muted" }, "–")))));
    header.querySelectorAll("th").forEach((th) => th.setAttribute("aria-sort", th.dataset.key === sort.key ? (sort.dir > 0 ? "ascending" : "descending") : "none"));
  };
  header.append(...columns.map((c) => h("th", { class: c.num ? "num" : null, "data-key": c.key, title: c.hint },
    h("button", { class: "sort", onclick: () => { sort = { key: c.key, dir: sort.key === c.key ? -sort.dir : c.num && !/nmse|delta|kl|dead|ablation|layer|tokens/.test(c.key) ? -1 : 1 }; fill(); } }, c.label))),
  h("th", {}, "run"), h("th", {}, "export"));
  fill();
  return h("table", { class: "runs-table" }, h("thead", {}, header), body);
}

function swatch(color) {
  const el = s("svg", { width: 9, height: 9, class: "dot" });
  el.appendChild(s("circle", { cx: 4.5, cy: 4.5, r: 4, fill: color }));
  return el;
}

export function renderRuns(runs) {
  const { folders, rows, series } = collect(runs);
  if (!rows.length) return h("div", {}, h("h1", {}, "Runs"), h("p", { class: "muted" }, "No evaluation results served: pass a sweep folder (sweep.json), a multirun folder or an eval run folder (metrics.json) to saelab view."));
  const layered = METRICS.filter(([k]) => rows.some((r) => finite(r[k])));
  const missing = METRICS.filter(([k]) => !rows.some((r) => finite(r[k]))).map(([, label]) => label);
  const across = layered.map(([key, label, hint]) => h("figure", { class: "small-chart" },
    h("figcaption", {}, label, " ", h("span", { class: "muted" }, hint)),
    chart({ title: label, metric: key, points: bySeries(rows, series, (r) => r.layer, (r) => r[key]), xLabel: "layer", integerX: true })));
  const frontier = [["downstream/ce_loss_recovered", "CE loss recovered"], ["reconstruction/nmse", "nmse"]]
    .filter(([k]) => rows.some((r) => finite(r[k]) && finite(r[L0])) )
    .map(([key, label]) => h("figure", { class: "small-chart" }, h("figcaption", {}, `${label} against L0`, " ", h("span", { class: "muted" }, "(log x; one point per SAE)")),
      chart({ title: label, metric: `frontier:${key}`, points: bySeries(rows, series, (r) => r[L0], (r) => r[key]).map((p) => ({ ...p, points: p.points.filter((q) => q.x > 0) })).filter((p) => p.points.length), xLabel: "L0 (log)", logX: true, lines: false, width: 520, height: 240 })));
  return h("div", { class: "dashboard" },
    h("h1", {}, "Runs"),
    h("p", { class: "muted caption" }, `${rows.length} SAE${rows.length === 1 ? "" : "s"} from ${folders.length} folder${folders.length === 1 ? "" : "s"}: `, folders.map((f, i) => [i ? ", " : "", f.path])),
    h("div", { class: "legend-bar" }, legend(series)),
    section("Metrics across layers", h("div", { class: "charts" }, across), missing.length ? h("p", { class: "caption muted" }, `Not in these runs: ${missing.join(", ")}.`) : null),
    frontier.length ? section("Sparsity frontier", h("div", { class: "two" }, frontier)) : null,
    section("Every SAE", h("p", { class: "caption muted" }, "Click a column to sort (again to reverse). run: its metrics.json; export: its feature pages, where an export of the same SAE is served."), h("div", { class: "table-wrap" }, table(rows, folders.length > 1))));
}
