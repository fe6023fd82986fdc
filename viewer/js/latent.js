// The latent page: statistics, histogram, logit effects, neighbours and example heatmaps.
// Renders saelab export records and OpenAI's FeatureInfo files through one shape.
import { h, fmt, section } from "./dom.js";
import { decodeWindow, heatmap, visible } from "./tokens.js";
import { histogram } from "./histogram.js";

const STATS = [
  ["density", "density", "fraction of all tokens on which the latent is non-zero"],
  ["mean_act", "mean activation", "mean of the activation over the tokens where it fires"],
  ["mean_act_squared", "E[a²]", "mean squared activation over the tokens where it fires"],
  ["skew", "skew", "E[a³] / E[a²]^1.5 over the tokens where it fires (zero-centred, as OpenAI's viewer)"],
  ["kurtosis", "kurtosis", "E[a⁴] / E[a²]² over the tokens where it fires (zero-centred, as OpenAI's viewer)"],
  ["max_act", "max activation", "largest activation seen in the exported tokens"],
];

function exportExample(vocab, e) {
  return { ...e, ids: e.tokens, pieces: decodeWindow(vocab, e.tokens) };
}

// A saelab export record -> the page's shape (token ids decoded through the vocabulary).
export function fromExport(record, vocab, manifest) {
  const settings = manifest.settings || {};
  const ex = (list) => (list || []).map((e) => exportExample(vocab, e));
  const tokenList = (list) => (list || []).map(([id, v]) => [vocab.string(id), v, id]);
  const explanation = record.explanation && {
    ...record.explanation,
    patterns: (record.explanation.patterns || []).map((p) => ({ ...p, pieces: p.tokens.map((id) => (id == null ? null : vocab.string(id))) })),
  };
  return {
    ...record,
    explanation,
    top: ex(record.top),
    random: ex(record.random),
    intervals: (record.intervals?.bins ?? record.intervals ?? []).map((iv) => ({ ...iv, examples: ex(iv.examples) })),
    logits: { top: tokenList(record.logits?.top), bottom: tokenList(record.logits?.bottom) },
    intervalKind: record.intervals?.kind || settings.intervals,
    n_tokens: manifest.data?.n_tokens,
  };
}

// OpenAI's FeatureInfo (sae-viewer types.ts): strings per token, hist {binIndex: count} with
// bins 0.2 wide (their page hard-codes the width), no logit table or neighbours. Their ablation
// effects sit one token early (index i - 1 is token i); shifted back to align with the tokens.
const unshift = (v) => (v ? [0, ...v.slice(0, -1)] : undefined);

export function fromOpenAI(info, id) {
  const ex = (list) =>
    (list || []).map((s) => ({
      pieces: s.tokens, ids: s.token_ints, acts: s.acts, act: s.act, idx: s.idx, doc: s.doc_id,
      loss_diff: unshift(s.ablate_loss_diff), kl: unshift(s.kl),
    }));
  const bins = Object.keys(info.hist || {}).map(Number).sort((a, b) => a - b);
  let hist = null;
  if (bins.length) {
    const lo = bins[0];
    const hi = bins.at(-1);
    const counts = [];
    for (let b = lo; b <= hi; b++) counts.push(info.hist[b] ?? 0);
    const edges = counts.map((_, i) => (lo + i) * 0.2).concat([(hi + 1) * 0.2]);
    hist = { edges, counts };
  }
  const top = ex(info.top);
  return {
    id, density: info.density, mean_act: info.mean_act, mean_act_squared: info.mean_act_squared,
    skew: info.skew, kurtosis: info.kurtosis,
    max_act: Math.max(0, ...top.map((e) => e.act ?? 0)),
    hist, top, random: ex(info.random), intervals: [], logits: null, neighbours: null,
  };
}

function statsTable(r) {
  const rows = STATS.filter(([key]) => r[key] != null).map(([key, name, meaning]) =>
    h("tr", {}, h("th", { scope: "row", title: meaning }, name), h("td", { class: "num" }, fmt(r[key], 4)), h("td", { class: "muted" }, meaning)),
  );
  if (r.n_tokens) rows.push(h("tr", {}, h("th", { scope: "row", title: "tokens the statistics were computed on" }, "tokens"), h("td", { class: "num" }, r.n_tokens.toLocaleString()), h("td", { class: "muted" }, "tokens the statistics were computed on")));
  return h("table", { class: "stats" }, h("caption", {}, "Statistics of the activation a of this latent"), h("tbody", {}, rows));
}

function tokenTable(title, list, hint) {
  return h("table", { class: "logits" },
    h("thead", {}, h("tr", {}, h("th", { title: hint }, title), h("th", { class: "num" }, "logit"))),
    h("tbody", {}, list.map(([s, v, id]) => h("tr", {}, h("td", {}, h("span", { class: "tok-chip", title: `token ${id}` }, visible(s))), h("td", { class: "num" }, fmt(v, 3))))));
}

function examples(list, max, limit, lossScale = 0) {
  const box = h("div", { class: "examples" });
  const show = (n) => {
    box.replaceChildren(...list.slice(0, n).map((e) => heatmap(e, max, lossScale)));
    if (list.length > n) box.appendChild(h("button", { class: "more", onclick: () => show(list.length) }, `show all ${list.length}`));
  };
  show(limit);
  return box;
}

// Colour the top examples by loss change: kept while the page is open, so it stays across latents.
let byLoss = false;

// The top examples, and with ablation effects a toggle to colour them by loss change instead of
// activation (one scale for all rows: the largest |loss change| among them).
function topExamples(top, max) {
  const scale = Math.max(0, ...top.flatMap((e) => (e.loss_diff ?? []).map(Math.abs)));
  const box = examples(top, max, 10, scale);
  const hover = "hover a token for its activation";
  if (!top.some((e) => e.loss_diff)) {
    return [h("p", { class: "caption muted" }, `The windows with the largest activations; the outlined token is the one selected; colour is activation / max activation; ${hover}; ↵ is a newline.`), box];
  }
  box.classList.toggle("by-loss", byLoss);
  const toggle = h("input", { type: "checkbox", id: "by-loss", checked: byLoss, onchange: () => { byLoss = toggle.checked; box.classList.toggle("by-loss", byLoss); } });
  return [
    h("p", { class: "caption muted" }, `The windows with the largest activations; the outlined token is the one selected; colour is activation / max activation, or the loss change below; ${hover}, the loss change with the latent removed at the outlined token and the KL divergence of the prediction (nats; only the tokens after it can change); ↵ is a newline.`),
    h("div", { class: "controls" }, h("label", {}, toggle, " colour by loss change instead of activation"),
      h("span", { class: "caption muted" }, `blue: removing the latent raises the token's loss (the latent helped), red: lowers it; scale ±${fmt(scale, 3)} nats`)),
    box,
  ];
}

const SCORES = [
  ["precision", "precision", "of the held-out tokens the explanation predicts, the fraction where the latent fires"],
  ["recall", "recall", "of the held-out tokens where the latent fires, the fraction the explanation predicts"],
  ["f1", "F1", "harmonic mean of precision and recall"],
  ["recall_weighted", "recall (weighted)", "recall with each held-out firing counted by its activation: strong firings count more"],
  ["f1_weighted", "F1 (weighted)", "harmonic mean of precision and weighted recall"],
  ["correlation", "correlation", "Pearson correlation of predicted and actual activations on the held-out tokens"],
];

// One N2G pattern as text: "…" unless it must begin the context, ⟨any⟩ for a wildcard, each
// token quoted, then the activation it predicts at its last token.
function patternRow(p) {
  const parts = [p.start ? h("span", { class: "start", title: "only at the start of a context" }, "⟨start⟩") : h("span", { class: "any", title: "any tokens before" }, "…")];
  p.pieces.forEach((piece, i) => parts.push(piece == null ? h("span", { class: "any", title: "any token" }, "⟨any⟩") : h("span", { class: "tok-chip", title: `token ${p.tokens[i]}` }, JSON.stringify(visible(piece)))));
  return h("div", { class: "pattern" }, parts, h("span", { class: "arrow" }, "→"), h("span", { class: "num" }, fmt(p.act, 3)));
}

function explanationPanel(x) {
  const scored = x.f1 != null;
  const scores = scored
    ? h("table", { class: "explain-scores" }, h("tbody", {}, h("tr", {}, SCORES.map(([key, name, hint]) => [h("th", { scope: "row", title: hint }, name), h("td", { class: "num", "data-score": key }, fmt(x[key], 3))]))))
    : h("p", { class: "muted" }, "Not scored: no held-out example of this latent.");
  return section("Explanation (N2G)",
    h("p", { class: "caption muted" }, "Patterns built as OpenAI's N2G builds them from the top and random examples: the shortest suffix keeping half the activation, tokens whose replacement keeps over half of it shown as ⟨any⟩. A pattern predicts the activation after the arrow at its last token; the longest matching pattern wins. Scored on held-out examples and windows where the latent is silent; tokens the explanation predicts are underlined in blue in the examples below."),
    scores,
    h("div", { class: "patterns" }, x.patterns.map(patternRow)));
}

// Links to this latent's matches in other served SAEs (`/api/matches`): its best match in each
// SAE matched from it, and the latents of other SAEs whose best match it is.
function crossMatches(matches) {
  return section("Matches in other SAEs",
    h("p", { class: "caption muted" }, "By cosine similarity of decoder directions (saelab match): this latent's best match in another SAE, or a latent there whose best match is this one; from a sweep, act. corr. is how alike the two latents' activations are on its first tokens (sweep.match_tokens)."),
    h("ul", { class: "cross-matches" }, matches.map((m) => h("li", { "data-export": m.export, "data-direction": m.direction },
      h("a", { href: `#/r/${m.export}/l/${m.latent}`, class: "cross-match", title: m.title }, `${m.label} #${m.latent}`), " ",
      h("span", { class: "muted" }, `cos ${fmt(m.cosine, 3)} · ${m.direction === "best" ? "its best match" : "matched to this"}${"correlation" in m ? ` · act. corr. ${fmt(m.correlation, 3)}` : ""}`)))));
}

export function renderLatent(r, { link, title, subtitle, matches = [] }) {
  const max = r.max_act || Math.max(0, ...r.top.map((e) => e.act ?? 0));
  const parts = [h("h1", {}, title), subtitle ? h("p", { class: "muted" }, subtitle) : null];
  const left = [section("Statistics", statsTable(r))];
  if (r.hist?.counts?.length) {
    left.push(section("Activation histogram", histogram(r.hist), h("p", { class: "caption muted" }, "Counts of the non-zero activations in each bin, on a log scale; bins as stored in the data. Hover a bar for its count.")));
  }
  const right = [];
  if (r.logits?.top?.length) {
    right.push(section("Logit effect", h("p", { class: "caption muted" }, "Tokens whose logits the latent's decoder direction raises and lowers most (through the final layer norm scale and the unembedding)."),
      h("div", { class: "two" }, tokenTable("promotes", r.logits.top, "largest direct logit effect"), tokenTable("suppresses", r.logits.bottom, "most negative direct logit effect"))));
  }
  if (r.neighbours?.length) {
    right.push(section("Nearest latents", h("p", { class: "caption muted" }, "By cosine similarity of decoder directions."),
      h("ul", { class: "neighbours" }, r.neighbours.map(([id, cos]) => h("li", {}, h("a", { href: link(id) }, `#${id}`), " ", h("span", { class: "muted" }, `cos ${fmt(cos, 3)}`))))));
  }
  if (matches.length) right.push(crossMatches(matches));
  parts.push(h("div", { class: "grid" }, h("div", {}, left), h("div", {}, right)));
  if (r.explanation) parts.push(explanationPanel(r.explanation));
  parts.push(section(`Top activations (${r.top.length})`, topExamples(r.top, max)));
  if (r.intervals?.length) {
    const kind = r.intervalKind === "equal_width" ? "equal-width intervals of [0, max]" : r.intervalKind === "quantile" ? "quantile intervals of a random sample of positive activations" : `intervals (${r.intervalKind ?? "kind not stated"})`;
    parts.push(section("Examples by activation interval", h("p", { class: "caption muted interval-kind" }, `Intervals are ${kind}.`),
      r.intervals.map((iv) => h("div", { class: "interval" }, h("h3", {}, `Interval ${fmt(iv.lo, 3)} – ${fmt(iv.hi, 3)}`, iv.share != null ? ` (${fmt(100 * iv.share, 2)}% of activations)` : ""), examples(iv.examples, max, 5)))));
  }
  if (r.random?.length) {
    parts.push(section(`Random positive activations (${r.random.length})`, h("p", { class: "caption muted" }, "Drawn uniformly from the tokens where the latent fires."), examples(r.random, max, 5)));
  }
  return h("article", { class: "latent" }, parts);
}
