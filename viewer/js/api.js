// Fetching from the local server, with a cache so moving between pages is instant.
import { Vocab } from "./tokens.js";

const cache = new Map();

export async function getJSON(url) {
  if (!cache.has(url)) {
    const pending = fetch(url).then(async (response) => {
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new Error(body.error || `${url}: HTTP ${response.status}`);
      }
      return response.json();
    });
    pending.catch(() => cache.delete(url));
    cache.set(url, pending);
  }
  return cache.get(url);
}

export const runs = () => getJSON("/api/runs");
export const runFile = (index, path) => getJSON(`/data/${index}/${path}`);

export async function run(index) {
  const { runs: all } = await runs();
  const found = all[Number(index)];
  if (!found) throw new Error(`no served directory ${index}`);
  return found;
}

const vocabs = new Map();
export function vocab(index) {
  if (!vocabs.has(index)) vocabs.set(index, runFile(index, "vocab.json").then((v) => new Vocab(v)));
  return vocabs.get(index);
}

export async function prompt(text) {
  const response = await fetch("/api/prompt", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ text }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}
