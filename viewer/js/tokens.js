// Tokens: raw bytes from the export's vocabulary, decoded window by window with one streaming
// TextDecoder, so a character split across tokens appears, whole, at the token completing it.
import { h, fmt } from "./dom.js";

function fromBase64(text) {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

function asList(table) {
  if (Array.isArray(table)) return table;
  const list = [];
  for (const [id, value] of Object.entries(table || {})) list[Number(id)] = value;
  return list;
}

export class Vocab {
  // vocab.json: {"bytes": [base64 per id] | {id: base64}, "strings": [...] | {id: ...}}
  constructor(json) {
    this.bytes = asList(json.bytes ?? json).map((b) => fromBase64(b ?? ""));
    const strings = asList(json.strings ?? []);
    this.strings = this.bytes.map((b, id) => strings[id] ?? new TextDecoder().decode(b));
  }
  string(id) {
    return this.strings[id] ?? `<${id}>`;
  }
}

export function decodePieces(byteList) {
  const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
  const pieces = byteList.map((b) => decoder.decode(b, { stream: true }));
  if (pieces.length) pieces[pieces.length - 1] += decoder.decode();
  return pieces;
}

export const decodeWindow = (vocab, ids) => decodePieces(ids.map((id) => vocab.bytes[id] ?? new Uint8Array()));

// Whitespace made visible: a newline as ↵, a tab as ⇥, carriage return as ␍.
export const visible = (piece) =>
  piece.replaceAll("\n", "↵").replaceAll("\t", "⇥").replaceAll("\r", "␍");

export function shade(value, max) {
  const a = max > 0 ? Math.min(1, Math.max(0, value / max)) : 0;
  return a > 0 ? `rgba(234, 88, 12, ${(0.08 + 0.82 * a).toFixed(3)})` : "";
}

// Diverging shade for a loss change: blue where removing the latent raised the loss (the
// latent helped predict the token), red where it lowered it; opacity |value| / scale.
export function diverging(value, scale) {
  const a = scale > 0 ? Math.min(1, Math.abs(value) / scale) : 0;
  if (!(a > 0)) return "";
  return `rgba(${value > 0 ? "37, 99, 235" : "220, 38, 38"}, ${(0.08 + 0.82 * a).toFixed(3)})`;
}

const signed = (x, digits) => (x > 0 ? "+" : "") + fmt(x, digits);

// One example as a token heatmap: colour = activation / the latent's max, the selected
// (activating) token outlined, and every token's value on hover. Both colours are kept as
// custom properties, so a `.by-loss` ancestor switches to the loss change without a re-render.
export function heatmap(example, max, lossScale = 0) {
  const row = h("div", { class: "example" });
  example.pieces.forEach((piece, i) => {
    const act = example.acts[i] ?? 0;
    const idText = example.ids ? ` (token ${example.ids[i]})` : "";
    const lines = [`${JSON.stringify(piece)}${idText}`, `activation ${fmt(act, 4)}`];
    const loss = example.loss_diff?.[i];
    const kl = example.kl?.[i];
    if (loss != null) lines.push(`loss change with latent removed ${signed(loss, 3)} nats`);
    if (kl != null) lines.push(`KL ${fmt(kl, 3)} nats`);
    const predicted = example.predicted?.[i];
    if (predicted != null) lines.push(`explanation predicts ${fmt(predicted, 3)}`);
    const span = h(
      "span",
      {
        class: "tok" + (i === example.idx ? " sel" : "") + (piece.includes("\n") ? " nl" : "") + (predicted > 0 ? " pred" : ""),
        title: lines.join("\n"),
        "data-act": act,
        "data-loss-diff": loss,
        "data-kl": kl,
        "data-predicted": predicted,
      },
      visible(piece) || "\u2205",
    );
    const color = shade(act, max);
    if (color) span.style.setProperty("--act-bg", color);
    const lossColor = loss != null ? diverging(loss, lossScale) : "";
    if (lossColor) span.style.setProperty("--loss-bg", lossColor);
    row.appendChild(span);
  });
  const where = [
    example.doc != null ? `doc ${example.doc}` : null,
    example.pos != null ? `pos ${example.pos}` : null,
  ].filter(Boolean);
  return h(
    "div",
    { class: "example-row" },
    h("span", { class: "act", title: "activation at the outlined token" }, fmt(example.act, 3)),
    row,
    h("span", { class: "where muted" }, where.join(" · ")),
  );
}
