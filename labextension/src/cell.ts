/**
 * The code that the "insert a model call" command puts into a notebook cell.
 */

/** Return Python code that sends `model` one question through `openai_client()`. */
export function modelCallCode(model: string): string {
  return [
    'from akko_jupyter_llm import openai_client',
    '',
    '# The client sends your Jupyter token to this server, which adds the gateway key.',
    'client = openai_client()',
    'response = client.chat.completions.create(',
    `    model=${JSON.stringify(model)},`,
    '    messages=[{"role": "user", "content": "Say hello in one sentence."}],',
    ')',
    'print(response.choices[0].message.content)'
  ].join('\n');
}
