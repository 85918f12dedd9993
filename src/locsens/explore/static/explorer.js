// locsens explorer: plain JavaScript, no library, nothing fetched from the internet. The map is SVG in the
// equirectangular projection: a group flipped vertically so that its user coordinates are (lon, lat).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const state = { info: null, world: null, photo: null, marker: null, queryPlace: null, maps: {} };

// ---------------------------------------------------------------- API and errors
async function api(route, params = {}) {
  const query = new URLSearchParams(params).toString();
  const response = await fetch(`/api/${route}${query ? "?" + query : ""}`);
  const body = await response.json().catch(() => ({ error: `${route}: HTTP ${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}
function showError(err) {
  const box = $("error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}
// an action's error stays until the next action succeeds; a background call (autocomplete) clears nothing
async function guarded(fn, clears = true) {
  try {
    const out = await fn();
    if (clears) showError(null);
    return out;
  } catch (err) {
    showError(err);
    return null;
  }
}

// ---------------------------------------------------------------- the map
function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}
function makeMap(container, onPick, outlinesOnTop = false) {
  const svg = el("svg", { viewBox: "-180 -90 360 180", preserveAspectRatio: "xMidYMid meet" });
  const plane = el("g", { transform: "scale(1,-1)" }, svg);
  const land = el("g", {}, plane);
  for (const country of state.world) {
    const d = country.rings.map((ring) => "M" + ring.map((p) => `${p[0]},${p[1]}`).join("L") + "Z").join("");
    el("path", { d, class: "land" }, land).appendChild(Object.assign(document.createElementNS(SVG, "title"), { textContent: country.name }));
  }
  const layers = { under: el("g", {}, plane), marks: el("g", {}, plane) };
  if (outlinesOnTop) layers.marks.appendChild(Object.assign(land.cloneNode(true), { id: "" })).setAttribute("class", "outline");
  container.replaceChildren(svg);
  const toLonLat = (event) => {
    const p = svg.createSVGPoint();
    p.x = event.clientX;
    p.y = event.clientY;
    const q = p.matrixTransform(plane.getScreenCTM().inverse());
    return [Math.max(-90, Math.min(90, q.y)), Math.max(-180, Math.min(180, q.x))];
  };
  const map = { svg, plane, layers, toLonLat };
  if (onPick) {
    let dragging = false;
    svg.addEventListener("pointerdown", (e) => {
      dragging = true;
      svg.setPointerCapture(e.pointerId);
      onPick(...toLonLat(e), false);
    });
    svg.addEventListener("pointermove", (e) => dragging && onPick(...toLonLat(e), false));
    svg.addEventListener("pointerup", (e) => {
      if (!dragging) return;
      dragging = false;
      onPick(...toLonLat(e), true);
    });
  }
  return map;
}
function dot(layer, lat, lon, attrs) {
  return el("circle", { cx: lon, cy: lat, r: 2.2, ...attrs }, layer);
}
function geodesicCircle(lat, lon, km) {
  // the points at distance km from (lat, lon) in 96 bearings (spherical Earth, as locsens.geo)
  const R = 6371.0088, d = km / R, la = (lat * Math.PI) / 180, lo = (lon * Math.PI) / 180, out = [];
  for (let i = 0; i <= 96; i++) {
    const b = (2 * Math.PI * i) / 96;
    const la2 = Math.asin(Math.sin(la) * Math.cos(d) + Math.cos(la) * Math.sin(d) * Math.cos(b));
    const lo2 = lo + Math.atan2(Math.sin(b) * Math.sin(d) * Math.cos(la), Math.cos(d) - Math.sin(la) * Math.sin(la2));
    out.push([(((lo2 * 180) / Math.PI + 540) % 360) - 180, (la2 * 180) / Math.PI]);
  }
  // a circle across the antimeridian wraps: cut it where it jumps, into pieces that each stay on the map
  const pieces = [[]];
  out.forEach((p, i) => {
    if (i && Math.abs(p[0] - out[i - 1][0]) > 180) pieces.push([]);
    pieces[pieces.length - 1].push(p);
  });
  return pieces;
}
const fmt = (x, n = 3) => Number(x).toFixed(n);

// ---------------------------------------------------------------- tag a photo
function tagItem(entry, withScore = true) {
  const li = document.createElement("li");
  li.dataset.tag = entry.tag;
  li.textContent = entry.tag;
  if (entry.place) li.classList.add("place");
  if (entry.true) li.classList.add("true");
  if (withScore && entry.score !== undefined) {
    const s = document.createElement("span");
    s.className = "score";
    s.textContent = fmt(entry.score, 4);
    li.appendChild(s);
  }
  return li;
}
function chip(entry) {
  const span = document.createElement("span");
  span.className = "tagchip" + (entry.place ? " place" : "");
  span.textContent = entry.tag;
  return span;
}
async function openPhoto(photo) {
  state.photo = photo;
  const info = $("photo-info");
  info.replaceChildren();
  const head = document.createElement("p");
  head.append(
    Object.assign(document.createElement("b"), { textContent: `photo ${photo.photo_id}` }),
    ` (${photo.split}) taken in ${photo.place.town}, ${photo.place.region}, ${photo.place.country} (${fmt(photo.lat)}, ${fmt(photo.lon)})`
  );
  info.appendChild(head);
  if (photo.image) info.appendChild(Object.assign(document.createElement("img"), { src: `/image/${photo.photo_id}`, className: "photo-image", alt: `photo ${photo.photo_id}` }));
  const tags = document.createElement("p");
  tags.id = "true-tags";
  tags.append("true tags: ", ...photo.tags.map(chip));
  info.appendChild(tags);
  const map = state.maps.tag;
  map.layers.under.replaceChildren();
  dot(map.layers.under, photo.lat, photo.lon, { id: "true-place", r: 3.2, fill: "none", stroke: "#111", "stroke-width": 0.8 });
  renderStored(photo.stored_predictions);
  await moveMarker(photo.lat, photo.lon, true);
}
function renderStored(stored) {
  const body = $("stored-body");
  body.replaceChildren();
  $("stored").hidden = !stored || !stored.length;
  for (const ev of stored || []) {
    const table = document.createElement("table");
    table.className = "results";
    for (const [name, tags] of Object.entries(ev.methods)) {
      const tr = table.insertRow();
      tr.insertCell().textContent = name;
      const cell = tr.insertCell();
      for (const t of tags) {
        const c = chip(t);
        if (t.true) c.classList.add("true");
        cell.appendChild(c);
      }
    }
    body.append(Object.assign(document.createElement("p"), { textContent: ev.evaluation, className: "muted" }), table);
  }
}
// one request in flight; while it runs only the latest position waits (a drag sends many)
let pending = null, inFlight = false;
async function moveMarker(lat, lon, final) {
  if (!state.photo) return showError("pick a photo first (search, or Random photo)");
  const map = state.maps.tag;
  let marker = $("marker");
  if (!marker) marker = dot(map.layers.marks, lat, lon, { id: "marker", r: 3, fill: "#e53935", stroke: "white", "stroke-width": 0.6 });
  marker.setAttribute("cx", lon);
  marker.setAttribute("cy", lat);
  marker.dataset.lat = fmt(lat);
  marker.dataset.lon = fmt(lon);
  $("marker-coords").textContent = `scored at ${fmt(lat)}, ${fmt(lon)}`;
  pending = { lat: fmt(lat), lon: fmt(lon), photo: state.photo.photo_id };
  if (!inFlight) await drain();
}
async function drain() {
  inFlight = true;
  $("locsens-tags").dataset.state = "loading";
  while (pending) {
    const ask = pending;
    pending = null;
    const result = await guarded(() => api("tags", { photo: ask.photo, lat: ask.lat, lon: ask.lon, k: 20 }));
    if (result) renderTags(result, ask);
  }
  inFlight = false;
  $("locsens-tags").dataset.state = "ready";
}
function renderTags(result, ask) {
  for (const [id, key] of [["locsens-tags", "locsens"], ["agnostic-tags", "agnostic"]]) {
    const ol = $(id);
    ol.replaceChildren(...result[key].map((e) => tagItem(e)));
    ol.dataset.lat = ask.lat;
    ol.dataset.lon = ask.lon;
    ol.dataset.photo = ask.photo;
  }
  $("locsens-title").textContent = `${state.info.method} at ${ask.lat}, ${ask.lon} (${result.scoring_ms} ms)`;
}
async function searchPhotos() {
  const q = $("photo-search").value.trim();
  const found = await guarded(() => api("search", { q }));
  const list = $("photo-results");
  list.replaceChildren();
  if (!found) return;
  for (const p of found.photos) {
    const li = document.createElement("li");
    li.textContent = `${p.photo_id} (${p.town}, ${p.country})`;
    li.dataset.photo = p.photo_id;
    li.onclick = async () => {
      const photo = await guarded(() => api("photo", { photo: p.photo_id }));
      if (photo) openPhoto(photo);
    };
    list.appendChild(li);
  }
  if (found.photos.length === 1) list.firstChild.onclick();
}

// ---------------------------------------------------------------- retrieve
async function updateTagOptions(prefix) {
  const vocab = await guarded(() => api("vocab", { prefix }), false);
  if (!vocab) return;
  $("tag-options").replaceChildren(
    ...vocab.tags.map((t) => Object.assign(document.createElement("option"), { value: t.tag, label: `${t.tag} (${t.test_photos} test photos)` }))
  );
}
function pickQueryPlace(lat, lon, final) {
  state.queryPlace = [lat, lon];
  $("query-place").textContent = `place: ${fmt(lat)}, ${fmt(lon)}`;
  for (const key of ["locsens", "agnostic"]) drawQueryPlace(state.maps[`ret-${key}`]);
  if (final && $("query-tag").value.trim()) retrieve();
}
function drawQueryPlace(map) {
  map.layers.under.replaceChildren();
  if (!state.queryPlace) return;
  const [lat, lon] = state.queryPlace;
  for (const piece of geodesicCircle(lat, lon, Number($("query-km").value)))
    el("polyline", { points: piece.map((p) => `${p[0].toFixed(3)},${p[1].toFixed(3)}`).join(" "), fill: "none", stroke: "#1e88e5", "stroke-width": 0.5, "stroke-dasharray": "2 1", class: "distance" }, map.layers.under);
  el("path", { d: `M${lon - 3},${lat}L${lon + 3},${lat}M${lon},${lat - 3}L${lon},${lat + 3}`, stroke: "#1e88e5", "stroke-width": 1, class: "query-place" }, map.layers.under);
}
async function retrieve() {
  if (!state.queryPlace) return showError("click a map to choose the query's place");
  const [lat, lon] = state.queryPlace;
  const result = await guarded(() => api("retrieve", { tag: $("query-tag").value.trim(), lat: fmt(lat), lon: fmt(lon), km: $("query-km").value, k: 10 }));
  if (!result) return;
  for (const [key, title] of [["locsens", state.info.method], ["agnostic", state.info.agnostic]]) {
    const map = state.maps[`ret-${key}`];
    drawQueryPlace(map);
    map.layers.marks.replaceChildren();
    const table = $(`ret-list-${key}`);
    table.replaceChildren();
    const head = table.insertRow();
    for (const h of ["#", "photo", "place", "km", "tag"]) head.appendChild(Object.assign(document.createElement("th"), { textContent: h }));
    result[key].results.forEach((r, i) => {
      const kind = r.correct ? "correct" : r.has_tag ? "far" : "miss";
      const colour = { correct: "#43a047", far: "#fb8c00", miss: "#90a4ae" }[kind];
      const d = dot(map.layers.marks, r.lat, r.lon, { class: `result ${kind}`, fill: colour, stroke: "#263238", "stroke-width": 0.3 });
      d.dataset.photo = r.photo_id;
      d.appendChild(Object.assign(document.createElementNS(SVG, "title"), { textContent: `#${i + 1} photo ${r.photo_id}, ${r.km} km` }));
      const tr = table.insertRow();
      tr.className = kind;
      for (const v of [i + 1, r.photo_id, `${r.town}, ${r.country}`, r.km, r.has_tag ? "\u2713" : "\u2717"]) tr.insertCell().textContent = v;
    });
    table.dataset.tag = result.tag;
    $(`ret-title-${key}`).textContent = `${title}: P@10 within ${result.km} km = ${fmt(result[key].precision, 1)}`;
  }
}

// ---------------------------------------------------------------- where is a tag used
const RAMP = [[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]]; // plasma
function colour(t) {
  const x = Math.max(0, Math.min(1, t)) * (RAMP.length - 1), i = Math.min(Math.floor(x), RAMP.length - 2), f = x - i;
  return RAMP[i].map((c, j) => Math.round(c + f * (RAMP[i + 1][j] - c)));
}
async function drawHeat() {
  const params = { tag: $("heat-tag").value.trim(), step: 3 };
  if ($("heat-mode").value === "locsens") {
    if (!state.photo) return showError("the LocSens map fixes a photo: pick one in 'Tag a photo' first, or choose the prior");
    params.photo = state.photo.photo_id;
  }
  const heat = await guarded(() => api("heatmap", params));
  if (!heat) return;
  const rows = heat.values.length, cols = heat.values[0].length;
  const canvas = Object.assign(document.createElement("canvas"), { width: cols, height: rows });
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(cols, rows);
  // colours span the 2nd to 98th percentile: a few extreme cells (an ocean, a pole) would wash out the rest
  const sorted = heat.values.flat().sort((a, b) => a - b);
  const low = sorted[Math.floor(0.02 * (sorted.length - 1))], high = sorted[Math.ceil(0.98 * (sorted.length - 1))];
  const span = high - low || 1;
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const [R, G, B] = colour((heat.values[r][c] - low) / span), at = 4 * ((rows - 1 - r) * cols + c);
      img.data.set([R, G, B, 170], at);
    }
  ctx.putImageData(img, 0, 0);
  const map = state.maps.heat;
  map.layers.under.replaceChildren();
  // the image is drawn in the flipped plane: flip it back so that north stays up
  el("image", { href: canvas.toDataURL(), x: -180, y: -90, width: 360, height: 180, preserveAspectRatio: "none", transform: "scale(1,-1)", style: "image-rendering: pixelated", id: "heat-image" }, map.layers.under);
  $("heat-source").textContent = heat.source;
  const legend = $("heat-legend");
  const bar = Object.assign(document.createElement("canvas"), { width: 240, height: 12, className: "bar" });
  const bctx = bar.getContext("2d");
  for (let x = 0; x < 240; x++) {
    bctx.fillStyle = `rgb(${colour(x / 239).join(",")})`;
    bctx.fillRect(x, 0, 1, 12);
  }
  legend.replaceChildren(
    document.createTextNode(`<= ${low.toPrecision(3)}`),
    bar,
    document.createTextNode(`>= ${high.toPrecision(3)} (2nd-98th percentile; all: ${heat.min.toPrecision(3)} to ${heat.max.toPrecision(3)})`)
  );
}

// ---------------------------------------------------------------- compare runs
async function showCompare() {
  const data = await guarded(() => api("compare"));
  if (!data || !data.evaluations.length) return;
  const body = $("compare-body");
  body.replaceChildren();
  data.evaluations.forEach((ev, index) => {
    body.appendChild(Object.assign(document.createElement("h3"), { textContent: `${ev.evaluation} (${ev.n_test_images} test images, ${ev.n_location_queries} location queries, commit ${ev.commit})` }));
    const columns = [...new Set(Object.values(ev.rows).flatMap(Object.keys))];
    const table = document.createElement("table");
    table.className = "compare";
    const head = table.createTHead().insertRow();
    ["method", ...columns].forEach((c, i) => {
      const th = Object.assign(document.createElement("th"), { textContent: c.replace("with_places:", "").replace("places_omitted:", "no places ") });
      th.dataset.column = i;
      th.onclick = () => sortTable(table, i);
      head.appendChild(th);
    });
    const tbody = table.createTBody();
    for (const [name, row] of Object.entries(ev.rows)) {
      const tr = tbody.insertRow();
      tr.insertCell().textContent = name;
      for (const c of columns) tr.insertCell().textContent = row[c] === undefined || row[c] === null ? "-" : fmt(row[c], 2);
    }
    body.appendChild(table);
    const figures = document.createElement("div");
    figures.className = "figures";
    for (const name of ev.figures) figures.appendChild(Object.assign(document.createElement("img"), { src: `/figure/${index}/${name}`, alt: name, title: name }));
    body.appendChild(figures);
  });
}
function sortTable(table, column) {
  // numbers best first on the first click, names A to Z; a missing value ("-") always last
  const tbody = table.tBodies[0];
  const flip = table.dataset.sorted === `${column}:first`;
  const key = (tr) => tr.cells[column].textContent;
  const rows = [...tbody.rows].sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === "-" || y === "-") return (x === "-") - (y === "-");
    const order = column === 0 ? x.localeCompare(y) : Number(y) - Number(x);
    return flip ? -order : order;
  });
  tbody.replaceChildren(...rows);
  table.dataset.sorted = `${column}:${flip ? "second" : "first"}`;
}

// ---------------------------------------------------------------- start
function showView(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.view === name);
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== `view-${name}`;
  if (name === "compare") showCompare();
}
async function start() {
  const [info, world] = await Promise.all([api("info"), api("world")]);
  state.info = info;
  state.world = world.countries;
  $("run-info").textContent = `${info.method} (scoring ${info.dtype}) vs ${info.agnostic}: ${info.test_photos} test photos, ${info.tags} tags`;
  $("agnostic-title").textContent = info.agnostic;
  state.maps.tag = makeMap($("tag-map"), (lat, lon, final) => moveMarker(lat, lon, final));
  state.maps["ret-locsens"] = makeMap($("ret-map-locsens"), pickQueryPlace);
  state.maps["ret-agnostic"] = makeMap($("ret-map-agnostic"), pickQueryPlace);
  state.maps.heat = makeMap($("heat-map"), null, true);
  $("query-km").replaceChildren(...info.distances_km.map((km) => Object.assign(document.createElement("option"), { value: km, textContent: km, selected: km === 200 })));
  for (const tab of document.querySelectorAll(".tab")) tab.onclick = () => showView(tab.dataset.view);
  $("photo-search-go").onclick = searchPhotos;
  $("photo-search").addEventListener("keydown", (e) => e.key === "Enter" && searchPhotos());
  $("photo-random").onclick = async () => {
    const photo = await guarded(() => api("random", { seed: Math.floor(Math.random() * 1e9) }));
    if (photo) openPhoto(photo);
  };
  $("marker-reset").onclick = () => state.photo && moveMarker(state.photo.lat, state.photo.lon, true);
  for (const id of ["query-tag", "heat-tag"]) $(id).addEventListener("input", (e) => updateTagOptions(e.target.value));
  $("query-go").onclick = retrieve;
  $("query-tag").addEventListener("keydown", (e) => e.key === "Enter" && retrieve());
  $("query-km").onchange = () => state.queryPlace && retrieve();
  $("heat-go").onclick = drawHeat;
  updateTagOptions("");
  const wanted = new URLSearchParams(location.search).get("photo");
  const first = await guarded(() => (wanted ? api("photo", { photo: wanted }) : api("random", { seed: 0 })));
  if (first) await openPhoto(first);
  document.body.dataset.ready = "true";
}
start().catch(showError);
