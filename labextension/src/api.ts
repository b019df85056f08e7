/**
 * Requests to the server extension's status endpoint, `{baseUrl}akko-llm/status`.
 *
 * Every request goes through `ServerConnection.makeRequest`, which adds the
 * Jupyter token or the XSRF header; a plain `fetch` POST is rejected with 403.
 */

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** The status of one check, as the server reports it. */
export type CheckStatus = 'ok' | 'warn' | 'error' | 'skipped';

/** One named check of a report. */
export interface ICheck {
  name: string;
  title: string;
  status: CheckStatus;
  ms: number;
  message: string;
  hint: string | null;
  details?: { [key: string]: unknown };
}

/** A diagnostics report of `GET` or `POST akko-llm/status`. */
export interface IStatusReport {
  status: 'ok' | 'warn' | 'error';
  upstream_url: string;
  key_source: string;
  default_models: { chat: string; embeddings: string; completions: string };
  models: { id: string; kind: string; kind_source: string }[];
  checks: ICheck[];
  checked_at: string;
  endpoint: string;
  cached: boolean;
}

/** A failed request to the status endpoint, with a message for the user. */
export class StatusRequestError extends Error {
  constructor(
    message: string,
    readonly status: number | null
  ) {
    super(message);
  }
}

const STATUS_PATH = 'akko-llm/status';

/** Return the URL of the status endpoint for these server settings. */
export function statusUrl(settings: ServerConnection.ISettings): string {
  return URLExt.join(settings.baseUrl, STATUS_PATH);
}

/** Fetch the checks without the live test. */
export function fetchStatus(
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<IStatusReport> {
  return requestStatus('GET', settings);
}

/** Run every check and the live test (one streamed completion). */
export function runLiveTest(
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<IStatusReport> {
  return requestStatus('POST', settings);
}

async function requestStatus(
  method: 'GET' | 'POST',
  settings: ServerConnection.ISettings
): Promise<IStatusReport> {
  const url = statusUrl(settings);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, { method }, settings);
  } catch (error) {
    throw new StatusRequestError(
      `The Jupyter server did not respond to ${method} ${url}: ${String(error)}. ` +
        'Check that the Jupyter server is still running, then reload the page.',
      null
    );
  }

  let body: unknown = null;
  const text = await response.text();
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }

  if (!response.ok) {
    throw new StatusRequestError(describeFailure(method, url, response, body), response.status);
  }
  if (!isReport(body)) {
    throw new StatusRequestError(
      `${method} ${url} did not return a gateway report. ` +
        'Check that the akko_jupyter_llm server extension of the same version is ' +
        'enabled (`jupyter server extension list`).',
      response.status
    );
  }
  return body;
}

function describeFailure(method: string, url: string, response: Response, body: unknown): string {
  const serverMessage =
    body && typeof body === 'object' && 'message' in body
      ? String((body as { message: unknown }).message)
      : '';
  if (response.status === 404) {
    return (
      `${url} was not found (HTTP 404): the akko_jupyter_llm server extension is ` +
      'not enabled in this Jupyter server. Run `jupyter server extension list` ' +
      'and restart the server after enabling it.'
    );
  }
  if (response.status === 403) {
    return (
      `${method} ${url} was rejected (HTTP 403): ${serverMessage || 'forbidden'}. ` +
      'Your session may have expired: reload the page and log in again.'
    );
  }
  if (response.status === 429) {
    return serverMessage || 'A live test is already running: wait for its result.';
  }
  return (
    `${method} ${url} failed with HTTP ${response.status}` +
    (serverMessage ? `: ${serverMessage}` : '.') +
    ' Look at the Jupyter server log for the cause.'
  );
}

function isReport(body: unknown): body is IStatusReport {
  return (
    !!body &&
    typeof body === 'object' &&
    Array.isArray((body as IStatusReport).checks) &&
    typeof (body as IStatusReport).status === 'string'
  );
}
