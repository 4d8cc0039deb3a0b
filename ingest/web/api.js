// Calls to the ingest API that served this page (same origin, paths relative to the page).

/** An error answer of the API: `code` is stable, `message` is for people, `field` names the input. */
export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

async function call(path, { method = "GET", token, body } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(new URL(path, document.baseURI), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, "unreachable", "The server cannot be reached. Check your connection and try again.");
  }
  const doc = await response.json().catch(() => null);
  if (!response.ok) {
    const error = (doc && doc.error) || {};
    throw new ApiError(
      response.status,
      error.code || "http_error",
      error.message || `The server answered HTTP ${response.status}.`,
      error.field,
    );
  }
  return doc;
}

/**
 * Create a batch; returns the API's answer (batch_id, token, uploads, progress, links).
 * @param {{name: string, size: number, content_type: string}[]} files
 * @param {object} options enhancement options
 */
export function createBatch(files, options) {
  return call("api/v1/batches", { method: "POST", body: { files, options } });
}

/** Images asked for per status page (the API's largest page). */
const STATUS_PAGE_SIZE = 500;

/**
 * A batch's status with each image's state, reason and result link. The API answers a page of
 * images at a time; this follows `next` to the last page and returns every image.
 */
export async function getBatch(batchId, token) {
  const path = `api/v1/batches/${encodeURIComponent(batchId)}`;
  const first = await call(`${path}?limit=${STATUS_PAGE_SIZE}`, { token });
  const images = [...first.images];
  let cursor = first.next;
  while (cursor) {
    const query = new URLSearchParams({ after: cursor, limit: String(STATUS_PAGE_SIZE) });
    const page = await call(`${path}?${query}`, { token });
    images.push(...page.images);
    cursor = page.next;
  }
  return { ...first, images, next: null };
}

/** The link that downloads every result as one ZIP (a browser cannot send headers on a link). */
export function archiveUrl(batchId, token) {
  const url = new URL(`api/v1/batches/${encodeURIComponent(batchId)}/archive`, document.baseURI);
  url.searchParams.set("token", token);
  return url.toString();
}
