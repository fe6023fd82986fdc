// The activation histogram as plain SVG: bins exactly as stored in the data, counts on a
// log scale (log10(1 + count)), so rare large activations stay visible next to the bulk.
const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text != null) el.textContent = text;
  return el;
}

const label = (x) => (Math.abs(x) >= 100 || x === 0 ? x.toFixed(0) : Number(x.toPrecision(2)).toString());

function logSpaced(edges) {
  if (edges.length < 4 || edges[0] <= 0) return false;
  const r1 = edges[1] / edges[0];
  const r2 = edges.at(-1) / edges.at(-2);
  return r1 > 1.05 && Math.abs(Math.log(r1) - Math.log(r2)) < 0.05 * Math.log(r1);
}

export function histogram({ edges, counts }, { width = 680, height = 200 } = {}) {
  const pad = { left: 48, right: 12, top: 10, bottom: 36 };
  const w = width - pad.left - pad.right;
  const hgt = height - pad.top - pad.bottom;
  const logX = logSpaced(edges);
  const tx = logX ? Math.log10 : (v) => v;
  const x0 = tx(edges[0]);
  const x1 = tx(edges.at(-1));
  const X = (v) => pad.left + ((tx(v) - x0) / (x1 - x0 || 1)) * w;
  const top = Math.max(1, ...counts);
  const Y = (c) => pad.top + hgt - (Math.log10(1 + c) / Math.log10(1 + top)) * hgt;

  const svg = s("svg", { class: "hist", viewBox: `0 0 ${width} ${height}`, role: "img" });
  svg.appendChild(s("title", {}, `activation histogram (${counts.length} bins, log-scale counts)`));
  for (let p = 1; p <= top * 1.0001; p *= 10) {
    const y = Y(p);
    svg.appendChild(s("line", { x1: pad.left, x2: pad.left + w, y1: y, y2: y, class: "grid" }));
    svg.appendChild(s("text", { x: pad.left - 6, y: y + 4, class: "tick", "text-anchor": "end" }, p >= 1e4 ? `1e${Math.round(Math.log10(p))}` : p));
  }
  counts.forEach((c, i) => {
    if (!c) return;
    const xa = X(edges[i]);
    const xb = X(edges[i + 1]);
    const bar = s("rect", { x: xa, y: Y(c), width: Math.max(1, xb - xa - 0.5), height: pad.top + hgt - Y(c), class: "bar" });
    bar.appendChild(s("title", {}, `[${label(edges[i])}, ${label(edges[i + 1])}): ${c}`));
    svg.appendChild(bar);
  });
  const ticks = 6;
  for (let i = 0; i <= ticks; i++) {
    const v = logX ? 10 ** (x0 + ((x1 - x0) * i) / ticks) : edges[0] + ((edges.at(-1) - edges[0]) * i) / ticks;
    svg.appendChild(s("text", { x: X(v), y: pad.top + hgt + 16, class: "tick", "text-anchor": "middle" }, label(v)));
  }
  svg.appendChild(s("line", { x1: pad.left, x2: pad.left + w, y1: pad.top + hgt, y2: pad.top + hgt, class: "axis" }));
  svg.appendChild(s("text", { x: pad.left + w / 2, y: height - 4, class: "axis-label", "text-anchor": "middle" }, `activation${logX ? " (log-spaced bins)" : ""}`));
  svg.appendChild(s("text", { x: 12, y: pad.top + hgt / 2, class: "axis-label", "text-anchor": "middle", transform: `rotate(-90 12 ${pad.top + hgt / 2})` }, "count (log)"));
  return svg;
}
