/**
 * `GatewayPanel`: the diagnostics view that the status-bar item opens.
 *
 * It lists every check with its time, message and hint, runs the live test on
 * request, and shows the endpoint URL for use from other tools with a copy
 * button. Text from the gateway is set as text, never parsed as HTML.
 */

import { Clipboard } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { CheckStatus, ICheck } from './api';
import { GatewayStatusModel, IGatewayState } from './model';
import { describe } from './statusItem';

const STATUS_WORDS: { [status in CheckStatus]: string } = {
  ok: 'OK',
  warn: 'Warning',
  error: 'Error',
  skipped: 'Skipped'
};

export class GatewayPanel extends Widget {
  private _summary: HTMLParagraphElement;
  private _refreshButton: HTMLButtonElement;
  private _liveButton: HTMLButtonElement;
  private _liveResult: HTMLParagraphElement;
  private _endpoint: HTMLInputElement;
  private _copyButton: HTMLButtonElement;
  private _copyResult: HTMLSpanElement;
  private _checks: HTMLUListElement;

  constructor(private readonly _model: GatewayStatusModel) {
    super();
    this.id = 'akko-llm-gateway-panel';
    this.addClass('akko-llm-Panel');
    this.title.label = 'Model gateway';
    this.title.caption = 'Diagnostics of the model gateway';
    this.title.closable = true;

    const heading = element(
      'h2',
      { id: 'akko-llm-panel-heading', tabindex: '-1' },
      'Model gateway'
    );
    this._summary = element('p', { class: 'akko-llm-Panel-summary', 'aria-live': 'polite' });

    this._refreshButton = button('Check again', () => void this._model.refresh());
    this._liveButton = button('Run live test', () => void this._model.runLiveTest());
    this._liveButton.classList.add('akko-llm-Panel-liveButton');
    const actions = element('div', { class: 'akko-llm-Panel-actions' });
    actions.append(this._refreshButton, this._liveButton);
    this._liveResult = element('p', {
      class: 'akko-llm-Panel-liveResult',
      role: 'status'
    });

    const endpointSection = this._buildEndpointSection();
    this._endpoint = endpointSection.querySelector('input')!;
    this._copyButton = endpointSection.querySelector('button')!;
    this._copyResult = endpointSection.querySelector('.akko-llm-Panel-copyResult')!;

    const checksHeading = element('h3', { id: 'akko-llm-checks-heading' }, 'Checks');
    this._checks = element('ul', {
      class: 'akko-llm-Panel-checks',
      'aria-labelledby': 'akko-llm-checks-heading'
    });

    this.node.append(
      heading,
      this._summary,
      actions,
      this._liveResult,
      endpointSection,
      checksHeading,
      this._checks
    );

    this._model.changed.connect(this._render, this);
    this._render(this._model, this._model.state);
  }

  dispose(): void {
    this._model.changed.disconnect(this._render, this);
    super.dispose();
  }

  private _buildEndpointSection(): HTMLElement {
    const section = element('section', {
      class: 'akko-llm-Panel-endpoint',
      'aria-labelledby': 'akko-llm-endpoint-heading'
    });
    const heading = element('h3', { id: 'akko-llm-endpoint-heading' }, 'Endpoint for other tools');
    const help = element(
      'p',
      { id: 'akko-llm-endpoint-help' },
      'An OpenAI-compatible base URL. Send your Jupyter token as ' +
        "'Authorization: token <your token>'; the gateway key stays on the server."
    );
    const input = element('input', {
      id: 'akko-llm-endpoint-url',
      class: 'jp-mod-styled akko-llm-Panel-endpointUrl',
      type: 'text',
      readonly: '',
      'aria-label': 'Endpoint URL',
      'aria-describedby': 'akko-llm-endpoint-help'
    });
    input.addEventListener('focus', () => input.select());
    const copy = button('Copy URL', () => this._copy());
    const result = element('span', {
      class: 'akko-llm-Panel-copyResult',
      role: 'status'
    });
    const row = element('div', { class: 'akko-llm-Panel-endpointRow' });
    row.append(input, copy, result);
    section.append(heading, help, row);
    return section;
  }

  private _copy(): void {
    if (!this._endpoint.value) {
      return;
    }
    Clipboard.copyToSystem(this._endpoint.value);
    this._copyResult.textContent = 'Copied.';
    window.setTimeout(() => (this._copyResult.textContent = ''), 3000);
  }

  private _render(_: GatewayStatusModel, state: IGatewayState): void {
    const { health, headline, detail } = describe(state);
    this.node.dataset.health = health;
    const checkedAt = state.report ? ` Last checked ${state.report.checked_at}.` : '';
    // The checks below repeat a failed check's detail, unless there is no report.
    const requestDetail = state.requestError ? ` ${detail}` : '';
    this._summary.textContent = `The model gateway is ${headline}.${requestDetail}${checkedAt}`;

    this._refreshButton.disabled = state.loading;
    this._liveButton.disabled = state.liveTestRunning;
    this._liveButton.textContent = state.liveTestRunning
      ? 'Live test running\u2026'
      : 'Run live test';
    this._liveResult.textContent = liveTestText(state);
    this._liveResult.dataset.status = state.liveTestError
      ? 'error'
      : (state.liveTest?.status ?? '');

    const endpoint = state.report?.endpoint ?? '';
    this._endpoint.value = endpoint;
    this._copyButton.disabled = !endpoint;

    const checks = state.report?.checks ?? [];
    this._checks.replaceChildren(...checks.map(renderCheck));
  }
}

function liveTestText(state: IGatewayState): string {
  if (state.liveTestRunning) {
    return 'Live test running: one short streamed completion with the default model\u2026';
  }
  if (state.liveTestError) {
    return `The live test could not run: ${state.liveTestError}`;
  }
  const live = state.liveTest;
  if (!live) {
    return 'The live test sends one short streamed completion and times the first token.';
  }
  const firstToken = live.details?.time_to_first_token_ms;
  const prefix =
    typeof firstToken === 'number' ? `Time to first token: ${Math.round(firstToken)} ms. ` : '';
  const hint = live.status !== 'ok' && live.hint ? ` ${live.hint}` : '';
  return `${prefix}${live.message}${hint}`;
}

function renderCheck(check: ICheck): HTMLLIElement {
  const item = element('li', { class: 'akko-llm-Check', 'data-check': check.name });
  item.dataset.status = check.status;
  const badge = element(
    'span',
    { class: 'akko-llm-Check-status' },
    STATUS_WORDS[check.status] ?? check.status
  );
  const title = element('span', { class: 'akko-llm-Check-title' }, check.title);
  const time = element('span', { class: 'akko-llm-Check-time' }, `${Math.round(check.ms)} ms`);
  const header = element('div', { class: 'akko-llm-Check-header' });
  header.append(badge, title, time);
  const message = element('p', { class: 'akko-llm-Check-message' }, check.message);
  item.append(header, message);
  if (check.hint) {
    const hint = element('p', { class: 'akko-llm-Check-hint' });
    hint.append(element('strong', {}, 'What to do: '), check.hint);
    item.append(hint);
  }
  return item;
}

function button(label: string, onClick: () => void): HTMLButtonElement {
  const node = element('button', { type: 'button', class: 'jp-Button akko-llm-Button' }, label);
  node.addEventListener('click', onClick);
  return node;
}

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: { [name: string]: string },
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, value);
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}
