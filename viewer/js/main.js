// Hash routes: #/ (served directories), #/r/<n> (latent list), #/r/<n>/l/<id> (latent page),
// #/runs (runs dashboard), #/prompt (prompt view), #/remote/<subject>/<path>/<atom> (OpenAI's public viewer files).
import { h, section } from "./dom.js";
import { getJSON, run as getRun, runFile, runs as getRuns, vocab } from "./api.js";
import { renderList } from "./list.js";
import { fromExport, fromOpenAI, renderLatent } from "./latent.js";
import { renderPrompt } from "./prompt.js";
import { renderRuns } from "./runs.js";

const app = document.getElementById("app");
const go = (hash) => { location.hash = hash; };

function exportFor(runs, prompt) {
  const same = runs.filter((r) => r.kind === "export").find((r) => r.manifest?.sae?.sha256 && r.manifest.sae.sha256 === prompt?.sha256);
  return same?.index ?? null; // links only into an export of the very same SAE
}

const given = (runs) => runs.filter((r) => r.parent == null); // not the exports found inside results
const describe = (r) => (r.kind === "export" ? `${r.manifest.model} · ${r.manifest.hook}` : r.kind === "results" ? `runs: ${r.rows.length} SAE${r.rows.length === 1 ? "" : "s"}` : `OpenAI viewer files (${r.atoms.length})`);

async function home() {
  const { runs, prompt } = await getRuns();
  const items = given(runs).map((r) => h("li", {}, h("a", { href: r.kind === "results" ? "#/runs" : `#/r/${r.index}` }, describe(r)), " ", h("span", { class: "muted" }, r.path)));
  const subject = h("input", { value: "gpt2-small", size: 12, "aria-label": "subject" });
  const path = h("input", { value: "v5_32k/layer_8/resid_post_mlp", size: 30, "aria-label": "path" });
  const atom = h("input", { value: "0", type: "number", min: 0, class: "small", "aria-label": "atom" });
  return h("div", {},
    h("h1", {}, "Served directories"),
    items.length ? h("ul", { class: "runs" }, items) : h("p", { class: "muted" }, "None: pass export directories to saelab view."),
    prompt ? section("Prompt view", h("p", {}, h("a", { href: "#/prompt" }, "Type text and see the latents that fire"), ` (${prompt.model} · ${prompt.hook})`)) : null,
    section("OpenAI's public features", h("p", { class: "caption muted" }, "Fetched once from az://openaipublic/sparse-autoencoder/viewer/ by the local server (needs the network the first time) and cached."),
      h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); go(`#/remote/${subject.value}/${path.value}/${atom.value}`); } }, subject, path, atom, h("button", {}, "Open"))));
}

async function openaiList(run) {
  return h("div", {}, h("h1", {}, "OpenAI viewer files"), h("p", { class: "muted" }, run.path),
    h("ul", { class: "atoms" }, run.atoms.map((a) => h("li", {}, h("a", { href: `#/r/${run.index}/l/${a}` }, `#${a}`)))));
}

async function latentPage(run, id) {
  const link = (other) => `#/r/${run.index}/l/${other}`;
  const nav = (n) => h("nav", { class: "pager" }, h("a", { href: `#/r/${run.index}` }, "← all latents"), id > 0 ? h("a", { href: link(id - 1) }, `#${id - 1}`) : null, id < n - 1 ? h("a", { href: link(id + 1) }, `#${id + 1}`) : null);
  if (run.kind === "openai") {
    const info = await runFile(run.index, `${id}.json`);
    return h("div", {}, nav(Infinity), renderLatent(fromOpenAI(info, id), { link, title: `Feature ${id}`, subtitle: `OpenAI viewer file ${run.path}/${id}.json` }));
  }
  const m = run.manifest;
  const [record, v, matches] = await Promise.all([runFile(run.index, `latents/${id}.json`), vocab(run.index), crossMatches(run, id)]);
  return h("div", {}, nav(m.n_latents ?? m.sae?.n_latents ?? Infinity), renderLatent(fromExport(record, v, m), { link, title: `Latent ${id}`, subtitle: `${m.model} · ${m.hook} · SAE ${m.sae?.source ?? ""}`, matches }));
}

// An export as a link names it: a sweep's by its run folder, another by its path below the
// folder that all served exports share (its directory name when it is the only one).
function exportName(runs, r) {
  const parent = r.parent != null ? runs[r.parent] : null;
  if (parent && r.path.startsWith(`${parent.path}/`)) return r.path.slice(parent.path.length + 1).replace(/\/export$/, "");
  const tops = runs.filter((x) => x.kind === "export" && x.parent == null).map((x) => x.path.split("/"));
  const parts = r.path.split("/");
  let shared = 0;
  while (tops.every((t) => t.length > shared + 1 && t[shared] === parts[shared])) shared++;
  return parts.slice(shared).join("/") || r.path;
}

// This latent's matches in the other served exports, where a match record links them.
async function crossMatches(run, id) {
  if (!run.matched?.length) return [];
  const [{ runs }, { matches }] = await Promise.all([getRuns(), getJSON(`/api/matches?export=${run.index}&latent=${id}`)]);
  return matches.map((m) => ({ ...m, label: exportName(runs, runs[m.export]), title: `${runs[m.export].path} · SAE ${runs[m.export].manifest.sae?.source ?? ""}` }));
}

async function remotePage(parts) {
  const atom = parts.pop();
  const rel = `${parts.join("/")}/atoms/${atom}.json`;
  const info = await getJSON(`/remote/openai/${rel}`);
  const link = (other) => `#/remote/${parts.join("/")}/${other}`;
  return renderLatent(fromOpenAI(info, atom), { link, title: `Feature ${atom}`, subtitle: `OpenAI · ${parts.join("/")}` });
}

async function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "r") {
    const run = await getRun(parts[1]);
    if (run.kind === "results") return renderRuns((await getRuns()).runs);
    if (parts[2] === "l") return latentPage(run, Number(parts[3]));
    return run.kind === "export" ? renderList(run, go) : openaiList(run);
  }
  if (parts[0] === "prompt") {
    const { runs, prompt } = await getRuns();
    if (!prompt) return h("p", { class: "error" }, "No model loaded: start saelab view with a model and SAE, e.g. saelab view DIR experiment=tiny.");
    return renderPrompt(prompt, exportFor(runs, prompt));
  }
  if (parts[0] === "remote") return remotePage(parts.slice(1));
  if (parts[0] === "runs") return renderRuns((await getRuns()).runs);
  const { runs } = await getRuns();
  const top = given(runs);
  if (top.length && top.every((r) => r.kind === "results")) return renderRuns(runs); // only runs: the dashboard
  return home();
}

async function navigation() {
  const { runs, prompt } = await getRuns();
  const nav = document.getElementById("nav");
  const top = given(runs);
  const dashboard = top.some((r) => r.kind === "results") ? h("a", { href: "#/runs", class: "nav-runs" }, "runs") : null;
  const others = top.filter((r) => r.kind !== "results").map((r) => h("a", { href: `#/r/${r.index}` }, r.kind === "export" ? `${r.manifest.hook ?? "export"}` : "OpenAI files"));
  nav.replaceChildren(...[dashboard, ...others, prompt ? h("a", { href: "#/prompt" }, "prompt") : null].filter(Boolean));
}

async function render() {
  document.body.dataset.ready = "loading";
  app.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try {
    app.replaceChildren(await route());
    document.body.dataset.ready = location.hash || "#/"; // tests wait on this, not on a timer
  } catch (error) {
    app.replaceChildren(h("p", { class: "error" }, String(error.message || error)));
    document.body.dataset.ready = location.hash || "#/";
  }
  window.scrollTo(0, 0);
}

window.addEventListener("hashchange", render);
navigation().catch(() => {});
render();
