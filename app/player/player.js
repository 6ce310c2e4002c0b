// The Denoising page's reverse-process player (a Streamlit component, protocol v1, no build step).
//
// The app sends the whole run once: the sphere with one Plotly frame per reverse step, the rank chart, and each
// step's heading, item table and chips. Play, pause and the slider move `state.step` here, in the browser, and
// every view is drawn from that one value. When the step stops moving (pause, a slider release, a key press) it
// goes back to the app, which puts it in the URL and keeps it across run and user switches.
"use strict";

// `index` is the frame shown (0..frames-1); `step` the reverse step it draws (a long chain shows every few steps)
const state = { data: null, index: 0, step: 0, playing: false, timer: null, dataId: null, shown: -1, frames: 0 };
const $ = (id) => document.getElementById(id);

function send(type, extra) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...extra }, "*");
}

function report() {  // tell the app where the step stopped
  send("streamlit:setComponentValue", { value: { step: state.step, data_id: state.dataId }, dataType: "json" });
}

function resize() {
  send("streamlit:setFrameHeight", { height: document.body.scrollHeight + 4 });
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function drawText(i) {
  const s = state.data.steps[i];
  $("heading").textContent = s.heading;
  $("step-label").textContent = `step ${s.step} of ${state.data.T}`;
  $("rank-line").innerHTML = s.rank_line;
  const rows = s.items.map((row) =>
    `<tr class="${row.next ? "next" : ""}"><td>${row.rank}</td><td title="${escapeHtml(row.title)}">` +
    `${row.next ? "✓ " : ""}${escapeHtml(row.title)}</td><td><span style="color:${row.color}">●</span> ` +
    `${escapeHtml(row.category)}</td></tr>`);
  $("items").tBodies[0].innerHTML = rows.join("");
  $("chips").innerHTML = s.chips;
}

function show(i) {
  // Draw frame i everywhere: slider, label, heading, table, sphere and the step charts' marker lines.
  i = Math.max(0, Math.min(state.data.frames.length - 1, i | 0));
  state.index = i;
  state.step = state.data.steps[i].step;
  $("slider").value = String(i);
  drawText(i);
  document.body.dataset.step = String(state.step);
  if (state.shown === i) return Promise.resolve();
  state.shown = i;
  placeMarkers(state.step);
  // Plotly.animate would recompute the whole figure (gl3d traces do not transition): about 4x slower than
  // restyling only the frame's traces, which is what a frame holds.
  const updates = state.playing ? state.playUpdates : state.updates;
  return Plotly.restyle($("sphere"), updates[i], state.data.frames[i].traces)
    .then(() => { state.frames += 1; document.body.dataset.frames = String(state.frames); });
}

function placeMarkers(k) {
  // The step charts' "you are here" lines: HTML lines placed in pixels from each chart's own axes (a Plotly
  // relayout per frame would redraw the charts and cost a third of the frame rate).
  ["ranks", "angles"].forEach((id) => {
    const gd = $(id);
    const x = gd._fullLayout && gd._fullLayout.xaxis, y = gd._fullLayout && gd._fullLayout.yaxis;
    if (!x || !y) return;
    let line = gd.querySelector(".step-marker");
    if (!line) {
      line = document.createElement("div");
      line.className = "step-marker";
      gd.appendChild(line);
    }
    line.style.left = `${x._offset + x.l2p(k) - 1.5}px`;
    line.style.top = `${y._offset}px`;
    line.style.height = `${y._length}px`;
  });
}

function flatten(obj, prefix, out) {  // {marker: {color: c}} -> {"marker.color": c}
  for (const [key, value] of Object.entries(obj)) {
    const path = prefix ? `${prefix}.${key}` : key;
    if (value !== null && typeof value === "object" && !Array.isArray(value)) flatten(value, path, out);
    else out[path] = value;
  }
  return out;
}

function restyleUpdates(frames) {
  // One Plotly.restyle argument per frame: {attribute: [value for each of the frame's traces]}; a trace
  // without the attribute gets undefined, which restyle leaves alone.
  return frames.map((frame) => {
    const flat = frame.data.map((trace) => flatten(trace, "", {}));
    const keys = new Set(flat.flatMap((f) => Object.keys(f)));
    keys.delete("type");
    const update = {};
    keys.forEach((key) => { update[key] = flat.map((f) => f[key]); });
    return update;
  });
}

function tick() {
  if (!state.playing) return;
  const started = performance.now();
  show((state.index + 1) % state.data.frames.length).then(() => {
    if (!state.playing) return;
    const wait = Math.max(0, 1000 / state.data.fps - (performance.now() - started));
    state.timer = setTimeout(tick, wait);
  });
}

function setPlaying(on) {
  if (on === state.playing) return;
  state.playing = on;
  $("play").textContent = on ? "❚❚ Pause" : "▶ Play";
  $("play").classList.toggle("playing", on);
  document.body.dataset.playing = on ? "1" : "0";
  clearTimeout(state.timer);
  if (on) {
    tick();
  } else {
    state.shown = -1;  // redraw the paused step with its labels
    show(state.index);
    report();
  }
}

function mount(data) {
  state.data = data;
  state.dataId = data.data_id;
  state.shown = -1;
  document.body.classList.toggle("projector", !!data.projector);
  $("slider").max = String(data.frames.length - 1);
  $("angle-caption").textContent = data.angle_caption;
  $("key").innerHTML = data.note + data.key;
  // the mouse wheel scrolls the page, as everywhere else on it; the globe zooms by its − and + buttons
  const config = { displaylogo: false, responsive: true, scrollZoom: false };
  const small = { ...config, displayModeBar: false };
  Plotly.newPlot($("ranks"), data.ranks.data, data.ranks.layout, small);
  Plotly.newPlot($("angles"), data.angles.data, data.angles.layout, small);
  return Plotly.newPlot($("sphere"), data.sphere.data, data.sphere.layout, config).then((gd) => {
    Plotly.addFrames(gd, data.frames);
    state.updates = restyleUpdates(data.frames);
    // while playing, the samples' s1..s6 labels are left out: 3-D text costs a third of each frame's redraw
    state.playUpdates = state.updates.map((u) => (u.mode ? { ...u, mode: u.mode.map((m) => m && m.replace("+text", "")) } : u));
    // the sphere keeps the user's rotation across steps: each frame carries only the sample traces
    const start = data.steps.findIndex((s) => s.step === data.step);
    return show(start < 0 ? data.steps.length - 1 : start);
  }).then(resize);
}

window.addEventListener("message", (event) => {
  if (event.data.type !== "streamlit:render") return;
  const data = event.data.args.data;
  // A new run, user or sample set mounts afresh at the app's step; the same data again (a rerun after this
  // player reported its step) leaves the player where it is, so the step has one owner.
  if (data.data_id !== state.dataId) {
    setPlaying(false);
    mount(data);
  }
});

function zoom(factor) {
  // move the camera towards (factor < 1) or away from the globe's centre, keeping the user's rotation
  const gd = $("sphere");
  const camera = gd._fullLayout.scene._scene.getCamera();
  const eye = camera.eye, c = camera.center;
  const scaled = { x: c.x + (eye.x - c.x) * factor, y: c.y + (eye.y - c.y) * factor, z: c.z + (eye.z - c.z) * factor };
  return Plotly.relayout(gd, { "scene.camera": { ...camera, eye: scaled } });
}

// plotly's 3-D camera cancels every wheel event over the globe, even with scrollZoom off: stop the event on its
// way down (capture phase), so that the page scrolls and the camera stays put
window.addEventListener("wheel", (e) => {
  if (e.target.closest && e.target.closest("#sphere")) e.stopPropagation();
}, { capture: true });
$("zoom-in").addEventListener("click", () => zoom(0.8));
$("zoom-out").addEventListener("click", () => zoom(1.25));
$("play").addEventListener("click", () => setPlaying(!state.playing));
$("slider").addEventListener("input", (e) => { setPlaying(false); show(Number(e.target.value)); });
$("slider").addEventListener("change", () => report());
document.addEventListener("keydown", (e) => {
  if (e.key === " " && e.target.tagName !== "INPUT") { e.preventDefault(); setPlaying(!state.playing); }
});
window.addEventListener("resize", () => { resize(); if (state.data) placeMarkers(state.step); });
new ResizeObserver(resize).observe(document.body);
send("streamlit:componentReady", { apiVersion: 1 });
