/**
 * The JupyterLab plugin `akko-jupyter-llm:plugin`.
 *
 * It adds a status-bar item with the default model and the gateway's health, a
 * diagnostics panel that the item opens, and palette commands to check the
 * gateway and to insert a notebook cell that calls the default model. The
 * settings `pollInterval` and `showStatusItem` live in schema/plugin.json.
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Signal } from '@lumino/signaling';

import { modelCallCode } from './cell';
import { firstProblem, GatewayStatusModel } from './model';
import { GatewayPanel } from './panel';
import { GatewayStatusItem } from './statusItem';

const PLUGIN_ID = 'akko-jupyter-llm:plugin';
const CATEGORY = 'Model gateway';

export namespace CommandIDs {
  export const open = 'akko-llm:open-diagnostics';
  export const check = 'akko-llm:check-gateway';
  export const insertCell = 'akko-llm:insert-model-cell';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Status item, diagnostics panel and commands for the model gateway.',
  autoStart: true,
  optional: [IStatusBar, ICommandPalette, INotebookTracker, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    statusBar: IStatusBar | null,
    palette: ICommandPalette | null,
    notebooks: INotebookTracker | null,
    settingRegistry: ISettingRegistry | null
  ) => {
    const model = new GatewayStatusModel();
    let panel: GatewayPanel | null = null;
    let showStatusItem = true;
    const statusItemToggled = new Signal<object, void>({});

    const openPanel = () => {
      if (!panel || panel.isDisposed) {
        panel = new GatewayPanel(model);
        app.shell.add(panel, 'main', { mode: 'split-right' });
      }
      app.shell.activateById(panel.id);
      panel.node.querySelector<HTMLElement>('h2')?.focus();
    };

    app.commands.addCommand(CommandIDs.open, {
      label: 'Open Model Gateway Diagnostics',
      caption: 'Show every gateway check with its hint, the live test and the endpoint URL',
      execute: openPanel
    });

    app.commands.addCommand(CommandIDs.check, {
      label: 'Check the Model Gateway',
      caption: 'Run the gateway checks now and show the result',
      execute: async () => {
        await model.refresh();
        openPanel();
        const { report, requestError } = model.state;
        const problem = report ? firstProblem(report) : null;
        if (requestError) {
          Notification.error(requestError, { autoClose: false });
        } else if (problem) {
          const notify = problem.status === 'error' ? Notification.error : Notification.warning;
          notify(`${problem.title}: ${problem.message}`, { autoClose: 8000 });
        } else if (report) {
          Notification.success(
            `The model gateway is healthy; ${report.default_models.chat} is served.`,
            { autoClose: 4000 }
          );
        }
      }
    });

    app.commands.addCommand(CommandIDs.insertCell, {
      label: 'Insert a Cell That Calls the Default Model',
      caption: 'Add a code cell below the active one that calls the model with openai_client()',
      isEnabled: () => !!notebooks?.currentWidget,
      execute: async () => {
        const current = notebooks?.currentWidget;
        if (!current) {
          Notification.warning(
            'Open a notebook first: the cell is inserted into the active notebook.'
          );
          return;
        }
        if (!model.state.report) {
          await model.refresh();
        }
        const chatModel = model.state.report?.default_models.chat;
        if (!chatModel) {
          Notification.error(
            'The default model is unknown because the gateway status could not be read: ' +
              `${model.state.requestError ?? 'no report'}`,
            { autoClose: false }
          );
          return;
        }
        const notebook = current.content;
        NotebookActions.insertBelow(notebook);
        const cell = notebook.activeCell;
        if (cell) {
          cell.model.sharedModel.setSource(modelCallCode(chatModel));
        }
      }
    });

    if (palette) {
      for (const command of [CommandIDs.check, CommandIDs.open, CommandIDs.insertCell]) {
        palette.addItem({ command, category: CATEGORY });
      }
    }

    if (statusBar) {
      const item = new GatewayStatusItem(model, openPanel);
      statusBar.registerStatusItem(PLUGIN_ID, {
        item,
        align: 'left',
        rank: 100,
        isActive: () => showStatusItem,
        activeStateChanged: statusItemToggled
      });
    }

    const applySettings = (settings: ISettingRegistry.ISettings) => {
      model.intervalSeconds = settings.get('pollInterval').composite as number;
      showStatusItem = settings.get('showStatusItem').composite as boolean;
      statusItemToggled.emit();
    };

    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          applySettings(settings);
          settings.changed.connect(applySettings);
        })
        .catch(reason => {
          console.error(
            `akko-jupyter-llm: the settings of ${PLUGIN_ID} could not be loaded`,
            reason
          );
        });
    }

    void app.restored.then(() => model.refresh());
  }
};

export default plugin;
