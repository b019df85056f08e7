/**
 * `GatewayStatusItem`: the status-bar item with the default model and a health mark.
 *
 * The item is a real `<button>`, so it is in the tab order and Enter or Space
 * opens the diagnostics panel. Its tooltip and its accessible name say what is
 * wrong; the mark is a symbol as well as a colour, so it reads without colour.
 */

import { Widget } from '@lumino/widgets';

import { firstProblem, GatewayStatusModel, IGatewayState } from './model';

/** The mark shown before the model name for each health. */
const MARKS = {
  ok: '\u2713',
  warn: '!',
  error: '\u2715',
  unknown: '\u2026'
} as const;

type Health = keyof typeof MARKS;

export class GatewayStatusItem extends Widget {
  private _button: HTMLButtonElement;
  private _mark: HTMLSpanElement;
  private _label: HTMLSpanElement;

  constructor(
    private readonly _model: GatewayStatusModel,
    private readonly _open: () => void
  ) {
    super();
    this.addClass('akko-llm-StatusItem');

    this._button = document.createElement('button');
    this._button.type = 'button';
    this._button.className = 'akko-llm-StatusItem-button';
    this._mark = document.createElement('span');
    this._mark.className = 'akko-llm-StatusItem-mark';
    this._mark.setAttribute('aria-hidden', 'true');
    this._label = document.createElement('span');
    this._label.className = 'akko-llm-StatusItem-label';
    this._button.append(this._mark, this._label);
    this._button.addEventListener('click', () => this._open());
    this.node.appendChild(this._button);

    this._model.changed.connect(this._render, this);
    this._render(this._model, this._model.state);
  }

  dispose(): void {
    this._model.changed.disconnect(this._render, this);
    super.dispose();
  }

  private _render(_: GatewayStatusModel, state: IGatewayState): void {
    const { health, model, headline, detail } = describe(state);
    this.node.dataset.health = health;
    this._mark.textContent = MARKS[health];
    this._label.textContent = model;
    const explanation = detail ? `\n${detail}` : '';
    this._button.title = `The model gateway is ${headline}.${explanation}\nClick for the diagnostics.`;
    this._button.setAttribute(
      'aria-label',
      `Model gateway, default model ${model}: ${headline}. ${detail} Open the diagnostics.`
    );
  }
}

/** The description of a state that the item and the panel show. */
export interface IDescription {
  health: Health;
  /** The default chat model, or a placeholder before the first report. */
  model: string;
  /** A short phrase that follows "The model gateway is", without a full stop. */
  headline: string;
  /** The failed check with its message and hint, or an empty string when all pass. */
  detail: string;
}

/** Return how the status item and the panel describe ``state``. */
export function describe(state: IGatewayState): IDescription {
  const report = state.report;
  const model = report?.default_models.chat ?? 'model gateway';

  if (state.requestError) {
    return {
      health: 'error',
      model,
      headline: 'not checked: the status request failed',
      detail: state.requestError
    };
  }
  if (!report) {
    return { health: 'unknown', model, headline: 'being checked', detail: '' };
  }
  const problem = firstProblem(report);
  if (!problem) {
    return {
      health: 'ok',
      model,
      headline: `healthy: ${model} is served by ${report.upstream_url}`,
      detail: ''
    };
  }
  const hint = problem.hint ? ` ${problem.hint}` : '';
  const detail = `${problem.title}: ${problem.message}${hint}`;
  if (problem.status === 'error') {
    return {
      health: 'error',
      model,
      headline: `not working: the check "${problem.title}" failed`,
      detail
    };
  }
  return {
    health: 'warn',
    model,
    headline: `working, but the check "${problem.title}" reports a problem`,
    detail
  };
}
