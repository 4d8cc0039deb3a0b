// The page's wiring: pick or drop files, check them, create a batch, upload, follow progress,
// show results. Each file is one `entry`:
//   {id, file, name, size, contentType, status, reason, percent, previewUrl,
//    serverName, upload, resultUrl, resultName, view}
// `status` is one of view.js's STATUS_WORDS keys.

import { ApiError, archiveUrl, createBatch, getBatch } from "./api.js";
import { describeLevel, formatDuration, levelEntry, measureMegapixels, secondsFor } from "./estimate.js";
import { ProgressStream } from "./progress.js";
import { sniffFile } from "./sniff.js";
import { UploadQueue, UploadRefused, sendWithRetry } from "./upload.js";
import { FINAL_STATES, createRow, renderRow, renderSummary } from "./view.js";

/** How often the page asks the API for status while the live stream is down. */
const POLL_MS = 3000;

const ui = {
  dropZone: document.getElementById("drop-zone"),
  input: document.getElementById("file-input"),
  quality: document.getElementById("quality"),
  upscale: document.getElementById("upscale"),
  start: document.getElementById("start"),
  list: document.getElementById("files"),
  summary: document.getElementById("summary"),
  message: document.getElementById("message"),
  connection: document.getElementById("connection"),
  downloadAll: document.getElementById("download-all"),
  estimates: document.getElementById("estimates"),
};

const queue = new UploadQueue();
let entries = [];
let checking = 0;
let nextId = 1;
/** The running batch: {id, token, websocket, byName, startedAt, finishedAt, stream, poll, timer, level, speed}. */
let batch = null;
/** GET /api/v1/capabilities as last read (null until read, or when the API could not be asked). */
let caps = null;

// -- picking files ---------------------------------------------------------------------------
function addFiles(files) {
  if (batch && !batch.finishedAt) return; // the list is locked while a batch runs
  if (batch) startOver();
  showMessage("");
  for (const file of files) {
    const entry = { id: nextId++, file, name: file.name, size: file.size, status: "checking", reason: "", percent: 0 };
    entries.push(entry);
    ui.list.append(createRow(entry, { onRetry: retryUpload }));
    checking += 1;
    sniffFile(file).then((verdict) => {
      checking -= 1;
      if (verdict.ok) {
        entry.contentType = verdict.contentType;
        entry.status = "ready";
        measureMegapixels(file).then((megapixels) => {
          entry.megapixels = megapixels;
          entry.measured = true;
          renderEstimates();
        });
      } else {
        entry.status = "refused";
        entry.reason = verdict.reason;
      }
      renderRow(entry);
      update();
    });
  }
  update();
  loadCapabilities({ select: false }); // fresh speeds for the estimates, the person's choice kept
}

function startOver() {
  for (const entry of entries) if (entry.previewUrl) URL.revokeObjectURL(entry.previewUrl);
  entries = [];
  batch = null;
  ui.list.replaceChildren();
  ui.downloadAll.hidden = true;
  renderEstimates();
}

ui.input.addEventListener("change", () => {
  addFiles([...ui.input.files]);
  ui.input.value = "";
});

for (const type of ["dragenter", "dragover"]) {
  ui.dropZone.addEventListener(type, (event) => {
    event.preventDefault();
    ui.dropZone.classList.add("is-over");
  });
}
ui.dropZone.addEventListener("dragleave", () => ui.dropZone.classList.remove("is-over"));
ui.dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  ui.dropZone.classList.remove("is-over");
  addFiles([...(event.dataTransfer?.files || [])]);
});
// A file dropped next to the zone must not make the browser leave the page to show it.
for (const type of ["dragover", "drop"]) {
  window.addEventListener(type, (event) => event.preventDefault());
}

// -- the batch -------------------------------------------------------------------------------
ui.start.addEventListener("click", () => startBatch());

async function startBatch() {
  let wanted = entries.filter((entry) => entry.status === "ready");
  if (wanted.length === 0) return;
  lock(true);
  showMessage("");
  const options = { quality: ui.quality.value, upscale: Number(ui.upscale.value) };
  let created = null;
  while (wanted.length > 0 && created === null) {
    try {
      created = await createBatch(
        wanted.map((entry) => ({ name: entry.name, size: entry.size, content_type: entry.contentType })),
        options,
      );
    } catch (error) {
      const index = fileIndex(error);
      if (index === null || index >= wanted.length) {
        showMessage(`The batch could not be created: ${error.message}`);
        lock(false);
        return;
      }
      // The server refused one file: say why on its row, and go on with the others.
      const refused = wanted[index];
      refused.status = "refused";
      refused.reason = error.message;
      renderRow(refused);
      wanted = wanted.filter((entry) => entry !== refused);
    }
  }
  if (created === null) {
    showMessage("None of the files can be uploaded.");
    lock(false);
    update();
    return;
  }
  batch = {
    id: created.batch_id,
    token: created.token,
    websocket: created.progress.websocket,
    byName: new Map(),
    startedAt: performance.now(),
    finishedAt: null,
    stream: null,
    poll: null,
    timer: setInterval(update, 500),
    level: options.quality,
    // the level's measured speed when the batch started: the remaining-time estimate's basis
    speed: levelEntry(caps, options.quality)?.seconds_per_megapixel ?? null,
  };
  ui.estimates.hidden = true;
  created.uploads.forEach((upload, i) => {
    const entry = wanted[i];
    entry.serverName = upload.name;
    entry.upload = upload;
    entry.status = "queued";
    entry.previewUrl = URL.createObjectURL(entry.file);
    batch.byName.set(upload.name, entry);
    renderRow(entry);
  });
  ui.downloadAll.href = archiveUrl(batch.id, batch.token);
  follow(null);
  for (const entry of wanted) enqueueUpload(entry);
  update();
}

function fileIndex(error) {
  if (!(error instanceof ApiError) || !error.field) return null;
  const match = /^files\[(\d+)\]/.exec(error.field);
  return match ? Number(match[1]) : null;
}

// -- uploads ---------------------------------------------------------------------------------
function enqueueUpload(entry) {
  queue.add(async () => {
    entry.status = "uploading";
    entry.reason = "";
    renderRow(entry);
    try {
      await sendWithRetry(entry.upload, entry.file, {
        onProgress: (loaded, total) => {
          entry.percent = total ? (100 * loaded) / total : 0;
          if (entry.status === "retrying" && loaded > 0) {
            entry.status = "uploading";
            entry.reason = "";
          }
          renderRow(entry);
        },
        onRetry: (attempt, delayMs) => {
          entry.status = "retrying";
          entry.reason = `attempt ${attempt + 1} in ${Math.round(delayMs / 100) / 10} s`;
          renderRow(entry);
        },
      });
      if (["uploading", "retrying"].includes(entry.status)) {
        entry.status = "uploaded";
        entry.reason = "";
      }
    } catch (error) {
      if (["uploading", "retrying"].includes(entry.status)) {
        entry.status = "upload-failed";
        entry.reason =
          error instanceof UploadRefused
            ? error.message
            : "the store could not be reached after several tries; check your connection, then retry";
      }
    }
    renderRow(entry);
    update();
  });
}

function retryUpload(entry) {
  if (!batch || entry.status !== "upload-failed") return;
  entry.status = "queued";
  entry.reason = "";
  entry.percent = 0;
  renderRow(entry);
  if (batch.finishedAt) {
    // The batch was done for this page; follow it again from where the stream stopped.
    batch.finishedAt = null;
    batch.timer = setInterval(update, 500);
    follow(batch.stream ? batch.stream.lastSeq : null);
    lock(true);
  }
  enqueueUpload(entry);
  update();
}

// -- progress --------------------------------------------------------------------------------
function follow(since) {
  const current = batch;
  const stream = new ProgressStream(current.websocket, current.token, {
    onMessage: (message) => current === batch && receive(message),
    onConnection: (up) => current === batch && connectionChanged(up),
  });
  stream.lastSeq = since;
  current.stream = stream;
  stream.start();
}

function receive(message) {
  if (message.kind === "snapshot") {
    for (const image of message.images) applyImage(image);
  } else if (message.kind === "event" && message.image) {
    applyImage(message.image);
  }
  update();
}

function connectionChanged(up) {
  ui.connection.hidden = up;
  clearInterval(batch.poll);
  batch.poll = up ? null : setInterval(refresh, POLL_MS);
  if (up) refresh(); // anything that happened while the stream was down is in the status
}

/** Apply one image's state as the notifier or the API reports it. */
function applyImage(image) {
  const entry = batch.byName.get(image.name);
  if (!entry) return;
  if (image.result && image.result.url) {
    entry.resultUrl = image.result.url;
    entry.resultName = image.result.key.split("/").pop();
  }
  // A status answer read before an event arrived must not take a finished photo back: the stream
  // said it is done, the answer only had not seen it yet.
  // (A failed upload is different: a status answer saying the store has the file is news.)
  if (["completed", "failed"].includes(entry.status) && !["completed", "failed"].includes(image.state)) {
    renderRow(entry);
    return;
  }
  switch (image.state) {
    case "pending":
      // The store has the file, even when the browser never heard the upload's answer.
      if (["queued", "uploading", "retrying", "upload-failed", "waiting"].includes(entry.status)) {
        entry.status = "uploaded";
        entry.reason = "";
      }
      break;
    case "waiting_for_worker":
      entry.status = "waiting";
      entry.reason = `waiting for a worker that serves ${image.level || batch.level}`;
      break;
    case "processing":
      entry.status = "processing";
      entry.reason = "";
      break;
    case "completed":
      entry.status = "completed";
      entry.reason = "";
      if (!entry.resultUrl) scheduleRefresh();
      break;
    case "failed":
      entry.status = "failed";
      entry.reason = image.reason || "the image could not be enhanced";
      break;
    default:
      return;
  }
  renderRow(entry);
}

let refreshing = false;
let refreshAgain = false;

function scheduleRefresh() {
  if (refreshing) {
    refreshAgain = true;
  } else {
    refresh();
  }
}

/** Read the batch's status from the API: result links, and whatever the stream missed. */
async function refresh() {
  if (!batch || refreshing) return;
  const current = batch;
  refreshing = true;
  current.lastRead = performance.now();
  try {
    const status = await getBatch(current.id, current.token);
    if (current === batch) for (const image of status.images) applyImage(image);
  } catch (error) {
    // The API is down or restarting: the stream or the next poll brings the news.
  } finally {
    refreshing = false;
  }
  if (refreshAgain) {
    refreshAgain = false;
    refresh();
  }
  update();
}

// -- summary and controls --------------------------------------------------------------------
function update() {
  const count = (states) => entries.filter((entry) => states.includes(entry.status)).length;
  const completed = count(["completed"]);
  const failed = count(["failed", "refused", "upload-failed"]);
  if (!batch) {
    const ready = count(["ready"]);
    ui.summary.textContent = entries.length
      ? `${entries.length} file(s) picked, ${ready} ready to upload${failed ? `, ${failed} not usable` : ""}`
      : "No photos picked yet.";
    ui.start.disabled = ready === 0 || checking > 0;
    return;
  }
  const mine = [...batch.byName.values()];
  const done = mine.every((entry) => FINAL_STATES.has(entry.status));
  if (done && !batch.finishedAt) finish();
  if (!batch.finishedAt && !levelRuns(batch.level) && performance.now() - (batch.lastRead ?? 0) > POLL_MS &&
      mine.some((entry) => entry.status === "uploaded")) {
    // No worker ran the batch's level: the stream says nothing until one does, and only the status
    // API tells that an uploaded photo waits for one, so read it while some have not been told.
    refresh();
  }
  const end = batch.finishedAt ?? performance.now();
  renderSummary(ui.summary, {
    files: entries.length,
    completed,
    failed,
    busy: entries.length - completed - failed,
    elapsedMs: end - batch.startedAt,
    remaining: batch.finishedAt ? null : remainingText(mine),
  });
  if (batch.finishedAt) ui.summary.textContent = `Done: ${ui.summary.textContent}`;
  ui.downloadAll.hidden = completed === 0;
}

/** The remaining-time estimate of the running batch (null: nothing to say). */
function remainingText(mine) {
  const left = mine.filter((entry) => !FINAL_STATES.has(entry.status));
  if (left.length === 0) return null;
  const seconds = secondsFor(batch.speed, left.map((entry) => entry.megapixels));
  if (seconds !== null) return `${formatDuration(seconds)} left`;
  return `time left unknown: no measured speed for ${batch.level} yet`;
}

function finish() {
  batch.finishedAt = performance.now();
  clearInterval(batch.timer);
  clearInterval(batch.poll);
  batch.poll = null;
  if (batch.stream) batch.stream.close();
  ui.connection.hidden = true;
  lock(false);
  ui.start.disabled = true;
}

function lock(locked) {
  ui.start.disabled = locked;
  ui.input.disabled = locked;
  ui.quality.disabled = locked;
  ui.upscale.disabled = locked;
  ui.dropZone.classList.toggle("is-locked", locked);
}

function showMessage(text) {
  ui.message.textContent = text;
  ui.message.hidden = !text;
}

// -- what the fleet serves ---------------------------------------------------------------------
/**
 * Offer only the levels served now (others disabled, with why) and, when `select`, pre-select the
 * best served; keep the document for the estimates.
 */
async function loadCapabilities({ select = true } = {}) {
  try {
    const response = await fetch("/api/v1/capabilities", { cache: "no-store" });
    if (!response.ok) return;
    caps = await response.json();
  } catch {
    return; // the page still works; the API answers a level nobody serves with its reason
  }
  for (const level of caps.levels) {
    const option = ui.quality.querySelector(`option[value="${level.level}"]`);
    if (!option) continue;
    option.disabled = !level.served;
    option.title = level.served ? "" : `Not available now: ${level.why_not}`;
    if (!level.served && !option.textContent.endsWith("(not available now)")) {
      option.textContent += " (not available now)";
    }
  }
  if (select) ui.quality.value = caps.default_level;
  renderEstimates();
}

/** Whether a live worker served `level` when the capabilities were last read. */
function levelRuns(level) {
  const entry = levelEntry(caps, level);
  return entry === undefined || entry.workers > 0; // unknown: trust the stream
}

/** Each level's estimate for the chosen photos, before Enhance. */
function renderEstimates() {
  const chosen = entries.filter((entry) => entry.status === "ready" && entry.measured);
  if (!caps || batch || chosen.length === 0) {
    ui.estimates.hidden = true;
    return;
  }
  const megapixels = chosen.map((entry) => entry.megapixels);
  const total = megapixels.reduce((sum, mp) => sum + (mp || 0), 0);
  const heading = document.createElement("li");
  heading.className = "estimates-heading";
  heading.textContent = `Estimated time for ${chosen.length} photo(s), ${total.toFixed(2)} megapixels:`;
  const items = caps.levels.map((level) => {
    const item = document.createElement("li");
    item.dataset.level = level.level;
    item.textContent = `${level.level}: ${describeLevel(level, megapixels)}`;
    return item;
  });
  ui.estimates.replaceChildren(heading, ...items);
  ui.estimates.hidden = false;
}

window.addEventListener("beforeunload", (event) => {
  if (entries.some((entry) => ["queued", "uploading", "retrying"].includes(entry.status))) {
    event.preventDefault();
  }
});

update();
loadCapabilities();
