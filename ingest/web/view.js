// Rendering. Every text that comes from a person or the server (file names, reasons) is set with
// textContent, never parsed as HTML, so a file named "<img onerror=...>.jpg" is shown as typed.

import { createCompare } from "./compare.js";

/** What a person reads for each state of a file. */
const STATUS_WORDS = {
  checking: "Checking…",
  ready: "Ready to upload",
  refused: "Not uploaded",
  queued: "Waiting to upload",
  uploading: "Uploading",
  retrying: "Network problem, trying again",
  "upload-failed": "Upload failed",
  uploaded: "Uploaded, waiting to be enhanced",
  waiting: "Uploaded",
  processing: "Enhancing…",
  completed: "Enhanced",
  failed: "Failed",
};

/** States after which nothing more happens to a file (unless a person retries an upload). */
export const FINAL_STATES = new Set(["refused", "upload-failed", "completed", "failed"]);

export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * Build the list item of one file; its parts are kept on `entry.view`.
 * @param {object} entry the file's state (see app.js)
 * @param {{onRetry: (entry: object) => void}} actions
 */
export function createRow(entry, { onRetry }) {
  const li = element("li", "file");
  li.dataset.state = entry.status;
  const head = element("div", "file-head");
  const name = element("span", "file-name", entry.name);
  const size = element("span", "file-size", formatBytes(entry.size));
  head.append(name, size);

  const status = element("p", "file-status");
  const progress = element("progress", "file-progress");
  progress.max = 100;
  progress.value = 0;
  progress.setAttribute("aria-label", `Upload of ${entry.name}`);

  const retry = element("button", "file-retry", "Retry upload");
  retry.type = "button";
  retry.hidden = true;
  retry.setAttribute("aria-label", `Retry upload of ${entry.name}`);
  retry.addEventListener("click", () => onRetry(entry));

  const result = element("div", "file-result");
  li.append(head, status, progress, retry, result);
  entry.view = { li, status, progress, retry, result };
  renderRow(entry);
  return li;
}

/** Bring a file's row up to date with its state. */
export function renderRow(entry) {
  const { li, status, progress, retry, result } = entry.view;
  li.dataset.state = entry.status;
  let words = STATUS_WORDS[entry.status] || entry.status;
  if (entry.status === "uploading") words += ` ${Math.floor(entry.percent)}%`;
  status.textContent = entry.reason ? `${words}: ${entry.reason}` : words;
  const showProgress = ["queued", "uploading", "retrying"].includes(entry.status);
  progress.hidden = !showProgress;
  progress.value = entry.percent;
  retry.hidden = entry.status !== "upload-failed";
  if (entry.status === "completed" && entry.resultUrl && !result.firstChild) {
    result.append(
      createCompare({ before: entry.previewUrl, after: entry.resultUrl, name: entry.name }),
      downloadLink(entry),
    );
  }
}

function downloadLink(entry) {
  const link = element("a", "file-download", `Download ${entry.resultName || entry.name}`);
  link.href = entry.resultUrl;
  link.download = entry.resultName || "";
  link.rel = "noopener";
  return link;
}

/**
 * The batch summary line.
 * @param {HTMLElement} node
 * @param {{files: number, completed: number, failed: number, busy: number, elapsedMs: number|null,
 *          remaining: string|null}} stats
 */
export function renderSummary(node, stats) {
  const parts = [`${stats.completed} of ${stats.files} enhanced`];
  if (stats.failed) parts.push(`${stats.failed} failed`);
  if (stats.busy) parts.push(`${stats.busy} in progress`);
  if (stats.elapsedMs !== null) parts.push(`${(stats.elapsedMs / 1000).toFixed(1)} s elapsed`);
  if (stats.remaining) parts.push(stats.remaining);
  node.textContent = parts.join(" · ");
}
