// EmoTorch's camera page: consent first, then a few frames a second to /v1/emotions, smoothed
// probabilities, and recommendations that follow the mood. No frame is kept by the page.
"use strict";

let EMOTIONS = []; // the classes of the model the server runs, from its first answer
const CATEGORIES = ["product", "place", "food", "song", "movie"];
const FRAME_INTERVAL_MS = 200; // at most 5 frames a second: "a few times a second"
const SEND_WIDTH = 480; // frames are downscaled before they leave the browser
const SMOOTHING = 0.35; // weight of the newest frame in the moving average
const STABLE_MS = 1200; // a new mood must hold this long before the recommendations change

const $ = (id) => document.getElementById(id);
const state = {
  user: null, stream: null, running: false, smoothed: null, smoothedHead: null, shownEmotion: null,
  candidate: null, candidateSince: 0, fps: 0, lastDone: 0, mirror: false,
};

// The server makes the user and keeps its token in an HttpOnly cookie: the page never sees the token,
// and no other site can send it. Made on the first request about this user, not before.
function userId() {
  if (!state.user) {
    state.user = postJSON("/v1/users", {}).then((made) => made.user_id);
    state.user.catch(() => { state.user = null; }); // a failed attempt is tried again next time
  }
  return state.user;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function buildBars() {
  $("bars").replaceChildren(...EMOTIONS.map((e) => {
    const li = document.createElement("li");
    li.dataset.emotion = e;
    li.innerHTML = `<span>${e}</span><span class="track"><span class="fill"></span></span><span class="value">0%</span>`;
    return li;
  }));
}

function showApp() {
  $("consent").hidden = true;
  $("live").hidden = false;
  $("recs-panel").hidden = false;
  if (state.shownEmotion === null) {
    $("recs-note").textContent = "No mood read yet: suggestions appear here once the camera or a photo shows a face.";
  }
}

// --- camera -------------------------------------------------------------------------------

async function startCamera() {
  showApp();
  $("still").hidden = true;
  $("resume").hidden = true;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("This browser cannot open a camera here (cameras need https or localhost). Upload a photo instead.", true);
    return;
  }
  setStatus("Asking for the camera…");
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480, facingMode: "user" }, audio: false });
  } catch (err) {
    const why = {
      NotFoundError: "No camera was found.",
      OverconstrainedError: "No camera was found.",
      NotAllowedError: "Camera permission was refused.",
      NotReadableError: "The camera is in use by another program.",
    }[err.name] || `The camera could not be opened (${err.name}).`;
    setStatus(`${why} You can upload a photo instead.`, true);
    $("upload").focus();
    return;
  }
  const video = $("video");
  video.srcObject = state.stream;
  video.hidden = false;
  await video.play();
  state.running = true;
  state.mirror = true;
  updateControls();
  setStatus("Camera on. Frames are analysed and dropped; press Stop camera to end.");
  liveLoop();
}

function stopCamera(message = "Camera stopped. No frame was kept.") {
  state.running = false;
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null;
  $("video").srcObject = null;
  clearStill();
  clearOverlay();
  updateControls();
  setStatus(message);
}

function clearStill() {
  const still = $("still");
  if (still.src) URL.revokeObjectURL(still.src);
  still.removeAttribute("src");
  still.hidden = true;
}

// What can be pressed follows what exists: no Stop or Snap without a camera, no frame rate without frames.
function updateControls() {
  $("stop").disabled = !state.running;
  $("snap").hidden = !state.running;
  $("fps-readout").hidden = !state.running;
}

async function liveLoop() {
  const video = $("video");
  const canvas = document.createElement("canvas");
  while (state.running) {
    const started = performance.now();
    if (video.videoWidth) {
      const scale = Math.min(1, SEND_WIDTH / video.videoWidth);
      canvas.width = Math.round(video.videoWidth * scale);
      canvas.height = Math.round(video.videoHeight * scale);
      canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
      const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
      const result = await analyse(blob);
      if (!state.running) break;
      if (result) {
        show(result, video);
        tickFps();
      }
    }
    const wait = FRAME_INTERVAL_MS - (performance.now() - started);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, wait)));
  }
}

function tickFps() {
  const now = performance.now();
  if (state.lastDone) {
    const fps = 1000 / (now - state.lastDone);
    state.fps = state.fps ? 0.8 * state.fps + 0.2 * fps : fps;
    $("fps").textContent = state.fps.toFixed(1);
  }
  state.lastDone = now;
}

// --- one photo ------------------------------------------------------------------------------

function snap() {
  const video = $("video");
  if (!state.running || !video.videoWidth) {
    setStatus("Start the camera first, or upload a photo.", true);
    return;
  }
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  stopCamera("Photo taken; the camera is off.");
  canvas.toBlob((blob) => analysePhoto(blob), "image/jpeg", 0.9);
}

async function analysePhoto(blob) {
  showApp();
  const still = $("still");
  if (still.src) URL.revokeObjectURL(still.src);
  still.src = URL.createObjectURL(blob); // stays in this tab's memory only
  still.hidden = false;
  $("video").hidden = true;
  $("resume").hidden = false;
  state.mirror = false;
  state.smoothed = state.smoothedHead = null;
  await still.decode().catch(() => {});
  setStatus("Analysing the photo…");
  const result = await analyse(blob);
  if (result) {
    show(result, still);
    if (!result.faces.length) setStatus("No face found in this photo. Try one with a clear, frontal face.");
    else setStatus(`${result.faces.length} face(s) found. The photo was not stored.`);
  }
}

// --- the API ------------------------------------------------------------------------------

async function analyse(blob) {
  try {
    const response = await fetch("/v1/emotions", { method: "POST", body: blob, headers: { "Content-Type": blob.type || "image/jpeg" } });
    const body = await response.json();
    if (!response.ok) {
      setStatus(`The server refused the image: ${body.detail || response.statusText}`, true);
      return null;
    }
    return body;
  } catch (err) {
    setStatus(`The server could not be reached (${err.message}).`, true);
    return null;
  }
}

async function postJSON(url, payload) {
  const response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) });
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.status === 204 ? null : response.json();
}

// --- drawing ------------------------------------------------------------------------------

function clearOverlay() {
  const canvas = $("overlay");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
}

function show(result, media) {
  const faces = result.faces;
  const face = faces.reduce((a, b) => (b.box[2] * b.box[3] > (a ? a.box[2] * a.box[3] : 0) ? b : a), null);
  if (result.model.classes.join() !== EMOTIONS.join()) { // FER2013's seven or FER+'s eight
    EMOTIONS = result.model.classes;
    state.smoothed = state.smoothedHead = null;
    buildBars();
  }
  if (!face) {
    drawBoxes(faces, face, result, media, "");
    $("emotion").textContent = "no face in view";
    $("confidence").textContent = "";
    return;
  }
  const p = EMOTIONS.map((e) => face.probabilities[e] || 0);
  state.smoothed = smooth(state.smoothed, p);
  const head = face.expressive ? EMOTIONS.map((e) => face.expressive[e] || 0) : null;
  state.smoothedHead = head ? smooth(state.smoothedHead, head) : null;
  const top = readEmotion(state.smoothed, state.smoothedHead, result.model);
  const share = answerShares(state.smoothed, state.smoothedHead, result.model)[top];
  const reading = `${EMOTIONS[top]} ${Math.round(share * 100)}%`;
  drawBoxes(faces, face, result, media, reading); // the main face's box says what the readout says
  $("emotion").textContent = EMOTIONS[top];
  $("confidence").textContent = `${Math.round(share * 100)}%`;
  for (const li of $("bars").children) {
    const i = EMOTIONS.indexOf(li.dataset.emotion);
    li.querySelector(".fill").style.width = `${(state.smoothed[i] * 100).toFixed(1)}%`;
    li.querySelector(".value").textContent = `${Math.round(state.smoothed[i] * 100)}%`;
    li.classList.toggle("top", i === top);
  }
  moodChanged(EMOTIONS[top]);
}

function smooth(previous, current) {
  return previous ? previous.map((s, i) => (1 - SMOOTHING) * s + SMOOTHING * current[i]) : current;
}

const argmax = (values) => values.indexOf(Math.max(...values));

// The server's reading (emotorch.runtime.reading), on smoothed shares: "crowd" takes the most likely vote;
// "expressive" takes the largest share of the model's expressive head, or for a model without one, the most
// likely non-neutral emotion once its share reaches the threshold.
function readEmotion(probs, head, model) {
  const top = argmax(probs);
  const neutral = EMOTIONS.indexOf("neutral");
  if (model.reading === "expressive" && head) return argmax(head);
  if (model.reading !== "expressive" || model.expressive_threshold == null || neutral < 0) return top;
  const others = probs.map((p, i) => (i === neutral ? -1 : p));
  const best = others.indexOf(Math.max(...others));
  return others[best] >= model.expressive_threshold ? best : top;
}

// The shares behind an answer, to show beside it: the expressive head's where it names the answer, else the
// probabilities (as FaceResult.share does on the server).
function answerShares(probs, head, model) {
  return model.reading === "expressive" && head ? head : probs;
}

function drawBoxes(faces, main, result, media, mainLabel) {
  const canvas = $("overlay");
  const rect = canvas.getBoundingClientRect();
  canvas.width = rect.width;
  canvas.height = rect.height;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  // the media is drawn with object-fit: contain; find its displayed area
  const scale = Math.min(rect.width / result.width, rect.height / result.height);
  const ox = (rect.width - result.width * scale) / 2;
  const oy = (rect.height - result.height * scale) / 2;
  for (const f of faces) {
    let [x, y, w, h] = f.box;
    if (state.mirror) x = result.width - x - w;
    ctx.strokeStyle = f === main ? "#e8590c" : "#1f6feb";
    ctx.lineWidth = 3;
    ctx.strokeRect(ox + x * scale, oy + y * scale, w * scale, h * scale);
    ctx.font = "bold 16px system-ui, sans-serif";
    const shares = answerShares(f.probabilities, f.expressive, result.model);
    const label = f === main ? mainLabel : `${f.emotion} ${Math.round(shares[f.emotion] * 100)}%`;
    const tx = ox + x * scale;
    const ty = Math.max(18, oy + y * scale - 6);
    ctx.fillStyle = "rgba(0,0,0,.6)";
    ctx.fillRect(tx, ty - 16, ctx.measureText(label).width + 8, 20);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, tx + 4, ty);
  }
}

// --- recommendations ----------------------------------------------------------------------

function moodChanged(emotion) {
  const now = performance.now();
  if (emotion !== state.candidate) {
    state.candidate = emotion;
    state.candidateSince = now;
  }
  const stable = now - state.candidateSince >= STABLE_MS || !state.running; // a photo counts at once
  if (emotion !== state.shownEmotion && (stable || state.shownEmotion === null)) {
    state.shownEmotion = emotion;
    loadRecommendations();
  }
}

async function loadRecommendations() {
  const probabilities = Object.fromEntries(EMOTIONS.map((e, i) => [e, state.smoothed[i]]));
  const emotion = state.shownEmotion;
  $("recs-note").textContent = `Picked for someone who looks ${emotion}.`;
  try {
    const user = await userId();
    const lists = await Promise.all(CATEGORIES.map((category) => postJSON("/v1/recommendations",
      { probabilities, categories: [category], count: 2, user_id: user })));
    if (emotion !== state.shownEmotion) return; // the mood moved on meanwhile
    $("recs").replaceChildren(...lists.flatMap((list) => list.items).map(renderItem));
  } catch (err) {
    $("recs-note").textContent = `Recommendations are unavailable (${err.message}).`;
  }
}

function renderItem(rec) {
  const li = document.createElement("li");
  li.dataset.item = rec.item.id;
  const category = document.createElement("span");
  category.className = "category";
  category.textContent = rec.item.category;
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = rec.item.title;
  const reason = document.createElement("p");
  reason.className = "reason";
  reason.textContent = rec.reason;
  const actions = document.createElement("div");
  actions.className = "actions";
  const open = button("Open", () => {
    sendFeedback(rec.item.id, "click");
    if (rec.item.url) window.open(rec.item.url, "_blank", "noopener");
  });
  const like = button("Like", () => {
    sendFeedback(rec.item.id, "like");
    like.textContent = "Liked ✓";
    like.disabled = true;
  });
  open.setAttribute("aria-label", `Open ${rec.item.title}`);
  like.setAttribute("aria-label", `Like ${rec.item.title}`);
  if (rec.item.url) actions.append(open); // an item without a page has nothing to open
  actions.append(like);
  li.append(category, title, reason, actions);
  return li;
}

function button(text, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.addEventListener("click", onClick);
  return b;
}

function sendFeedback(itemId, kind) {
  const probabilities = state.smoothed ? Object.fromEntries(EMOTIONS.map((e, i) => [e, state.smoothed[i]])) : undefined;
  userId().then((user) => postJSON("/v1/feedback", { item_id: itemId, kind, probabilities, user_id: user }))
    .catch((err) => setStatus(`Feedback was not sent (${err.message}).`, true));
}

// --- privacy ------------------------------------------------------------------------------

async function forgetMe() {
  stopCamera("");
  const old = state.user ? await state.user.catch(() => null) : null;
  state.user = null; // a new user (and token) only when the page next needs one
  Object.assign(state, { smoothed: null, smoothedHead: null, shownEmotion: null, candidate: null, fps: 0, lastDone: 0 });
  $("recs").replaceChildren();
  $("recs-note").textContent = "";
  $("emotion").textContent = "…";
  $("confidence").textContent = "";
  $("fps").textContent = "0.0";
  buildBars();
  clearStill();
  let message = "Forgotten: nothing about you is kept.";
  try {
    if (old) {
      const response = await fetch(`/v1/users/${encodeURIComponent(old)}`, { method: "DELETE" });
      if (response.ok) message = `Forgotten: ${(await response.json()).events_deleted} stored feedback event(s) deleted.`;
    }
  } catch (err) {
    message = `The server could not be reached to delete your feedback (${err.message}).`;
  }
  $("live").hidden = true;
  $("recs-panel").hidden = true;
  $("consent").hidden = false;
  setStatus(message);
  $("consent-title").insertAdjacentElement("afterend", forgetNotice(message));
  $("consent-camera").focus();
}

function forgetNotice(message) {
  const old = document.getElementById("forget-notice");
  if (old) old.remove();
  const p = document.createElement("p");
  p.id = "forget-notice";
  p.setAttribute("role", "status");
  p.textContent = message;
  return p;
}

// --- wiring -------------------------------------------------------------------------------

function pickPhoto() {
  $("file").value = "";
  $("file").click();
}

// The model's classes, before any frame: the consent text names them and the bars are ready.
async function loadModel() {
  try {
    const response = await fetch("/v1/model");
    if (!response.ok) return;
    const model = await response.json();
    EMOTIONS = model.classes;
    const names = EMOTIONS.slice(0, -1).join(", ") + " or " + EMOTIONS[EMOTIONS.length - 1];
    $("model-classes").textContent = `: one of ${EMOTIONS.length} (${names})`;
    buildBars();
  } catch (err) {
    // the first answer brings the classes too
  }
}

document.addEventListener("DOMContentLoaded", () => {
  buildBars();
  updateControls();
  loadModel();
  $("consent-camera").addEventListener("click", startCamera);
  $("consent-photo").addEventListener("click", () => {
    showApp();
    setStatus("Choose a photo; it is analysed and not stored.");
    pickPhoto();
  });
  $("stop").addEventListener("click", () => stopCamera());
  $("forget").addEventListener("click", forgetMe);
  $("snap").addEventListener("click", snap);
  $("upload").addEventListener("click", () => {
    if (state.running) stopCamera("Camera off while you choose a photo.");
    pickPhoto();
  });
  $("resume").addEventListener("click", startCamera);
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) analysePhoto(file);
  });
  $("consent-camera").focus();
});
