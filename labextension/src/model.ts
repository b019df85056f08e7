/**
 * `GatewayStatusModel`: the latest gateway report, refreshed on a timer.
 *
 * The status-bar item and the diagnostics panel both render this one model, so
 * the page sends one request per interval, however many views are open.
 */

import { ISignal, Signal } from '@lumino/signaling';

import { fetchStatus, ICheck, IStatusReport, runLiveTest, StatusRequestError } from './api';

/** The state that the views render: the last report, or the reason there is none. */
export interface IGatewayState {
  /** The last report received, kept while a later request fails. */
  report: IStatusReport | null;
  /** The reason the last request failed, or null when it succeeded. */
  requestError: string | null;
  /** Whether a request (a check or the live test) is in progress. */
  loading: boolean;
  /** Whether the live test is in progress. */
  liveTestRunning: boolean;
  /** The live-test check of the last live test, or null before the first. */
  liveTest: ICheck | null;
  /** The reason the last live-test request failed, or null when it succeeded. */
  liveTestError: string | null;
}

export class GatewayStatusModel {
  private _state: IGatewayState = {
    report: null,
    requestError: null,
    loading: false,
    liveTestRunning: false,
    liveTest: null,
    liveTestError: null
  };
  private _changed = new Signal<this, IGatewayState>(this);
  private _timer: number | null = null;
  private _intervalSeconds = 60;
  private _refreshing: Promise<void> | null = null;
  private _disposed = false;

  /** Emitted after every change of `state`. */
  get changed(): ISignal<this, IGatewayState> {
    return this._changed;
  }

  get state(): IGatewayState {
    return this._state;
  }

  /** Seconds between two checks. 0 stops the timer. */
  set intervalSeconds(seconds: number) {
    this._intervalSeconds = Math.max(0, seconds);
    this._schedule();
  }

  /** Request the checks now. Concurrent calls share one request. */
  refresh(): Promise<void> {
    if (!this._refreshing) {
      this._refreshing = this._refresh().finally(() => {
        this._refreshing = null;
        this._schedule();
      });
    }
    return this._refreshing;
  }

  /** Run the live test and store its check in `state.liveTest`. */
  async runLiveTest(): Promise<void> {
    if (this._state.liveTestRunning) {
      return;
    }
    this._update({ liveTestRunning: true, loading: true });
    try {
      const report = await runLiveTest();
      const liveTest = report.checks.find(check => check.name === 'live_test') ?? null;
      this._update({ report, liveTest, requestError: null, liveTestError: null });
    } catch (error) {
      // A failed live-test request (for example HTTP 429 while another one runs)
      // says nothing about the gateway, so the status item keeps its state.
      this._update({ liveTestError: messageOf(error) });
    } finally {
      this._update({ liveTestRunning: false, loading: false });
    }
  }

  dispose(): void {
    this._disposed = true;
    this._clearTimer();
    Signal.clearData(this);
  }

  private async _refresh(): Promise<void> {
    this._update({ loading: true });
    try {
      const report = await fetchStatus();
      this._update({ report, requestError: null });
    } catch (error) {
      this._update({ requestError: messageOf(error) });
    } finally {
      this._update({ loading: false });
    }
  }

  private _schedule(): void {
    this._clearTimer();
    if (this._disposed || this._intervalSeconds <= 0) {
      return;
    }
    this._timer = window.setTimeout(() => {
      this._timer = null;
      // A hidden tab waits for the next interval instead of sending a request.
      if (document.visibilityState === 'hidden') {
        this._schedule();
      } else {
        void this.refresh();
      }
    }, this._intervalSeconds * 1000);
  }

  private _clearTimer(): void {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
  }

  private _update(change: Partial<IGatewayState>): void {
    if (this._disposed) {
      return;
    }
    this._state = { ...this._state, ...change };
    this._changed.emit(this._state);
  }
}

/** Return the first check that is not ok, the worst first. */
export function firstProblem(report: IStatusReport): ICheck | null {
  return (
    report.checks.find(check => check.status === 'error') ??
    report.checks.find(check => check.status === 'warn') ??
    null
  );
}

function messageOf(error: unknown): string {
  if (error instanceof StatusRequestError) {
    return error.message;
  }
  return `Checking the model gateway failed: ${String(error)}. Reload the page and try again.`;
}
