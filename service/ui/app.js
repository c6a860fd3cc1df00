// The page at /ui: calls the service's HTTP API (same origin) and shows what it answers.
"use strict";

const PAGE_K = 12;
const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);
let bundle = null; // GET /bundle
let searchImage = null; // base64 of the image to search by

class ApiError extends Error {}

/** fetch `path`; the JSON body, or an ApiError with the API's `detail`. */
async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    throw new ApiError(`could not reach the service: ${error.message}`);
  }
  const json = (response.headers.get("content-type") || "").includes("application/json");
  const body = json ? await response.json() : null;
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : response.statusText;
    throw new ApiError(`${response.status}: ${detail}`);
  }
  return body;
}

const itemPath = (id) => `/items/${encodeURIComponent(id)}`;

function element(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) node.append(child);
  return node;
}

/** Show `error` in the section's alert (null hides it). */
function showError(testid, error) {
  const box = $(testid);
  box.textContent = error ? error.message : "";
  box.hidden = !error;
}

let pending = 0; // actions running; the body is data-busy while there are any (tests wait for it)

/** Run `action`, showing a failure in the alert `testid`. */
async function guarded(testid, action) {
  showError(testid, null);
  document.body.dataset.busy = String(++pending);
  try {
    await action();
  } catch (error) {
    showError(testid, error instanceof ApiError ? error : new ApiError(String(error)));
  } finally {
    if (--pending === 0) delete document.body.dataset.busy;
    else document.body.dataset.busy = String(pending);
  }
}

/** One item as a list entry: its image and id (a button that opens the item), and `extra` lines. */
function itemCard(id, extra = []) {
  const image = element("img", { src: `${itemPath(id)}/image`, alt: `item ${id}`, width: 96, height: 96 });
  image.addEventListener("error", () => image.classList.add("missing"), { once: true });
  const open = element("button", { type: "button", className: "item-open", title: `Show item ${id}` },
    [image, element("span", { className: "item-id", textContent: id })]);
  open.addEventListener("click", () => showItem(id));
  const card = element("li", { className: "item" }, [open]);
  card.dataset.testid = "item-card";
  card.dataset.itemId = id;
  for (const line of extra) card.append(element("p", { className: "note", textContent: line }));
  return card;
}

function fillList(testid, cards) {
  $(testid).replaceChildren(...cards);
}

function explanationLines(explanation) {
  if (!explanation) return [];
  const lines = [explanation.summary];
  if (explanation.because && explanation.because.length) {
    lines.push(`because of ${explanation.because.map((c) => c.item_id).join(", ")}`);
  }
  return lines;
}

const score = (value) => value.toFixed(3);

// --- a user: history and recommendations -------------------------------------------------

function splitFilters(text) {
  return text.split(/[;\n]/).map((part) => part.trim()).filter(Boolean);
}

async function showUser() {
  const userId = $("user-input").value.trim();
  if (!userId) throw new ApiError("pick a user or type a user id");
  const query = new URLSearchParams({ k: $("k-input").value || PAGE_K, explain: "true" });
  for (const filter of splitFilters($("filters-input").value)) query.append("filter", filter);
  const exclude = $("exclude-input").value.trim();
  if (exclude) query.append("exclude", exclude);
  const path = `/users/${encodeURIComponent(userId)}`;
  const [user, recommended] = await Promise.all([api(path), api(`${path}/recommendations?${query}`)]);
  $("history-count").textContent = `(${user.interactions} interaction${user.interactions === 1 ? "" : "s"})`;
  fillList("history", user.history.map((id) => itemCard(id)));
  $("recommendations-note").textContent = recommended.fallback
    ? "(the model does not know this user: the most popular items)" : "";
  fillList("recommendations", recommended.items.map((item) =>
    itemCard(item.item_id, [`score ${score(item.score)}`, ...explanationLines(item.explanation)])));
  document.getElementById("user-result").hidden = false;
}

// --- an item: its view weights and similar items -----------------------------------------

function viewBars(weights) {
  const views = bundle ? bundle.views.filter((view) => view in weights) : Object.keys(weights);
  return views.map((view) => {
    const weight = weights[view];
    const bar = element("span", { className: "bar" });
    bar.style.width = `${(100 * weight).toFixed(1)}%`;
    const row = element("div", { className: "bar-row", role: "listitem" }, [
      element("span", { className: "bar-label", textContent: view }),
      element("span", { className: "bar-track", ariaHidden: "true" }, [bar]),
      element("span", { className: "bar-value", textContent: weight.toFixed(2) }),
    ]);
    row.dataset.testid = "view-bar";
    row.dataset.view = view;
    return row;
  });
}

async function showItem(itemId) {
  const section = document.getElementById("item-section");
  section.hidden = false;
  $("item-id").textContent = itemId;
  await guarded("item-error", async () => {
    const [item, similar] = await Promise.all([
      api(itemPath(itemId)), api(`${itemPath(itemId)}/similar?k=${PAGE_K}&explain=true`)]);
    const image = $("item-image");
    image.src = `${itemPath(itemId)}/image`;
    image.alt = item.fields.title || `item ${itemId}`;
    $("item-source").textContent = item.source === "ingested" ? `ingested ${item.created_at || ""}` : "from the bundle";
    $("item-fields").replaceChildren(...Object.entries(item.fields).flatMap(([name, value]) =>
      [element("dt", { textContent: name }), element("dd", { textContent: value })]));
    $("view-weights").replaceChildren(...viewBars(item.view_weights));
    fillList("similar", similar.items.map((hit) =>
      itemCard(hit.item_id, [`score ${score(hit.score)}`, ...explanationLines(hit.explanation)])));
  });
  section.scrollIntoView({ block: "start" });
}

// --- search by text and image --------------------------------------------------------------

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1));
    reader.onerror = () => reject(new ApiError(`could not read ${file.name}: ${reader.error}`));
    reader.readAsDataURL(file);
  });
}

async function search() {
  const text = $("search-text").value.trim();
  if (!text && !searchImage) throw new ApiError("type a text or drop an image to search by");
  const body = { k: PAGE_K, ...(text && { text }), ...(searchImage && { image_base64: searchImage }) };
  const found = await api("/search", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  fillList("search-results", found.items.map((hit) => itemCard(hit.item_id, [`score ${score(hit.score)}`])));
}

async function useSearchImage(file) {
  await guarded("search-error", async () => {
    if (!file.type.startsWith("image/")) throw new ApiError(`${file.name} is not an image`);
    searchImage = await readBase64(file);
    $("search-image-name").textContent = `image: ${file.name}`;
    $("search-image-clear").hidden = false;
    await search();
  });
}

function clearSearchImage() {
  searchImage = null;
  $("search-image").value = "";
  $("search-image-name").textContent = "";
  $("search-image-clear").hidden = true;
}

// --- ingestion -----------------------------------------------------------------------------

function ingestFieldInputs(fields) {
  const before = document.getElementById("ingest-image-label");
  for (const field of fields) {
    const id = `ingest-field-${field}`;
    const input = element("input", { id, name: field, autocomplete: "off" });
    input.dataset.testid = id;
    before.before(element("label", { htmlFor: id, textContent: field }), input);
  }
}

async function ingest() {
  const file = $("ingest-image").files[0];
  if (!file) throw new ApiError("choose an image for the item");
  const fields = {};
  for (const field of bundle ? bundle.fields : []) {
    const value = $(`ingest-field-${field}`).value.trim();
    if (value) fields[field] = value;
  }
  const itemId = $("ingest-id").value.trim();
  const headers = { "Content-Type": "application/json" };
  const key = $("api-key").value;
  if (key) headers["X-API-Key"] = key;
  const created = await api("/items", { method: "POST", headers,
    body: JSON.stringify({ item_id: itemId, fields, image_base64: await readBase64(file) }) });
  const status = $("ingest-status");
  status.textContent = `Added ${created.item_id}: the index holds ${created.index_size} items.`;
  status.hidden = false;
  await showItem(created.item_id);
}

// --- wiring --------------------------------------------------------------------------------

function onSubmit(formId, errorTestid, action) {
  document.getElementById(formId).addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(errorTestid, action);
  });
}

function wireDropZone() {
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) useSearchImage(file);
  });
  $("search-image").addEventListener("change", (event) => {
    if (event.target.files[0]) useSearchImage(event.target.files[0]);
  });
  $("search-image-clear").addEventListener("click", clearSearchImage);
}

async function start() {
  onSubmit("user-form", "user-error", showUser);
  onSubmit("search-form", "search-error", search);
  onSubmit("ingest-form", "ingest-error", ingest);
  $("user-select").addEventListener("change", (event) => {
    if (!event.target.value) return;
    $("user-input").value = event.target.value;
    guarded("user-error", showUser);
  });
  wireDropZone();
  await guarded("user-error", async () => {
    bundle = await api("/bundle");
    $("bundle-info").textContent = `Bundle ${bundle.bundle_version}: ${bundle.items} items, views `
      + `${bundle.views.join(", ")}, text fields ${bundle.fields.join(", ")}.`;
    ingestFieldInputs(bundle.fields);
    const { users } = await api("/users?limit=50");
    $("user-select").append(...users.map((id) => element("option", { value: id, textContent: id })));
    document.body.dataset.ready = "true";
  });
}

start();
