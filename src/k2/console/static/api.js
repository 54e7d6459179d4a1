// The public REST API, with the key kept in sessionStorage (this tab only). Every page uses only this.

const KEY = "k2.apiKey";

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

export function getKey() { return sessionStorage.getItem(KEY); }
export function setKey(key) { sessionStorage.setItem(KEY, key); }
export function forgetKey() { sessionStorage.removeItem(KEY); }

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

async function failure(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON */ }
  const error = body && body.error ? body.error : {};
  const message = error.message || `${response.status} ${response.statusText}`;
  return new ApiError(response.status, error.code || "http_error", message, body);
}

// A page makes several calls at once; on a busy server some are refused with 429/503 and a
// Retry-After (the per-key cap of requests in progress, the process bound). Wait and retry a few
// times, as any good client does, before showing the refusal. The bound is a time budget, not a count:
// eight calls behind a cap of one each wait for the others, longer on a loaded server.
const RETRY_BUDGET_MS = 30000;
const MAX_WAIT_MS = 5000;

function retryWaitMs(response, attempt) {
  const seconds = Number(response.headers.get("Retry-After"));
  const base = Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 500 * 2 ** attempt;
  return Math.min(MAX_WAIT_MS, base) * (0.5 + Math.random() / 2);  // jitter: the calls must not retry in step
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => { clearTimeout(timer); reject(signal.reason); }, { once: true });
  });
}

/** GET/POST a path of this server; JSON answers are parsed, others returned as a Blob. */
export async function api(path, params = {}, { method = "GET", body, key = getKey(), format, signal } = {}) {
  const headers = {};
  if (key) headers["X-API-Key"] = key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  const started = Date.now();
  for (let attempt = 0; ; attempt += 1) {
    response = await fetch(path + query({ ...params, format }), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal,
    });
    if (!(response.status === 429 || response.status === 503)) break;
    const wait = retryWaitMs(response, attempt);
    if (Date.now() - started + wait > RETRY_BUDGET_MS) break;
    await sleep(wait, signal);
  }
  if (!response.ok) throw await failure(response);
  if (format && format !== "json") return { blob: await response.blob(), headers: response.headers };
  return parseJson(await response.text());
}

/** JSON.parse, keeping integers beyond 2^53 (Iceberg snapshot ids) exact, as strings. */
export function parseJson(text) {
  return JSON.parse(text, (key, value, context) => (
    typeof value === "number" && !Number.isSafeInteger(value) && context && /^-?\d+$/.test(context.source) ? context.source : value));
}

/** Every page of a cursor-paged endpoint, up to maxRows rows. */
export async function allPages(path, params, maxRows = 20000) {
  const rows = [];
  let cursor;
  do {
    const page = await api(path, { ...params, cursor });
    rows.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor && rows.length < maxRows);
  return rows;
}

export async function sql(text, params, asOf, format) {
  return api("/v1/sql", {}, { method: "POST", body: { sql: text, params, as_of: asOf || undefined }, format });
}
