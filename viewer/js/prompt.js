// The prompt view: the server runs the model and SAE on typed text; per token, the latents
// that fire, linked to their pages in the export of the same SAE.
import { h, fmt, section } from "./dom.js";
import { prompt } from "./api.js";
import { decodePieces, visible, shade } from "./tokens.js";

function fromBase64(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

export function renderPrompt(info, exportIndex) {
  const link = (id) => (exportIndex == null ? null : `#/r/${exportIndex}/l/${id}`);
  const out = h("div", { id: "prompt-result" });
  const text = h("textarea", { id: "prompt-text", rows: 4, placeholder: "Type or paste text…" }, "");
  const submit = async (e) => {
    e.preventDefault();
    out.replaceChildren(h("p", { class: "muted" }, "Running…"));
    try {
      out.replaceChildren(result(await prompt(text.value), link));
    } catch (error) {
      out.replaceChildren(h("p", { class: "error" }, String(error.message || error)));
    }
  };
  return h("div", {},
    h("h1", {}, "Prompt view"),
    h("p", { class: "muted" }, `${info.model} · ${info.hook} · SAE ${info.sae}`, exportIndex == null ? " · (no export of this SAE is served: latents are not linked)" : ""),
    h("form", { onsubmit: submit }, text, h("div", {}, h("button", { id: "prompt-run" }, "Show latents"))),
    out);
}

function result(data, link) {
  const pieces = decodePieces(data.tokens.map((t) => fromBase64(t.bytes)));
  const max = Math.max(0, ...data.tokens.filter((t) => !t.excluded).map((t) => t.latents[0]?.[1] ?? 0));
  const line = h("div", { class: "example" }, data.tokens.map((t, i) => {
    const span = h("span", { class: "tok" + (t.excluded ? " excluded" : ""), title: `${JSON.stringify(pieces[i])} (token ${t.id})\n${t.latents.length} latents fire` }, visible(pieces[i]) || "\u2205");
    const c = t.excluded ? "" : shade(t.latents[0]?.[1] ?? 0, max);
    if (c) span.style.backgroundColor = c;
    return span;
  }));
  // Hovering a latent recolours the token line by that latent's activation at each token.
  const colour = (valueAt) => {
    const values = data.tokens.map((t, i) => (t.excluded ? 0 : valueAt(t, i)));
    const top = Math.max(0, ...values);
    [...line.children].forEach((span, i) => { span.style.backgroundColor = shade(values[i], top); });
  };
  const byMax = (t) => t.latents[0]?.[1] ?? 0;
  const focus = (id) => () => colour((t) => t.latents.find(([j]) => j === id)?.[1] ?? 0);
  const rows = data.tokens.map((t, i) => h("tr", { class: t.excluded ? "excluded" : "" },
    h("td", { class: "num muted" }, i),
    h("td", {}, h("span", { class: "tok-chip" }, visible(pieces[i]) || "\u2205")),
    h("td", { class: "fired" }, t.excluded ? h("span", { class: "muted" }, "first position (attention sink): excluded from exports") :
      t.latents.map(([id, act]) => {
        const href = link(id);
        const label = [`#${id}`, h("small", {}, ` ${fmt(act, 3)}`)];
        const attrs = { class: "latent-link", title: `activation ${fmt(act, 4)}; hover: this latent over the prompt`, onmouseenter: focus(id), onmouseleave: () => colour(byMax) };
        return href ? h("a", { href, ...attrs }, label) : h("span", attrs, label);
      }))));
  return h("div", {},
    section("Tokens", h("p", { class: "caption muted" }, "Colour: the largest latent activation at each token, or, while you hover a latent below, that latent's activation. ↵ is a newline."), line),
    section("Latents per token", h("table", { class: "prompt-table" },
      h("thead", {}, h("tr", {}, h("th", { class: "num" }, "pos"), h("th", {}, "token"), h("th", { title: "latents with a non-zero activation, largest first (at most 12)" }, "latents that fire (activation)"))),
      h("tbody", {}, rows))));
}
