"""The package version, read from the installed package's metadata.

Its one source is the ``version`` of labextension/package.json, which the
JupyterLab extension's build needs anyway; hatch-nodejs-version puts it into
the wheel's metadata at build time.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("akko-jupyter-llm")
except PackageNotFoundError:  # A source tree that was never installed.
    __version__ = "0+unknown"
