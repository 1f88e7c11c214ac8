"""`powerbi create-dataset` against the dashboard's Power BI stand-in, over real HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from fleetscore.__main__ import _parser, main
from fleetscore.powerbi_cli import _settings_lines, run_powerbi
from fleetscore.powerbi_dataset import (
    DatasetOutcome,
    Difference,
    compare_tables,
    dataset_definition,
)
from shared.powerbi import DATASET_TABLES, PowerBISink, PushTarget
from shared.predictions import Prediction
from tests.dashboard.conftest import KEY
from tests.support.http_server import QuietHandler, serving

WS = "0f4c2a1e-9b7d-4e35-8a61-2c3d4e5f6a7b"
CREATE = ["powerbi", "create-dataset"]


def run(server, *extra: str, env: dict[str, str] | None = None, **kw) -> int:
    args = [*CREATE, "--api-url", server.url, *extra]
    return main(args, env={} if env is None else env, **kw)


def datasets(server, workspace: str = ""):
    return server.store.list_datasets(workspace)


def post_dataset(server, name: str, tables: dict[str, dict[str, str]]) -> str:
    reply = requests.post(
        f"{server.url}/v1.0/myorg/groups/{WS}/datasets?defaultRetentionPolicy=basicFIFO",
        json=dataset_definition(name, tables),
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5,
    )
    assert reply.status_code == 201
    return str(reply.json()["id"])


def test_create_dataset_creates_it_on_an_empty_workspace_then_reports_it_matches(
    make_dashboard, capsys
):
    server = make_dashboard()
    assert run(server, "--workspace", WS, "--token", KEY) == 0
    [made] = datasets(server, WS)
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"created dataset 'fleetscore' (id {made.id}) in workspace {WS}: tables "
        "DeviceAggregates, Anomalies, retention basicFIFO",
        "set these app settings on the function app (then restart it):",
        f"  POWERBI_DATASET_ID={made.id}",
        f"  POWERBI_WORKSPACE_ID={WS}",
        f"  POWERBI_API_URL={server.url}",
    ]
    assert (made.name, made.retention, made.tables) == ("fleetscore", "basicFIFO", DATASET_TABLES)

    assert run(server, "--workspace", WS, "--token", KEY) == 0
    again = capsys.readouterr().out
    assert again.splitlines()[0] == (
        f"already exists and matches: dataset 'fleetscore' (id {made.id}) in workspace {WS}"
    )
    assert f"  POWERBI_DATASET_ID={made.id}" in again.splitlines()
    assert [d.id for d in datasets(server, WS)] == [made.id]


def test_create_dataset_reads_settings_and_finds_the_dashboards_own_dataset(make_dashboard, capsys):
    server = make_dashboard()
    env = {"POWERBI_API_URL": server.url, "POWERBI_ACCESS_TOKEN": KEY}
    assert main(CREATE, env=env) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"already exists and matches: dataset 'fleetscore' (id {server.dataset.id}) in My workspace"
    )
    assert out[-3:] == [
        f"  POWERBI_DATASET_ID={server.dataset.id}",
        "  POWERBI_WORKSPACE_ID=",
        f"  POWERBI_API_URL={server.url}",
    ]


def test_a_differing_schema_is_named_left_alone_then_fixed_with_update_schema(
    make_dashboard, capsys
):
    server = make_dashboard()
    anomalies = {k: v for k, v in DATASET_TABLES["Anomalies"].items() if k != "model_version"}
    anomalies |= {"anomaly_score": "String", "note": "String"}
    tables = {"DeviceAggregates": DATASET_TABLES["DeviceAggregates"], "Anomalies": anomalies}
    ds = post_dataset(server, "fleetscore", tables)

    assert run(server, "--workspace", WS, "--token", KEY) == 3
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"exists but differs: dataset 'fleetscore' (id {ds}) in workspace {WS}",
        "  Anomalies.anomaly_score: dataType String, expected Double",
        "  Anomalies.model_version: missing (expected String)",
        "  Anomalies.note: not pushed by fleetscore (found String)",
    ]
    assert "rerun with --update-schema" in captured.err
    assert server.store.get_dataset(ds).tables["Anomalies"] == anomalies  # nothing changed

    assert run(server, "--workspace", WS, "--token", KEY, "--update-schema") == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"updated dataset 'fleetscore' (id {ds}) in workspace {WS}: replaced the columns of "
        "Anomalies"
    )
    assert server.store.get_dataset(ds).tables == DATASET_TABLES
    assert run(server, "--workspace", WS, "--token", KEY) == 0
    assert capsys.readouterr().out.startswith("already exists and matches")


def test_a_missing_table_is_reported_and_cannot_be_added(make_dashboard, capsys):
    server = make_dashboard()
    ds = post_dataset(server, "fleetscore", {"Anomalies": DATASET_TABLES["Anomalies"]})
    assert run(server, "--workspace", WS, "--token", KEY, "--update-schema") == 3
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"exists but differs: dataset 'fleetscore' (id {ds}) in workspace {WS}",
        "  table DeviceAggregates: missing",
    ]
    assert "a push dataset cannot gain a table (DeviceAggregates)" in captured.err
    assert list(server.store.get_dataset(ds).tables) == ["Anomalies"]


def test_two_datasets_of_the_name_is_an_error_naming_both(make_dashboard, capsys):
    server = make_dashboard()
    ids = [post_dataset(server, "fleetscore", DATASET_TABLES) for _ in range(2)]
    assert run(server, "--workspace", WS, "--token", KEY) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: 2 datasets are named 'fleetscore' ({ids[0]}, {ids[1]}): the app can push to "
        "one only; delete the extras in Power BI, or pass another --name"
    ]


def test_a_refused_token_is_a_clear_error_and_creates_nothing(make_dashboard, capsys):
    server = make_dashboard()
    assert run(server, "--workspace", WS, "--token", "stale") == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == (
        "error: list datasets: 403 TokenExpired: access token is not valid"
    )
    assert "the token was refused" in err
    assert datasets(server, WS) == []


def test_an_unknown_workspace_is_a_404_naming_the_workspace(make_dashboard, capsys):
    server = make_dashboard(workspaces=[WS])
    other = "11111111-2222-3333-4444-555555555555"
    assert run(server, "--workspace", other, "--token", KEY) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"error: list datasets: 404 PowerBIEntityNotFound: workspace '{other}' not found",
        f"  check the workspace id '{other}' and the API URL {server.url}",
    ]
    assert datasets(server, other) == []


def test_a_401_from_power_bi_says_what_was_refused_and_why(capsys):
    seen: list[str | None] = []

    class Unauthorized(QuietHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            error = {"code": "PowerBINotAuthorizedException", "message": "no access"}
            self.reply(401, {"error": error})

    with serving(Unauthorized) as port:
        url = f"http://127.0.0.1:{port}"
        code = main([*CREATE, "--api-url", url, "--token", "t-1"], env={})
    assert code == 1
    assert seen == ["Bearer t-1"]
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: list datasets: 401 PowerBINotAuthorizedException: no access"
    assert err[1].startswith("  the token was refused: check POWERBI_TENANT_ID")


def test_dry_run_prints_the_request_and_sends_nothing(make_dashboard, capsys):
    server = make_dashboard()

    class NoNetwork(requests.Session):
        def request(self, *args, **kwargs):  # type: ignore[override]
            raise AssertionError("a dry run sent a request")

    code = run(server, "--workspace", WS, "--dry-run", session=NoNetwork())
    assert code == 0
    out = capsys.readouterr().out
    head, post, body = out.split("\n", 2)
    assert head.startswith(f"dry run: would list the datasets of {WS}")
    assert (
        post
        == f"POST {server.url}/v1.0/myorg/groups/{WS}/datasets?defaultRetentionPolicy=basicFIFO"
    )
    assert json.loads(body) == dataset_definition("fleetscore", DATASET_TABLES)
    assert datasets(server, WS) == []


def test_the_fixed_token_setting_is_refused_for_the_real_service(capsys):
    env = {"POWERBI_ACCESS_TOKEN": "t", "POWERBI_API_URL": "https://api.powerbi.com"}
    assert main(CREATE, env=env) == 2
    assert "POWERBI_ACCESS_TOKEN: is for a local stand-in" in capsys.readouterr().err


def test_entra_credentials_sign_in_once_and_a_failed_sign_in_is_clear(make_dashboard, capsys):
    server = make_dashboard()
    asked: list[str] = []

    class Credential:
        def get_token(self, *scopes: str, **kwargs) -> AccessToken:
            asked.extend(scopes)
            expires = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
            return AccessToken(KEY, expires)

    env = {"POWERBI_API_URL": server.url, "POWERBI_WORKSPACE_ID": WS}
    args = _parser().parse_args(CREATE)
    assert run_powerbi(args, env=env, credential=lambda values: Credential()) == 0
    assert asked == ["https://analysis.windows.net/powerbi/api/.default"]  # cached for 3 calls
    assert len(datasets(server, WS)) == 1
    capsys.readouterr()

    class Refusing:
        def get_token(self, *scopes: str, **kwargs) -> AccessToken:
            raise ClientAuthenticationError("AADSTS7000215: Invalid client secret provided.")

    assert run_powerbi(args, env=env, credential=lambda values: Refusing()) == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        "error: get an Entra ID token for Power BI: 401 SignInFailed: "
        "AADSTS7000215: Invalid client secret provided."
    )


def test_compare_tables_ignores_type_case_and_extra_tables_and_notes_unlisted_columns():
    expected = {"T": {"a": "Boolean", "b": "String"}}
    found = [
        {
            "name": "T",
            "columns": [{"name": "a", "dataType": "bool"}, {"name": "b", "dataType": "string"}],
        },
        {"name": "Mine", "columns": []},
    ]
    assert compare_tables(expected, found) == ([], True)
    assert compare_tables(expected, [{"name": "T"}]) == ([], False)
    assert compare_tables(expected, []) == ([Difference("T", None, "table", None)], True)


def test_dataset_tables_are_the_columns_of_the_rows_the_sink_pushes():
    posted: dict[str, list[dict]] = {}

    def transport(url: str, body: bytes, headers: dict[str, str]):
        posted.setdefault(url.rsplit("/", 2)[-2], []).extend(json.loads(body)["rows"])
        return 200, {}, b""

    clock = [1000.0]
    sink = PowerBISink(
        PushTarget(dataset_id="d", api_url="http://127.0.0.1:1"),
        transport=transport,
        token_provider=lambda: "t",
        clock=lambda: clock[0],
        now=lambda: datetime(2026, 11, 27, 7, 0, tzinfo=UTC),
        interval_seconds=60.0,
    )
    t0 = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    sink.offer(
        [
            Prediction("pump-1", t0, 0.9, True, "rpm", 0.2, False, "m-1"),
            Prediction("pump-1", t0 + timedelta(seconds=1), 0.1, False, None, 0.2, False, "m-1"),
        ]
    )
    clock[0] += 120.0
    for _ in range(50):  # two POSTs, paced by the sink's buckets on the fake clock
        if sink.pump() > 0 and not sink.pending:
            break
        clock[0] += 1.0
    assert {t: set(rows[0]) for t, rows in posted.items()} == {
        t: set(cols) for t, cols in DATASET_TABLES.items()
    }


@pytest.mark.parametrize("argv", [[*CREATE, "--api-url", "ftp://x"]])
def test_a_bad_api_url_is_a_usage_error(argv, capsys):
    assert main(argv, env={"POWERBI_ACCESS_TOKEN": "t"}) == 2
    assert "not an http(s) URL" in capsys.readouterr().err


def test_settings_come_from_a_settings_file_when_the_environment_lacks_them(
    make_dashboard, tmp_path, capsys
):
    server = make_dashboard()
    values = {"POWERBI_API_URL": server.url, "POWERBI_ACCESS_TOKEN": KEY, "OTHER": "x"}
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    assert main([*CREATE, "--settings", str(settings), "--name", "from-file"], env={}) == 0
    assert capsys.readouterr().out.startswith("created dataset 'from-file'")
    assert [d.name for d in datasets(server)] == ["fleetscore", "from-file"]


def test_help_explains_the_command_and_its_exit_codes(capsys):
    with pytest.raises(SystemExit) as exited:
        main([*CREATE, "--help"], env={})
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "DeviceAggregates (10 columns), Anomalies (7 columns), with basicFIFO" in text
    assert "exit codes: 0 created, exists and matches, updated, or dry run;" in text
    assert "3 exists but differs (nothing changed)" in text


def test_the_api_url_is_a_setting_to_set_only_when_it_is_not_the_services():
    outcome = DatasetOutcome("created", "fleetscore", dataset_id="d-1", workspace_id=WS)
    assert _settings_lines(outcome, "https://api.powerbi.com/") == [
        "POWERBI_DATASET_ID=d-1",
        f"POWERBI_WORKSPACE_ID={WS}",
    ]
    assert _settings_lines(outcome, "http://127.0.0.1:7000")[-1] == (
        "POWERBI_API_URL=http://127.0.0.1:7000"
    )
