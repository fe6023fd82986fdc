// The runs dashboard: metrics across layers, L0 frontiers and a sortable table of every SAE in
// the served sweeps, multiruns and eval runs. Plain SVG; one colour per series
// (served folder x SAE family x location), named in one legend shared by every chart. Error
// bars: ± one standard error over contexts (`<metric>_se`); two rows ticked in the table get
// each metric's paired difference from the server (`/api/compare`); a sweep's matched pairs of
// SAEs (`sweep.match=true`) in a table.
import { getJSON } from "./api.js";
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
  ["probe/loss", "probe loss (nats)", "lower is better"],
  ["sparse_probing/sae_top_1_accuracy", "sparse probing top-1 accuracy", "higher is better"],
  ["absorption/mean_absorption_fraction", "absorption fraction", "lower is better"],
  ["absorption/mean_full_absorption", "full absorption", "lower is better"],
  ["explain/f1", "N2G explanation F1", "higher is better (export.explain=true)"],
  ["explain/f1_weighted", "N2G explanation F1, firings weighted by activation", "higher is better (export.explain=true)"],
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

// One small chart: per series its points (x, y, se, row), joined by a line where
// `lines(points)`, with each series' Pareto line at each layer where `frontier` is given.
function chart({ title, metric, points, xLabel, logX = false, integerX = false, lines = () => true, frontier = null, width = 340, height = 210 }) {
  const pad = { left: 50, right: 12, top: 8, bottom: 34 };
  const w = width - pad.left - pad.right;
  const hgt = height - pad.top - pad.bottom;
  const tx = logX ? Math.log10 : (v) => v;
  const all = points.flatMap((p) => p.points);
  const xs = all.map((p) => tx(p.x));
  const ys = all.flatMap((p) => (finite(p.se) ? [p.y - p.se, p.y + p.se] : [p.y]));
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
    const path = (pts, cls) => s("path", { d: pts.map((p, i) => `${i ? "L" : "M"}${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`).join(" "), class: cls, stroke: series.color, fill: "none" });
    if (lines(sorted)) g.appendChild(path(sorted, "line"));
    if (frontier) { // the series' Pareto line at each layer where it has several SAEs
      for (const layer of new Set(pts.map((p) => p.row.layer))) {
        const line = pareto(pts.filter((p) => p.row.layer === layer), frontier.higherBetter);
        if (line.length > 1) g.appendChild(path(line, "pareto"));
      }
    }
    for (const p of sorted.filter((q) => finite(q.se) && q.se > 0)) {
      g.appendChild(s("line", { x1: X(p.x).toFixed(1), x2: X(p.x).toFixed(1), y1: Y(p.y - p.se).toFixed(1), y2: Y(p.y + p.se).toFixed(1), class: "errbar", stroke: series.color }));
    }
    for (const p of sorted) {
      const dot = s("circle", { cx: X(p.x).toFixed(1), cy: Y(p.y).toFixed(1), r: 3.5, class: "pt", fill: series.color });
      dot.appendChild(s("title", {}, `${series.name} · layer ${p.row.layer}: ${xLabel} ${fmt(p.x, 4)}, ${title} ${fmt(p.y, 4)}${finite(p.se) ? ` ± ${fmt(p.se, 2)}` : ""}`));
      g.appendChild(dot);
    }
    svg.appendChild(g);
  }
  return svg;
}

// The Pareto frontier of points {x: L0, y}: those that no other point beats on both counts
// (no more active latents and a metric at least as good, one of them strictly), by L0.
export function pareto(points, higherBetter) {
  const atLeast = (a, b) => (higherBetter ? a >= b : a <= b);
  const dominated = (p) => points.some((q) => q !== p && q.x <= p.x && atLeast(q.y, p.y) && (q.x < p.x || q.y !== p.y));
  return points.filter((p) => !dominated(p)).sort((a, b) => a.x - b.x);
}

// y at L0 = x on a frontier (sorted by x): linear in log L0 between its neighbours; null where
// x lies outside the frontier's L0 range (never extrapolated).
export function atL0(frontier, x) {
  if (!frontier.length || !(x >= frontier[0].x && x <= frontier[frontier.length - 1].x)) return null;
  const i = frontier.findIndex((p) => p.x >= x);
  const q = frontier[i];
  if (q.x === x) return q.y;
  const p = frontier[i - 1];
  const t = (Math.log(x) - Math.log(p.x)) / (Math.log(q.x) - Math.log(p.x));
  return p.y + t * (q.y - p.y);
}

const FRONTIER = [["downstream/ce_loss_recovered", "CE loss recovered", true], ["reconstruction/nmse", "nmse", false], ["downstream/kl", "KL", false]];

// Per place with a frontier (a family with several SAEs there): each series' frontier metrics
// at the powers of two of L0 that the place's SAEs span; "–" where a series does not cover it.
function matchedL0(rows, series) {
  const places = new Map();
  for (const row of rows.filter((r) => finite(r[L0]) && r[L0] > 0)) {
    const key = `${row.location} · layer ${row.layer}`;
    if (!places.has(key)) places.set(key, []);
    places.get(key).push(row);
  }
  const tables = [];
  for (const [place, here] of places) {
    const groups = series.map((se) => ({ se, rows: here.filter((r) => r.series === se) })).filter((g) => g.rows.length);
    if (!groups.some((g) => g.rows.length > 1)) continue;
    const l0s = here.map((r) => r[L0]);
    const grid = [];
    for (let e = Math.ceil(Math.log2(Math.min(...l0s))); 2 ** e <= Math.max(...l0s); e++) grid.push(2 ** e);
    if (!grid.length) continue;
    const metrics = FRONTIER.filter(([k]) => here.some((r) => finite(r[k])));
    const cells = (g, key, higherBetter) => {
      const line = pareto(g.rows.filter((r) => finite(r[key])).map((r) => ({ x: r[L0], y: r[key] })), higherBetter);
      return grid.map((x) => {
        const y = atL0(line, x);
        return y == null
          ? h("td", { class: "num uncovered", title: line.length ? `not covered: L0 ${fmt(line[0].x, 3)} to ${fmt(line[line.length - 1].x, 3)}` : "no SAE" }, "–")
          : h("td", { class: "num", "data-l0": x }, fmt(y, 4));
      });
    };
    tables.push(h("figure", { class: "matched-l0", "data-place": place },
      h("figcaption", {}, place),
      h("table", { class: "matched-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "series"), h("th", {}, "metric"), grid.map((x) => h("th", { class: "num" }, `L0 = ${x}`)))),
        h("tbody", {}, groups.flatMap((g) => metrics.map(([key, label, better]) => h("tr", { "data-series": g.se.name, "data-metric": key },
          h("td", {}, swatch(g.se.color), " ", g.se.name), h("td", {}, label), cells(g, key, better))))))));
  }
  return tables;
}

// Which series get a line: across layers, a curve (one SAE per layer); against L0, a
// frontier (several SAEs of one family at one layer, e.g. `experiment=tiny_frontier`).
const layersOf = (points) => new Set(points.map((p) => p.row.layer));
const distinctLayers = (points) => layersOf(points).size === points.length;
const oneLayer = (points) => points.length > 1 && layersOf(points).size === 1;

function bySeries(rows, series, xOf, metric) {
  return series
    .map((se) => ({ series: se, points: rows.filter((r) => r.series === se).map((row) => ({ x: xOf(row), y: row[metric], se: row[`${metric}_se`], row })).filter((p) => finite(p.x) && finite(p.y)) }))
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

function table(rows, multiple, onPick) {
  const columns = COLUMNS.filter((c) => (c.key !== "folderName" || multiple) && (!c.num || rows.some((r) => finite(r[c.key]))));
  let sort = { key: null, dir: 1 };
  const picked = []; // the rows ticked for the paired difference, at most two (oldest dropped)
  const pick = (row, on) => {
    const at = picked.indexOf(row);
    if (on && at < 0) picked.push(row);
    if (!on && at >= 0) picked.splice(at, 1);
    if (picked.length > 2) picked.shift();
    body.querySelectorAll("input.pick").forEach((box) => { box.checked = picked.some((r) => rowId(r) === box.value); });
    onPick([...picked]);
  };
  const body = h("tbody");
  const header = h("tr");
  const fill = () => {
    const ordered = sort.key ? [...rows].sort(compare(sort.key, sort.dir)) : rows;
    body.replaceChildren(...ordered.map((row) => h("tr", { "data-run": row.run },
      h("td", {}, h("input", { type: "checkbox", class: "pick", value: rowId(row), checked: picked.includes(row), title: "tick two rows: their paired differences", onchange: (e) => pick(row, e.target.checked) })),
      columns.map((c) => {
        const v = row[c.key];
        const cell = c.key === "folderName" || c.key === "family" ? h("span", {}, swatch(row.series.color), " ", v) : c.num && c.key !== "layer" && c.key !== "n_tokens" ? fmt(v, 4) : v ?? "–";
        const se = row[`${c.key}_se`];
        return h("td", { class: c.num ? "num" : null, title: finite(se) ? `± ${fmt(se, 2)} (standard error)` : null }, cell);
      }),
      h("td", {}, h("a", { href: `/data/${row.folder}/${row.run ? `${row.run.split("/").map(encodeURIComponent).join("/")}/` : ""}metrics.json`, class: "run-link", title: `${row.folderName}/${row.run}` }, row.run || "(this run)")),
      h("td", {}, row.export != null ? h("a", { href: `#/r/${row.export}`, class: "features" }, "features") : h("span", { class: "muted" }, "–")))));
    header.querySelectorAll("th").forEach((th) => th.setAttribute("aria-sort", th.dataset.key === sort.key ? (sort.dir > 0 ? "ascending" : "descending") : "none"));
  };
  header.append(h("th", {}, "pair"), ...columns.map((c) => h("th", { class: c.num ? "num" : null, "data-key": c.key, title: c.hint },
    h("button", { class: "sort", onclick: () => { sort = { key: c.key, dir: sort.key === c.key ? -sort.dir : c.num && !/nmse|delta|kl|dead|ablation|absorption|probe\/loss|layer|tokens/.test(c.key) ? -1 : 1 }; fill(); } }, c.label))),
  h("th", {}, "run"), h("th", {}, "export"));
  fill();
  return h("table", { class: "runs-table" }, h("thead", {}, header), body);
}

const rowId = (row) => `${row.folder}/${row.run}`;

// Each metric's difference between two ticked rows ± its paired standard error (the server
// pairs their per-context values; rows evaluated on different tokens are refused).
async function pairedPanel(picked, panel) {
  if (picked.length < 2) {
    panel.replaceChildren(h("p", { class: "caption muted" }, "Tick two rows of the table: each metric's difference ± its paired standard error (the same contexts, so much smaller than either error bar), significant at 95% when |z| > 1.96."));
    return;
  }
  const [a, b] = picked;
  const name = (r) => `${r.folderName} · ${r.run || "(this run)"}`;
  panel.replaceChildren(h("p", { class: "muted" }, "comparing…"));
  let answer;
  try {
    answer = await getJSON(`/api/compare?a=${encodeURIComponent(rowId(a))}&b=${encodeURIComponent(rowId(b))}`);
  } catch (error) {
    panel.replaceChildren(h("p", { class: "error compare-error" }, String(error.message || error)));
    return;
  }
  const label = Object.fromEntries(METRICS.map(([k, l]) => [k, l]));
  panel.replaceChildren(
    h("p", { class: "caption" }, "A: ", h("b", {}, name(a)), " · B: ", h("b", {}, name(b)), h("span", { class: "muted" }, ` · the same ${answer.n_tokens} tokens`)),
    h("table", { class: "paired-table" },
      h("thead", {}, h("tr", {}, ["metric", "A", "B", "A − B", "± paired SE", "z", "95%"].map((t, i) => h("th", { class: i ? "num" : null }, t)))),
      h("tbody", {}, answer.rows.map((r) => h("tr", { "data-metric": r.metric, class: r.significant ? "significant" : null },
        h("td", {}, label[r.metric] || r.metric),
        h("td", { class: "num" }, fmt(r.a, 4)),
        h("td", { class: "num" }, fmt(r.b, 4)),
        h("td", { class: "num diff" }, fmt(r.difference, 3)),
        h("td", { class: "num se" }, fmt(r.se, 2)),
        h("td", { class: "num" }, r.z == null ? "–" : r.z.toFixed(1)),
        h("td", { class: "num verdict" }, r.significant ? "significant" : "–"))))));
}

const MATCH_COLUMNS = [
  ["matched_above_0.7", "matched > 0.7", "fraction of A's latents whose best match in B has decoder cosine above 0.7"],
  ["matched_above_0.9", "matched > 0.9", "fraction of A's latents whose best match in B has decoder cosine above 0.9"],
  ["split_fraction", "split", "fraction of A's latents with two or more of B's latents above the split threshold"],
  ["mean_cosine", "mean cosine", "mean over A's latents of the cosine of its best match in B"],
  ["mean_correlation", "mean act. corr.", "mean over A's latents (those firing in the correlated tokens, sweep.match_tokens) of the correlation of its activations with its best match's in B"],
];

// The served sweeps' matched pairs (`sweep.match=true`, `matches.json`): one row per pair,
// A's latents matched into B's by decoder cosine; each SAE links to its feature pages where
// its export is served, each pair to its per-latent file.
function matchTable(folders, rows) {
  const body = [];
  for (const folder of folders) {
    const sae = (run) => {
      const row = rows.find((r) => r.folder === folder.index && r.run === run);
      return row?.export != null ? h("a", { href: `#/r/${row.export}`, class: "features" }, run) : run;
    };
    for (const m of folder.matches ?? []) {
      body.push(h("tr", { "data-a": m.a, "data-b": m.b },
        folders.length > 1 ? h("td", {}, baseName(folder.path)) : null,
        h("td", {}, m.place), h("td", {}, sae(m.a)), h("td", {}, sae(m.b)), h("td", { class: "muted" }, m.pairing),
        h("td", { class: "num" }, `${fmt(m.l0_a, 3)} → ${fmt(m.l0_b, 3)}`),
        MATCH_COLUMNS.map(([key]) => h("td", { class: "num", "data-key": key }, fmt(m[key], 3))),
        h("td", {}, h("a", { href: `/data/${folder.index}/${m.file.split("/").map(encodeURIComponent).join("/")}`, class: "match-file" }, "per latent"))));
    }
  }
  if (!body.length) return null;
  const head = [folders.length > 1 ? "folder" : null, "place", "A", "B", "pairing", "L0 A → B"].filter(Boolean).map((t) => h("th", {}, t));
  return section("Latents matched across SAEs",
    h("p", { class: "caption muted" }, "Pairs of SAEs at one place (sweep.match=true): each SAE with its family neighbours in L0 order and with the other families' SAE nearest in L0. For each latent of A, the latent of B with the most similar decoder direction, and how alike their activations are on the sweep's first tokens; per latent: the pair's JSON, and links on the latent pages where both exports are served."),
    h("div", { class: "table-wrap" }, h("table", { class: "match-table" },
      h("thead", {}, h("tr", {}, head, MATCH_COLUMNS.map(([, label, hint]) => h("th", { class: "num", title: hint }, label)), h("th", {}, "file"))),
      h("tbody", {}, body))));
}

function swatch(color) {
  const el = s("svg", { width: 9, height: 9, class: "dot" });
  el.appendChild(s("circle", { cx: 4.5, cy: 4.5, r: 4, fill: color }));
  return el;
}

export function renderRuns(runs) {
  const { folders, rows, series } = collect(runs);
  const paired = h("div", { class: "paired" });
  pairedPanel([], paired);
  if (!rows.length) return h("div", {}, h("h1", {}, "Runs"), h("p", { class: "muted" }, "No evaluation results served: pass a sweep folder (sweep.json), a multirun folder or an eval run folder (metrics.json) to saelab view."));
  const layered = METRICS.filter(([k]) => rows.some((r) => finite(r[k])));
  const missing = METRICS.filter(([k]) => !rows.some((r) => finite(r[k]))).map(([, label]) => label);
  const across = layered.map(([key, label, hint]) => h("figure", { class: "small-chart" },
    h("figcaption", {}, label, " ", h("span", { class: "muted" }, hint)),
    chart({ title: label, metric: key, points: bySeries(rows, series, (r) => r.layer, key), xLabel: "layer", integerX: true, lines: distinctLayers })));
  const frontier = FRONTIER
    .filter(([k]) => rows.some((r) => finite(r[k]) && finite(r[L0])) )
    .map(([key, label, higherBetter]) => h("figure", { class: "small-chart" }, h("figcaption", {}, `${label} against L0`, " ", h("span", { class: "muted" }, "(log x; one point per SAE; a family's SAEs at one layer joined in order of L0, dashed: its Pareto frontier)")),
      chart({ title: label, metric: `frontier:${key}`, points: bySeries(rows, series, (r) => r[L0], key).map((p) => ({ ...p, points: p.points.filter((q) => q.x > 0) })).filter((p) => p.points.length), xLabel: "L0 (log)", logX: true, lines: oneLayer, frontier: { higherBetter }, width: 520, height: 240 })));
  const matched = matchedL0(rows, series);
  return h("div", { class: "dashboard" },
    h("h1", {}, "Runs"),
    h("p", { class: "muted caption" }, `${rows.length} SAE${rows.length === 1 ? "" : "s"} from ${folders.length} folder${folders.length === 1 ? "" : "s"}: `, folders.map((f, i) => [i ? ", " : "", f.path])),
    h("div", { class: "legend-bar" }, legend(series)),
    section("Metrics across layers", h("p", { class: "caption muted" }, "Error bars: ± one standard error over contexts. Whether two SAEs differ: tick both in the table (their paired difference)."), h("div", { class: "charts" }, across), missing.length ? h("p", { class: "caption muted" }, `Not in these runs: ${missing.join(", ")}.`) : null),
    frontier.length ? section("Sparsity frontier", h("div", { class: "two" }, frontier),
      matched.length
        ? [h("h3", {}, "At matched L0"), h("p", { class: "caption muted" }, "Each series' frontier metrics interpolated at shared L0 values, linearly in log L0 between its SAEs on its Pareto line; never extrapolated: – where a series' SAEs do not span that L0 (hover for its range)."), matched]
        : h("p", { class: "caption muted" }, "At matched L0: no series has two SAEs at one place, so there is no frontier to interpolate.")) : null,
    section("Every SAE", h("p", { class: "caption muted" }, "Click a column to sort (again to reverse). run: its metrics.json; export: its feature pages, where an export of the same SAE is served. Hover a value for its standard error."), h("div", { class: "table-wrap" }, table(rows, folders.length > 1, (picked) => pairedPanel(picked, paired)))),
    section("Paired difference", paired),
    matchTable(folders, rows));
}
