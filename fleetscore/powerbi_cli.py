"""The `powerbi` subcommand of `python -m fleetscore`: `powerbi create-dataset`.

The work (list, compare, create, update) is in `fleetscore/powerbi_dataset.py`; this module
turns arguments and app settings into a client and a bearer token, and prints what happened
and which app settings to set next.

Exit codes: 0 created, exists and matches, or updated (and every dry run); 1 Power BI or the
identity service refused, or could not be reached; 2 bad usage or settings; 3 the dataset
exists but its schema differs (nothing changed: see `--update-schema`).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import requests
from azure.core.credentials import TokenCredential

from shared.errors import ConfigError
from shared.powerbi import DATASET_TABLES, entra_token_provider
from shared.settings import SETTINGS

from .powerbi_dataset import (
    DEFAULT_NAME,
    AmbiguousDatasetError,
    DatasetOutcome,
    PowerBIApiError,
    PowerBIClient,
    create_request,
    describe_request,
    ensure_dataset,
)

__all__ = ["EXIT_DIFFERS", "add_powerbi_parser", "resolve_token", "run_powerbi"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DIFFERS = 0, 1, 2, 3
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_NAMES = (
    "POWERBI_API_URL",
    "POWERBI_WORKSPACE_ID",
    "POWERBI_TENANT_ID",
    "POWERBI_CLIENT_ID",
    "POWERBI_CLIENT_SECRET",
    "POWERBI_ACCESS_TOKEN",
)

_DEFAULT_URL = str(next(s.default for s in SETTINGS if s.name == "POWERBI_API_URL"))

CredentialFactory = Callable[[Mapping[str, str]], TokenCredential]


def _paragraphs(*texts: str) -> str:
    """Wrap each paragraph for --help (the raw formatter keeps the examples' line breaks)."""
    return "\n\n".join(textwrap.fill(t, width=88) for t in texts)


def add_powerbi_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `powerbi create-dataset` to the CLI."""
    parser = commands.add_parser(
        "powerbi",
        help="create or check the Power BI push dataset",
        description="Power BI chores. See docs/powerbi.md for the report that reads the dataset.",
    )
    action = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    tables = ", ".join(f"{t} ({len(c)} columns)" for t, c in DATASET_TABLES.items())
    create = action.add_parser(
        "create-dataset",
        help="create the push dataset the score function streams to (idempotent)",
        description=_paragraphs(
            f"Create the push dataset the score function pushes to: {tables}, with basicFIFO "
            "retention (200,000 rows kept per table). Idempotent: if a dataset of that name "
            "exists, its tables and columns are compared with what the sink pushes and the "
            "differences named; --update-schema replaces the columns of differing tables "
            "(PUT tables/{name}). A missing table cannot be added to an existing push dataset: "
            "delete the dataset, or use another --name. Prints the dataset id and the app "
            "settings to set.",
            "Settings (app-setting names, from the environment, else the --settings file): "
            "POWERBI_API_URL, POWERBI_WORKSPACE_ID; sign-in with POWERBI_TENANT_ID, "
            "POWERBI_CLIENT_ID and POWERBI_CLIENT_SECRET (a service principal), else "
            "DefaultAzureCredential (managed identity, or your `az login`), unless --token "
            "or POWERBI_ACCESS_TOKEN (localhost only) gives a bearer token.",
            "exit codes: 0 created, exists and matches, updated, or dry run; 1 Power BI or "
            "sign-in failed; 2 bad usage or settings; 3 exists but differs (nothing changed)",
        ),
        epilog=(
            "examples:\n"
            "  python -m fleetscore powerbi create-dataset --workspace <workspace-guid>\n"
            "  python -m fleetscore powerbi create-dataset --dry-run\n"
            "  POWERBI_ACCESS_TOKEN=fleetscore-local python -m fleetscore powerbi "
            "create-dataset --api-url http://127.0.0.1:7000 --name fleet-test\n"
            "  python -m fleetscore powerbi create-dataset --update-schema"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    create.add_argument("--name", default=DEFAULT_NAME, help="dataset name (default: %(default)s)")
    create.add_argument(
        "--workspace",
        metavar="GUID",
        help="workspace (group) id (default: $POWERBI_WORKSPACE_ID; empty = My workspace)",
    )
    create.add_argument(
        "--api-url", help="Power BI REST root (default: $POWERBI_API_URL, else the service)"
    )
    create.add_argument(
        "--token",
        help="a bearer token to use as is, e.g. the local dashboard's key (argv shows in ps: "
        "prefer $POWERBI_ACCESS_TOKEN for a localhost API)",
    )
    create.add_argument(
        "--settings",
        type=Path,
        metavar="FILE",
        help="local.settings.json whose Values fill settings the environment does not set",
    )
    create.add_argument(
        "--update-schema",
        action="store_true",
        help="if the dataset exists with differing columns, PUT the expected columns",
    )
    create.add_argument(
        "--dry-run",
        action="store_true",
        help="print the request that would create the dataset; send nothing, sign in to nothing",
    )


def _values(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, str]:
    """The Power BI settings: the environment, with a settings file filling the gaps."""
    values: dict[str, str] = {}
    if args.settings is not None:
        try:
            doc = json.loads(args.settings.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError("--settings", f"cannot read {args.settings}: {exc}") from None
        values.update({k: str(v) for k, v in doc.get("Values", {}).items() if k in _NAMES})
    values.update({k: env[k].strip() for k in _NAMES if env.get(k, "").strip()})
    return values


def _default_credential(values: Mapping[str, str]) -> TokenCredential:
    """A service principal when a secret is set, else DefaultAzureCredential (incl. az login)."""
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    tenant, client = values.get("POWERBI_TENANT_ID", ""), values.get("POWERBI_CLIENT_ID", "")
    secret = values.get("POWERBI_CLIENT_SECRET", "")
    if secret:
        if not (tenant and client):
            raise ConfigError("POWERBI_TENANT_ID", "a client secret needs tenant and client ids")
        return ClientSecretCredential(tenant, client, secret)
    return DefaultAzureCredential(managed_identity_client_id=client or None)


def resolve_token(
    args: argparse.Namespace,
    values: Mapping[str, str],
    api_url: str,
    credential: CredentialFactory,
) -> Callable[[], str]:
    """The bearer token source: --token, else POWERBI_ACCESS_TOKEN (localhost), else Entra ID.

    Raises:
        ConfigError: POWERBI_ACCESS_TOKEN for a non-local API, or an incomplete principal.
    """
    if args.token:
        token: str = args.token
        return lambda: token
    fixed = values.get("POWERBI_ACCESS_TOKEN", "")
    if fixed:
        if urlsplit(api_url).hostname not in _LOOPBACK:
            raise ConfigError(
                "POWERBI_ACCESS_TOKEN", "is for a local stand-in: the API URL must be localhost"
            )
        return lambda: fixed
    provider = entra_token_provider(credential(values))

    def entra() -> str:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            return provider()
        except ClientAuthenticationError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PowerBIApiError(
                401, "SignInFailed", first[:300], action="get an Entra ID token for Power BI"
            ) from exc

    return entra


def _settings_lines(outcome: DatasetOutcome, api_url: str) -> list[str]:
    """The app settings that point the score function at this dataset."""
    lines = [f"POWERBI_DATASET_ID={outcome.dataset_id}"]
    lines.append(f"POWERBI_WORKSPACE_ID={outcome.workspace_id or ''}")
    if api_url.rstrip("/") != _DEFAULT_URL.rstrip("/"):
        lines.append(f"POWERBI_API_URL={api_url}")
    return lines


def _where(outcome: DatasetOutcome) -> str:
    return f"workspace {outcome.workspace_id}" if outcome.workspace_id else "My workspace"


def _report(outcome: DatasetOutcome, api_url: str) -> int:
    """Print the outcome; return the exit code."""
    tables = ", ".join(DATASET_TABLES)
    label = f"dataset {outcome.name!r} (id {outcome.dataset_id}) in {_where(outcome)}"
    if outcome.status == "created":
        print(f"created {label}: tables {tables}, retention basicFIFO")
    elif outcome.status == "matches":
        print(f"already exists and matches: {label}")
    elif outcome.status == "updated":
        print(f"updated {label}: replaced the columns of {', '.join(outcome.updated_tables)}")
    else:
        print(f"exists but differs: {label}")
        for difference in outcome.differences:
            print(f"  {difference}")
    for note in outcome.notes:
        print(f"  note: {note}")
    if outcome.status == "differs":
        fixable = any(d.column is not None for d in outcome.differences)
        missing = [d.table for d in outcome.differences if d.column is None]
        if fixable:
            print("  fix: rerun with --update-schema to PUT the expected columns", file=sys.stderr)
        if missing:
            print(
                f"  fix: a push dataset cannot gain a table ({', '.join(missing)}): delete the "
                "dataset in Power BI, or create another with --name",
                file=sys.stderr,
            )
        return EXIT_DIFFERS
    print("set these app settings on the function app (then restart it):")
    for line in _settings_lines(outcome, api_url):
        print(f"  {line}")
    return EXIT_OK


def run_powerbi(
    args: argparse.Namespace,
    *,
    env: Mapping[str, str],
    session: requests.Session | None = None,
    credential: CredentialFactory = _default_credential,
) -> int:
    """Run `powerbi create-dataset`; see the module docstring for exit codes."""
    try:
        values = _values(args, env)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    api_url = args.api_url or values.get("POWERBI_API_URL") or _DEFAULT_URL
    workspace = args.workspace if args.workspace is not None else values.get("POWERBI_WORKSPACE_ID")
    workspace = workspace or None
    if urlsplit(api_url).scheme not in ("http", "https") or not urlsplit(api_url).hostname:
        print(f"error: --api-url: not an http(s) URL: {api_url!r}", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        request = create_request(api_url, args.name, workspace_id=workspace)
        print(
            f"dry run: would list the datasets of {workspace or 'My workspace'} and, unless one "
            f"is named {args.name!r}, send:"
        )
        print(describe_request(request))
        return EXIT_OK
    try:
        token = resolve_token(args, values, api_url, credential)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    client = PowerBIClient(api_url, token, workspace_id=workspace, session=session)
    try:
        outcome = ensure_dataset(client, args.name, update=args.update_schema)
    except PowerBIApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.auth:
            print(
                "  the token was refused: check POWERBI_TENANT_ID/POWERBI_CLIENT_ID/"
                "POWERBI_CLIENT_SECRET (or --token), that the principal may use Power BI APIs "
                "(tenant setting), and that it is a member of the workspace",
                file=sys.stderr,
            )
        elif exc.status == 404:
            print(
                f"  check the workspace id {workspace!r} and the API URL {api_url}",
                file=sys.stderr,
            )
        return EXIT_FAILED
    except AmbiguousDatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    return _report(outcome, api_url)
