"""The ``akko-llm`` command: gateway diagnostics from a terminal.

- ``akko-llm doctor`` runs the checks of the status endpoint (see
  `diagnostics`) and prints a report; ``--json`` prints it as JSON. It exits
  with 0 when no check failed (warnings included) and 1 when one did.
- ``akko-llm models`` lists the models the gateway serves, with their kind.

It needs no Jupyter server: it reads the upstream URL and the key from the
variables the server extension reads (``AKKO_LLM_UPSTREAM_URL``,
``AKKO_LLM_API_KEY_FILE``, ``AKKO_LLM_API_KEY``) or from flags, so it works in
a user's terminal and on an admin's laptop alike. There is no flag for the key
itself, because command lines are visible to other users of the machine.
Messages name the flag or environment variable that gave each value.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import textwrap
from collections.abc import Mapping

from .config import (
    ENV_VARS,
    KEY_SETTINGS,
    ProxySettings,
    check_ca_bundle,
    env_bool,
    setting_name,
)
from .credentials import KEY_FILE_SETTING, GatewayKey
from .defaults import read_default_models
from .diagnostics import (
    CHECK_TIMEOUT_SECONDS,
    ERROR,
    LIVE_FIRST_TOKEN_TIMEOUT_SECONDS,
    GatewayDiagnostics,
    Report,
)

# The same default as AkkoLLM.upstream_url: Ollama on this machine.
DEFAULT_UPSTREAM_URL = "http://127.0.0.1:11434/v1"

EXIT_OK = 0
EXIT_CHECK_FAILED = 1

_STATUS_LABELS = {"ok": "ok", "warn": "WARN", "error": "ERROR", "skipped": "skip"}

# The server's timeouts, all set by --timeout here.
_TIMEOUT_SETTINGS = ("connect_timeout", "first_byte_timeout", "idle_timeout")

# Hint for an invalid flag or variable that the settings check reports.
SETTINGS_HINT = (
    "Fix the flag or environment variable named above, then run the command again."
)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        message = f"{text!r} is not a number of seconds"
        raise argparse.ArgumentTypeError(message) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--upstream-url",
        help="URL of the gateway's OpenAI-compatible API, ending in /v1 (default: "
        f"${ENV_VARS['upstream_url']}, else {DEFAULT_UPSTREAM_URL})",
    )
    common.add_argument(
        "--api-key-file",
        help="file that contains the gateway key (default: "
        f"${ENV_VARS['api_key_file']}; without a file, the key is read from "
        f"${ENV_VARS['api_key']})",
    )
    common.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=CHECK_TIMEOUT_SECONDS,
        help="seconds each request to the gateway may take (default: %(default)g); "
        f"the live test waits up to {LIVE_FIRST_TOKEN_TIMEOUT_SECONDS:g} s, or this "
        "value if larger, for its first token",
    )
    common.add_argument(
        "--ca-bundle",
        help="PEM file of the CAs that sign an https gateway's certificate "
        f"(default: ${ENV_VARS['ca_bundle']}, else the system's CAs)",
    )
    common.add_argument(
        "--no-verify-tls",
        action="store_true",
        help="do not verify an https gateway's certificate (default: "
        f"${ENV_VARS['verify_tls']}, else verify)",
    )
    common.add_argument("--json", action="store_true", help="print JSON for programs")

    parser = argparse.ArgumentParser(
        prog="akko-llm",
        description="Check the platform's model gateway (LiteLLM or Ollama).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    doctor = commands.add_parser(
        "doctor",
        parents=[common],
        help="check the gateway and print what to fix",
        description="Check that the gateway is reachable, accepts the key and serves "
        "the default models. Exits with 1 when a check fails.",
    )
    doctor.add_argument(
        "--live",
        action="store_true",
        help="also stream one short chat completion and time it",
    )
    commands.add_parser(
        "models",
        parents=[common],
        help="list the models the gateway serves",
        description="List the models the gateway serves, chat and embedding apart.",
    )
    return parser


def _key_and_source(
    args: argparse.Namespace, log: logging.Logger
) -> tuple[GatewayKey, str]:
    """Return the gateway key and where it comes from, for messages (never the key)."""
    if args.api_key_file:
        source = f"the file {args.api_key_file} (--api-key-file)"
        return GatewayKey("", args.api_key_file, log), source
    key_file = os.environ.get(ENV_VARS["api_key_file"], "").strip()
    if key_file:
        source = f"the file {key_file} (${ENV_VARS['api_key_file']})"
        return GatewayKey("", key_file, log), source
    key = os.environ.get(ENV_VARS["api_key"], "")
    if key.strip():
        return GatewayKey(key, "", log), f"${ENV_VARS['api_key']}"
    return GatewayKey("", "", log), (
        f"nowhere: no key is configured (set ${ENV_VARS['api_key_file']} or "
        f"${ENV_VARS['api_key']}, or pass --api-key-file)"
    )


def _given_by(flag: str, flag_value: str | None, trait: str) -> str | None:
    """Return the flag or variable that sets ``trait`` in this run, or None."""
    if flag_value:
        return flag
    if os.environ.get(ENV_VARS[trait], "").strip():
        return f"${ENV_VARS[trait]}"
    return None


def setting_names(args: argparse.Namespace) -> dict[str, str]:
    """Map each server setting, as messages name it, to what sets it in this run.

    The checks and the gateway client name a setting as a Jupyter config
    writes it, for example ``c.AkkoLLM.upstream_url (AKKO_LLM_UPSTREAM_URL)``.
    This command reads flags and environment variables instead, so its
    messages name the flag or the variable that gave the value. When neither
    is set, they name both (and the URL is the built-in default).
    """
    url_variable = f"${ENV_VARS['upstream_url']}"
    ca_variable = f"${ENV_VARS['ca_bundle']}"
    key_file_variable = f"${ENV_VARS['api_key_file']}"
    names = {
        setting_name("upstream_url"): (
            _given_by("--upstream-url", args.upstream_url, "upstream_url")
            or f"the built-in default (--upstream-url or {url_variable} changes it)"
        ),
        setting_name("ca_bundle"): (
            _given_by("--ca-bundle", args.ca_bundle, "ca_bundle")
            or f"--ca-bundle or {ca_variable}"
        ),
        KEY_FILE_SETTING: (
            _given_by("--api-key-file", args.api_key_file, "api_key_file")
            or f"--api-key-file or {key_file_variable}"
        ),
        KEY_SETTINGS: f"${ENV_VARS['api_key']}, or in a file named by --api-key-file "
        f"or {key_file_variable}",
        setting_name("api_key"): f"${ENV_VARS['api_key']}",
    }
    for trait in _TIMEOUT_SETTINGS:
        names[setting_name(trait)] = "--timeout"
    return names


def rename_settings(text: str, names: Mapping[str, str]) -> str:
    """Replace each server setting name of ``names`` in ``text`` with its value."""
    for server_name, name in names.items():
        text = text.replace(server_name, name)
    return text


class UsageError(Exception):
    """A bad option or environment variable; the message names it."""


def tls_options(args: argparse.Namespace) -> tuple[str, bool]:
    """Return the CA bundle and whether to verify TLS, from flags or the environment."""
    problems: dict[str, str] = {}
    verify_tls = False if args.no_verify_tls else env_bool("verify_tls", True, problems)
    if problems:
        raise UsageError(problems["verify_tls"])
    ca_bundle = (args.ca_bundle or os.environ.get(ENV_VARS["ca_bundle"], "")).strip()
    if ca_bundle and verify_tls:
        problem = check_ca_bundle(ca_bundle)
        if problem:
            raise UsageError(rename_settings(problem, setting_names(args)))
    return ca_bundle, verify_tls


def make_diagnostics(args: argparse.Namespace) -> GatewayDiagnostics:
    log = logging.getLogger("akko_jupyter_llm.cli")
    # The report carries every error, so the key reader's log lines would repeat it.
    log.addHandler(logging.NullHandler())
    log.propagate = False

    upstream_url = (
        args.upstream_url
        or os.environ.get(ENV_VARS["upstream_url"], "").strip()
        or DEFAULT_UPSTREAM_URL
    ).strip().rstrip("/")
    ca_bundle, verify_tls = tls_options(args)
    settings = ProxySettings(
        upstream_url=upstream_url,
        connect_timeout=args.timeout,
        first_byte_timeout=args.timeout,
        idle_timeout=args.timeout,
        max_body_size=0,
        max_concurrent_requests=0,
        ca_bundle=ca_bundle,
        verify_tls=verify_tls,
    )
    key, key_source = _key_and_source(args, log)
    return GatewayDiagnostics(
        settings,
        key,
        read_default_models(),
        log,
        key_source=key_source,
        timeout=args.timeout,
        live_timeout=max(args.timeout, LIVE_FIRST_TOKEN_TIMEOUT_SECONDS),
        settings_hint=SETTINGS_HINT,
    )


async def _run(args: argparse.Namespace) -> Report:
    diagnostics = make_diagnostics(args)
    try:
        report = await diagnostics.run(live=getattr(args, "live", False))
    finally:
        await diagnostics.close()

    names = setting_names(args)
    for check in report.checks:
        check.message = rename_settings(check.message, names)
        if check.hint:
            check.hint = rename_settings(check.hint, names)
    return report


def _wrap(text: str, indent: str) -> str:
    return textwrap.fill(
        text,
        width=88,
        initial_indent=indent,
        subsequent_indent=indent,
        break_on_hyphens=False,
    )


def format_report(report: Report) -> str:
    """Return the report as text for a terminal."""
    defaults = report.default_models
    lines = [
        f"Gateway: {report.as_dict()['upstream_url']}",
        f"Key from: {report.key_source}",
        f"Default models: chat {defaults.chat}, embeddings {defaults.embeddings}, "
        f"completions {defaults.completions}",
        "",
    ]
    for check in report.checks:
        label = _STATUS_LABELS.get(check.status, check.status)
        lines.append(f"[{label:>5}] {check.title} ({check.ms:.0f} ms)")
        lines.append(_wrap(check.message, " " * 8))
        if check.hint:
            lines.append(_wrap("What to do: " + check.hint, " " * 8))
    failed = [check for check in report.checks if check.status == ERROR]
    warned = [check for check in report.checks if check.status == "warn"]
    lines.append("")
    if failed:
        lines.append(
            f"Result: {len(failed)} check(s) failed, {len(warned)} warning(s)."
        )
    elif warned:
        lines.append(f"Result: all checks passed, with {len(warned)} warning(s).")
    else:
        lines.append("Result: all checks passed.")
    return "\n".join(lines)


def format_models(report: Report) -> str:
    width = max((len(model.id) for model in report.models), default=2)
    lines = [f"{'ID':<{width}}  KIND"]
    for model in report.models:
        lines.append(f"{model.id:<{width}}  {model.kind}")
    return "\n".join(lines)


def _doctor(report: Report, as_json: bool) -> int:
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(format_report(report))
    return EXIT_CHECK_FAILED if report.status == ERROR else EXIT_OK


def _models(report: Report, as_json: bool) -> int:
    models_check = report.check("models_served")
    if models_check is None or models_check.status != "ok":
        # The first failed check explains why there is no list.
        failed = next(
            (check for check in report.checks if check.status == ERROR), models_check
        )
        if failed is not None:
            print(f"akko-llm models: {failed.message}", file=sys.stderr)
            if failed.hint:
                print(f"What to do: {failed.hint}", file=sys.stderr)
            if as_json:
                # A program reading stdout gets the failure too, as an object
                # where the list would be.
                error = {"check": failed.name, "message": failed.message, "hint": failed.hint}
                print(json.dumps({"error": error}, indent=2))
        return EXIT_CHECK_FAILED
    if as_json:
        print(json.dumps([model.as_dict() for model in report.models], indent=2))
    else:
        print(format_models(report))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        report = asyncio.run(_run(args))
    except UsageError as error:
        parser.error(str(error))  # Exits with status 2.
    if args.command == "models":
        return _models(report, args.json)
    return _doctor(report, args.json)


if __name__ == "__main__":
    sys.exit(main())
