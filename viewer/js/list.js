// The latent list of an export: sort and filter by density and mean activation, jump to an
// id, a random latent, dead and dense latents, and search by token from the export's index.
import { h, fmt, section } from "./dom.js";
import { runFile, vocab as loadVocab } from "./api.js";
import { visible } from "./tokens.js";

const DENSE = 0.1; // fires on more than 10% of tokens, as saelab eval's density plugin counts
const PAGE = 200;

export async function renderList(run, go) {
  const index = run.index;
  const [table, vocab] = await Promise.all([runFile(index, "latents.json"), loadVocab(index)]);
  const n = table.density.length;
  const ids = [...Array(n).keys()];
  const dead = ids.filter((i) => table.density[i] === 0);
  const dense = ids.filter((i) => table.density[i] > DENSE);
  const m = run.manifest;
  const link = (id) => `#/r/${index}/l/${id}`;

  const f1 = table.explain_f1; // with explanations: F1 per latent, null where not scored
  const state = { show: "all", sort: "density", desc: true, minDensity: "", maxDensity: "", minMean: "", minF1: "", limit: PAGE };
  const body = h("tbody");
  const count = h("span", { class: "muted" });
  const rows = () => {
    let list = state.show === "dead" ? dead : state.show === "dense" ? dense : state.show === "alive" ? ids.filter((i) => table.density[i] > 0) : ids;
    const num = (s) => (s === "" ? null : Number(s));
    const [lo, hi, mm, mf] = [num(state.minDensity), num(state.maxDensity), num(state.minMean), num(state.minF1)];
    list = list.filter((i) => (lo == null || table.density[i] >= lo) && (hi == null || table.density[i] <= hi) && (mm == null || table.mean_act[i] >= mm) && (mf == null || (f1 && f1[i] != null && f1[i] >= mf)));
    const key = state.sort === "id" ? null : table[state.sort];
    const value = (i) => (key ? key[i] ?? -Infinity : i); // unscored latents sort last
    const order = (a, b) => (value(a) === value(b) ? a - b : value(a) < value(b) ? -1 : 1);
    list = [...list].sort((a, b) => order(a, b) * (state.desc ? -1 : 1));
    return list;
  };
  const draw = () => {
    const list = rows();
    count.textContent = `${list.length.toLocaleString()} of ${n.toLocaleString()} latents`;
    body.replaceChildren(...list.slice(0, state.limit).map((i) => h("tr", {},
      h("td", {}, h("a", { href: link(i) }, `#${i}`)),
      h("td", { class: "num" }, fmt(table.density[i], 3)),
      h("td", { class: "num" }, fmt(table.mean_act[i], 3)),
      h("td", { class: "num" }, table.max_act ? fmt(table.max_act[i], 3) : "–"),
      h("td", {}, table.top_token && table.top_token[i] != null && table.top_token[i] >= 0 ? h("span", { class: "tok-chip" }, visible(vocab.string(table.top_token[i]))) : ""),
      f1 ? h("td", { class: "num f1" }, f1[i] == null ? "–" : fmt(f1[i], 3)) : null,
    )));
    if (list.length > state.limit) body.appendChild(h("tr", {}, h("td", { colspan: f1 ? 6 : 5 }, h("button", { class: "more", onclick: () => { state.limit += PAGE * 5; draw(); } }, `show more (${list.length - state.limit} hidden)`))));
  };
  const header = (key, label, hint) => h("th", { class: key === "id" || key === "top" ? "" : "num", title: hint },
    key === "top" ? label : h("button", { class: "sort", onclick: () => { state.desc = state.sort === key ? !state.desc : key !== "id"; state.sort = key; draw(); } }, label));
  const input = (key, placeholder, hint) => h("input", { type: "number", step: "any", placeholder, title: hint, class: "small", oninput: (e) => { state[key] = e.target.value; draw(); } });
  const pick = h("select", { onchange: (e) => { state.show = e.target.value; draw(); }, "aria-label": "show" },
    h("option", { value: "all" }, "all latents"), h("option", { value: "alive" }, "alive"),
    h("option", { value: "dead" }, `dead (${dead.length})`), h("option", { value: "dense" }, `dense > 10% (${dense.length})`));
  const jump = h("input", { type: "number", min: 0, max: n - 1, placeholder: "latent id", class: "small", id: "jump" });
  const controls = h("div", { class: "controls" },
    h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); if (jump.value !== "") go(link(Number(jump.value))); } }, jump, h("button", {}, "Go")),
    h("button", { onclick: () => go(link(Math.floor(Math.random() * n))) , id: "random" }, "Random latent"),
    pick, input("minDensity", "density ≥", "minimum density (fraction of tokens)"), input("maxDensity", "density ≤", "maximum density"), input("minMean", "mean act ≥", "minimum mean activation"),
    f1 ? input("minF1", "F1 ≥", "minimum F1 of the latent's explanation (explained, scored latents only)") : null, count);

  const title = `${m.model ?? "model"} · ${m.hook ?? ""}`;
  const facts = [`SAE ${m.sae?.source ?? "?"}`, m.sae?.sha256 ? `sha256 ${m.sae.sha256.slice(0, 12)}…` : null, m.data ? `${(m.data.n_tokens ?? 0).toLocaleString()} tokens of ${m.data.name}` : null, `${n.toLocaleString()} latents, ${dead.length} dead, ${dense.length} dense`].filter(Boolean);
  draw();
  return h("div", {},
    h("h1", {}, title), h("p", { class: "muted" }, facts.join(" · ")),
    searchPanel(index, vocab, link, Boolean(m.files?.explain)),
    section("Latents", controls, h("table", { class: "list" },
      h("thead", {}, h("tr", {}, header("id", "latent", "sort by id"), header("density", "density", "fraction of tokens on which it fires"), header("mean_act", "mean act", "mean activation where it fires"), header("max_act", "max act", "largest activation"), header("top", "top token", "the token of its top example"),
        f1 ? header("explain_f1", "explanation F1", "F1 of its N2G explanation on held-out tokens (– where not scored)") : null)), body)));
}

// Search by token or string: matching vocabulary entries (exact first), then from the
// export's index the latents that fire most on each, and (with explanations) the latents
// whose explanation names the token.
function searchPanel(index, vocab, link, explained) {
  const results = h("div", { class: "search-results" });
  const box = h("input", { type: "search", placeholder: "token or string, e.g. ' the'", id: "search", size: 28 });
  const run = async () => {
    const q = box.value;
    if (!q) return results.replaceChildren();
    const [idx, byExplanation] = await Promise.all([runFile(index, "search.json"), explained ? runFile(index, "explain.json") : {}]);
    const known = (id) => idx[id]?.length || byExplanation[id]?.length;
    const best = (id) => idx[id]?.[0]?.[1] ?? 0;
    const trimmed = q.trim().toLowerCase();
    const rank = (s) => (s === q ? 0 : s.trim() === q.trim() ? 1 : s.trim().toLowerCase() === trimmed ? 2 : s.toLowerCase().includes(trimmed) ? 3 : 9);
    const matches = vocab.strings.map((s, id) => [rank(s), id]).filter(([r, id]) => r < 9 && known(id)).sort((a, b) => a[0] - b[0] || best(b[1]) - best(a[1])).slice(0, 8);
    if (!matches.length) return results.replaceChildren(h("p", { class: "muted" }, `no latent in the index fires most on a token matching ${JSON.stringify(q)}`));
    results.replaceChildren(...matches.map(([, id]) => h("div", { class: "hit" },
      h("span", { class: "tok-chip", title: `token ${id}` }, visible(vocab.string(id))),
      h("span", { class: "muted" }, ` token ${id} → `),
      (idx[id] || []).slice(0, 12).map(([latent, act]) => h("a", { href: link(latent), class: "latent-link", title: `activation ${fmt(act, 4)} on this token` }, `#${latent}`, h("small", {}, ` ${fmt(act, 3)}`))),
      byExplanation[id]?.length ? h("div", { class: "explained-hits" }, h("span", { class: "muted" }, "in explanations: "),
        byExplanation[id].slice(0, 12).map(([latent, score]) => h("a", { href: link(latent), class: "latent-link explained", title: `its N2G explanation names this token; F1 ${fmt(score, 3)}` }, `#${latent}`, h("small", {}, ` F1 ${fmt(score, 2)}`)))) : null)));
  };
  return section("Search by token",
    h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); run(); } }, box, h("button", {}, "Search")),
    h("p", { class: "caption muted" }, `Latents whose top examples activate most on a token matching the text (exact match first; leading spaces count)${explained ? ", and latents whose N2G explanation names that token" : ""}.`),
    results);
}
