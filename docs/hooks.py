"""MkDocs hooks: the configuration reference is generated from the settings' help.

``on_files`` adds ``configuration.md``, built from the ``help=`` text of every
configurable trait of `akko_jupyter_llm.app.AkkoLLM`, so the reference cannot
drift from the code, and ``changelog.md``, a copy of CHANGELOG.md.
"""

from __future__ import annotations

import html
import inspect
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]

from mkdocs.structure.files import File


def render_configuration_reference() -> str:
    from akko_jupyter_llm.app import AkkoLLM

    lines = [
        "# Configuration reference",
        "",
        "Every setting of the server extension, generated from its help text.",
        "Set them in a Jupyter config file (`c.AkkoLLM.<name> = ...` in",
        "`jupyter_server_config.py`), on the command line",
        "(`--AkkoLLM.<name>=...`), or through the environment variable each one",
        "names; under JupyterHub the spawner usually sets the variables.",
        "",
        "A bad value does not stop the Jupyter server: it is logged at start and",
        "returned in every response of the endpoint until it is fixed.",
        "",
    ]
    traits = AkkoLLM.class_traits(config=True)
    own = {name: trait for name, trait in traits.items() if name in AkkoLLM.__dict__}
    for name in sorted(own):
        trait = own[name]
        lines.append(f"## `{name}`")
        lines.append("")
        lines.append(f"Type: `{type(trait).__name__.replace('Lenient', '')}`")
        lines.append("")
        # Help text is plain text: "<key>" must not become an HTML tag.
        lines.append(html.escape(inspect.cleandoc(trait.help), quote=False))
        lines.append("")
    return "\n".join(lines)


def on_files(files, config):
    reference = File.generated(
        config, "configuration.md", content=render_configuration_reference()
    )
    files.append(reference)
    changelog = (REPOSITORY_ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "changelog.md", content=changelog))
    return files
