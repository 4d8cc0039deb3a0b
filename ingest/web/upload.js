// Uploads straight to the object store through the presigned requests the API handed out:
// XMLHttpRequest (fetch has no upload progress), a few at a time, network errors retried with
// back-off. A refusal by the store (expired or violated policy) is not retried: it would be
// refused again.

/** Uploads running at once. */
export const CONCURRENT_UPLOADS = 4;

/** Tries per file when the network fails, and the first back-off (doubled each time). */
const NETWORK_ATTEMPTS = 5;
const FIRST_BACKOFF_MS = 500;

/** The upload failed because the network did (offline, store down, connection reset). */
export class NetworkError extends Error {}

/** The store answered and refused the upload; `message` says why in plain words. */
export class UploadRefused extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Plain words for the store's error codes a person can meet. */
const STORE_REASONS = {
  AccessDenied: "The store refused the upload: the upload link expired or does not match this file. Start a new batch.",
  EntityTooLarge: "The file is larger than it was when the batch was created.",
  EntityTooSmall: "The file is empty.",
  ExpiredToken: "The upload link expired. Start a new batch.",
};

function storeRefusal(xhr) {
  let code = "";
  let message = "";
  try {
    const doc = new DOMParser().parseFromString(xhr.responseText || "", "application/xml");
    code = doc.querySelector("Code")?.textContent ?? "";
    message = doc.querySelector("Message")?.textContent ?? "";
  } catch (error) {
    // an unreadable body says nothing more than the status
  }
  const words = STORE_REASONS[code] || message || `The store refused the upload (HTTP ${xhr.status}).`;
  return new UploadRefused(xhr.status, words);
}

/**
 * Send one file once.
 * @param {{method: string, url: string, fields?: Object<string,string>, headers?: Object<string,string>}} upload
 * @param {File} file
 * @param {(loaded: number, total: number) => void} onProgress
 * @returns {Promise<void>}
 */
export function sendOnce(upload, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(upload.method, upload.url);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(file.size, file.size);
        resolve();
      } else {
        reject(storeRefusal(xhr));
      }
    });
    xhr.addEventListener("error", () => reject(new NetworkError("network error")));
    xhr.addEventListener("timeout", () => reject(new NetworkError("timed out")));
    xhr.addEventListener("abort", () => reject(new NetworkError("aborted")));
    if (upload.method === "POST") {
      const form = new FormData();
      for (const [name, value] of Object.entries(upload.fields || {})) form.append(name, value);
      form.append("file", file); // the file must be the last field of a POST policy upload
      xhr.send(form);
    } else {
      for (const [name, value] of Object.entries(upload.headers || {})) xhr.setRequestHeader(name, value);
      xhr.send(file);
    }
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Send one file, retrying network failures with back-off.
 * @param {object} upload the presigned request
 * @param {File} file
 * @param {{onProgress: Function, onRetry?: (attempt: number, delayMs: number) => void}} hooks
 */
export async function sendWithRetry(upload, file, { onProgress, onRetry }) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      await sendOnce(upload, file, onProgress);
      return;
    } catch (error) {
      if (!(error instanceof NetworkError) || attempt >= NETWORK_ATTEMPTS) throw error;
      const delay = FIRST_BACKOFF_MS * 2 ** (attempt - 1);
      onRetry?.(attempt, delay);
      onProgress(0, file.size);
      await sleep(delay);
    }
  }
}

/**
 * A queue that runs at most `limit` uploads at once, in the order they were added.
 */
export class UploadQueue {
  constructor(limit = CONCURRENT_UPLOADS) {
    this.limit = limit;
    this.running = 0;
    this.waiting = [];
  }

  /** Add a job (an async function); returns its promise. */
  add(job) {
    return new Promise((resolve, reject) => {
      this.waiting.push({ job, resolve, reject });
      this.next();
    });
  }

  next() {
    while (this.running < this.limit && this.waiting.length > 0) {
      const { job, resolve, reject } = this.waiting.shift();
      this.running += 1;
      job()
        .then(resolve, reject)
        .finally(() => {
          this.running -= 1;
          this.next();
        });
    }
  }
}
