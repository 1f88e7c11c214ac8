"""The local stack: which processes the demo starts, on which ports, with which settings.

Two waves. First the stand-ins nothing else depends on (Azurite, the Event Hubs emulator,
azmlinfsrv with model/score.py, the dashboard), started together and each waited on; then the
tables are created and a settings file is written for the Functions hosts, which start
together: one HTTP host (ingest and query) and N score hosts that share the hub's partitions.

Secrets (the function key, the emulator's SAS key, the dashboard's token) are generated per run,
passed through the environment or the settings file (mode 600), and never logged or printed.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from dashboard.store import dataset_id_for
from shared.readings import MAX_BODY_BYTES
from shared.store import TableStore

from .processes import ProcessGroup, Service, check_ports_free, http_answers, tcp_answers

__all__ = ["DemoConfig", "Ports", "Stack"]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
# Azurite's well-known development account: public by design, the same on every machine.
_ACCOUNT = "devstoreaccount1"
_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
# azmlinfsrv 1.5.1 binds 0.0.0.0 and has no --host; this runs its CLI with loopback instead
# (the Makefile's AZMLINFSRV launcher).
_AZMLINFSRV = (
    "import azureml_inference_server_http.amlserver as s; s.DEFAULT_HOST = '127.0.0.1'; s.run()"
)
_HUB, _CONSUMER_GROUP, _PARTITIONS = "readings", "scoring", 4
_CLAIMED = re.compile(r"function score_function (claimed|released) partition (\d+)")
_EXECUTING = re.compile(
    r"Executing 'Functions\.score_function' \(Reason='event hub \S+ partition (\d+):"
    r".*Id=([0-9a-f-]+)\)"
)
_SUCCEEDED = re.compile(r"Executed 'Functions\.score_function' \(Succeeded, Id=([0-9a-f-]+)")
_FAILED = re.compile(r"Executed 'Functions\.score_function' \(Failed, Id=([0-9a-f-]+)")


@dataclass(frozen=True)
class Ports:
    """Ports on 127.0.0.1, one per listening service; the defaults are the usual ones."""

    http: int = 7071
    dashboard: int = 7000
    aml: int = 5001
    eventhubs: int = 5672
    azurite_blob: int = 10000
    azurite_queue: int = 10001
    azurite_table: int = 10002


@dataclass(frozen=True)
class DemoConfig:
    """What to run: ports, how many score hosts, where state and logs go."""

    ports: Ports = field(default_factory=Ports)
    score_hosts: int = 2
    workdir: Path = ROOT / ".local"
    azurite_on_disk: bool = False  # keep Storage in the run's state folder (survives a restart)
    aml_endpoint_url: str | None = None  # score through this URL (a fault proxy) instead
    powerbi_interval_seconds: float = 5.0
    load_balancing_interval: float = 2.0
    ownership_expiration: float = 30.0  # after this a dead score host's partitions are taken
    python: str = sys.executable

    @property
    def logs(self) -> Path:
        """Per-process logs."""
        return self.workdir / "logs"

    @property
    def state(self) -> Path:
        """This run's state (hub data, dashboard rows, settings); wiped at start."""
        return self.workdir / "demo"


class Stack:
    """Starts, describes and stops the local stack of one demo run."""

    def __init__(self, config: DemoConfig) -> None:
        """Generate this run's keys; nothing starts until `start()`."""
        self.config = config
        self.processes = ProcessGroup(config.logs)
        self.function_key = secrets.token_urlsafe(24)
        self._eventhubs_key = secrets.token_urlsafe(24)
        self._dashboard_key = secrets.token_urlsafe(24)
        self.dataset_id = dataset_id_for("", "fleetscore")

    # --- where things are --------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """Root of the HTTP functions."""
        return f"http://127.0.0.1:{self.config.ports.http}/api"

    @property
    def ingest_url(self) -> str:
        """The ingest function."""
        return f"{self.api_url}/readings"

    @property
    def dashboard_url(self) -> str:
        """The live page."""
        return f"http://127.0.0.1:{self.config.ports.dashboard}/"

    @property
    def settings_path(self) -> Path:
        """The generated local.settings.json of the hosts."""
        return self.config.state / "local.settings.json"

    @property
    def dashboard_db(self) -> Path:
        """The dashboard's SQLite file."""
        return self.config.state / "dashboard.sqlite3"

    @property
    def storage_connection(self) -> str:
        """Azurite's blob, queue and table endpoints (AzureWebJobsStorage and the tables)."""
        p = self.config.ports
        return (
            f"DefaultEndpointsProtocol=http;AccountName={_ACCOUNT};AccountKey={_ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{p.azurite_blob}/{_ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{p.azurite_queue}/{_ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{p.azurite_table}/{_ACCOUNT};"
        )

    @property
    def eventhub_connection(self) -> str:
        """The emulator's connection string (with this run's SAS key)."""
        return (
            f"Endpoint=sb://127.0.0.1:{self.config.ports.eventhubs};SharedAccessKeyName="
            f"RootManageSharedAccessKey;SharedAccessKey={self._eventhubs_key};"
            "UseDevelopmentEmulator=true"
        )

    @property
    def hub(self) -> str:
        """The readings hub's name."""
        return _HUB

    @property
    def score_host_names(self) -> list[str]:
        """Log names of the score hosts."""
        return [f"score-host-{i}" for i in range(1, self.config.score_hosts + 1)]

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Check ports, start everything, create the tables, wait for the partitions to split.

        Raises:
            PortTakenError: a port is in use (nothing was started).
            ServiceError: naming the service that did not come up, with its log's tail.
        """
        ports = {
            f.name.replace("_", " "): getattr(self.config.ports, f.name) for f in fields(Ports)
        }
        check_ports_free(ports)
        state = self.config.state
        if state.exists():
            shutil.rmtree(state)  # a fresh hub and dashboard: old events would be scored again
        (state / "azurite").mkdir(parents=True)
        self.processes.start(self._stand_ins())
        with TableStore.from_connection_string(self.storage_connection) as store:
            store.create_tables()
        values = self._write_settings()
        self.processes.start(self._hosts(frozenset(values)))
        if not self.wait_balanced(timeout=30.0):
            log.warning("score hosts have not split the partitions yet; carrying on")

    def stop(self) -> list[str]:
        """Stop the hosts first (their Power BI sinks flush on exit), then the stand-ins."""
        hosts = ["http-host", *self.score_host_names]
        stopped = self.processes.stop(hosts)
        return stopped + self.processes.stop_all()

    def stop_score_hosts(self) -> list[str]:
        """Stop the score hosts only (so their last Power BI rows are pushed)."""
        return self.processes.stop(self.score_host_names)

    # --- what the score hosts did (from their logs) ------------------------------------------

    def claimed_partitions(self) -> dict[str, set[str]]:
        """Partitions each score host holds now, from its claim/release log lines."""
        held: dict[str, set[str]] = {}
        for name in self.score_host_names:
            mine: set[str] = set()
            for action, partition in _CLAIMED.findall(self.processes.current_log(name)):
                (mine.add if action == "claimed" else mine.discard)(partition)
            held[name] = mine
        return held

    def processed_partitions(self) -> dict[str, set[str]]:
        """Partitions each score host ran at least one successful invocation for."""
        done: dict[str, set[str]] = {}
        for name in self.score_host_names:
            text = self._log(name)
            partition_of = {iid: p for p, iid in _EXECUTING.findall(text)}
            done[name] = {partition_of[i] for i in _SUCCEEDED.findall(text) if i in partition_of}
        return done

    def wait_balanced(self, *, timeout: float) -> bool:
        """Wait until every partition is held and each running score host holds at least one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.processes.check_alive()
            claims = self.claimed_partitions()
            held = [claims[n] for n in self.score_host_names if self.processes.is_running(n)]
            if held and all(held) and len(set().union(*held)) == _PARTITIONS:
                return True
            time.sleep(0.2)
        return False

    def in_flight(self, name: str) -> set[str]:
        """Ids of the invocations score host `name` is running now (started, not ended)."""
        text = self.processes.current_log(name)
        started = {iid for _, iid in _EXECUTING.findall(text)}
        return started - set(_SUCCEEDED.findall(text)) - set(_FAILED.findall(text))

    def never_ended(self, name: str, ids: set[str]) -> set[str]:
        """Those of `ids` that score host `name`'s whole log shows started but never ended.

        Read after the host was killed, this is what the kill interrupted.
        """
        text = self._log(name)
        return ids - set(_SUCCEEDED.findall(text)) - set(_FAILED.findall(text))

    def _log(self, name: str) -> str:
        try:
            return self.processes.log_path(name).read_text(errors="replace")
        except OSError:
            return ""

    # --- what runs ---------------------------------------------------------------------------

    def _stand_ins(self) -> list[Service]:
        c, p, py = self.config, self.config.ports, self.config.python
        azurite = ROOT / "node_modules" / ".bin" / "azurite"
        if not azurite.exists():
            raise FileNotFoundError(f"{azurite} is missing: run `make setup` (npm ci) first")
        return [
            Service(
                "azurite",
                [
                    str(azurite),
                    "--disableTelemetry",
                    *(
                        ("--location", str(c.state / "azurite"))
                        if c.azurite_on_disk
                        else ("--inMemoryPersistence",)
                    ),
                    "--skipApiVersionCheck",
                    *("--blobHost", "127.0.0.1", "--blobPort", str(p.azurite_blob)),
                    *("--queueHost", "127.0.0.1", "--queuePort", str(p.azurite_queue)),
                    *("--tableHost", "127.0.0.1", "--tablePort", str(p.azurite_table)),
                ],
                ready=lambda: http_answers(p.azurite_blob)() and http_answers(p.azurite_table)(),
                cwd=c.state / "azurite",  # whatever Azurite writes stays in this run's state
            ),
            Service(
                "eventhubs",
                [
                    *(py, "-m", "local.eventhubs", "--port", str(p.eventhubs)),
                    *("--data-dir", str(c.state / "eventhubs")),
                ],
                ready=tcp_answers(p.eventhubs),
                env={"EVENTHUBS_EMULATOR_KEY": self._eventhubs_key},
                cwd=ROOT,
            ),
            Service(
                "azmlinfsrv",
                [py, "-c", _AZMLINFSRV, "--entry_script", "model/score.py", "--port", str(p.aml)],
                ready=http_answers(p.aml, "/", ok=lambda s: s == 200),
                env={
                    "AML_APP_ROOT": str(ROOT),
                    "AZUREML_MODEL_DIR": str(ROOT / "model" / "artifacts"),
                },
                cwd=ROOT,
                timeout=90.0,
            ),
            Service(
                "dashboard",
                [
                    *(py, "-m", "dashboard", "--port", str(p.dashboard)),
                    *("--db", str(self.dashboard_db)),
                    *("--interval", f"{c.powerbi_interval_seconds:g}"),
                    *("--query-url", self.api_url),  # the metrics chart reads stored predictions
                ],
                ready=http_answers(p.dashboard, "/healthz", ok=lambda s: s == 200),
                env={
                    "DASHBOARD_KEY": self._dashboard_key,
                    "DASHBOARD_QUERY_KEY": self.function_key,  # in the environment, not in ps
                },
                cwd=ROOT,
            ),
        ]

    def _hosts(self, settings: frozenset[str]) -> list[Service]:
        """The hosts; `settings` are dropped from the inherited environment, where they win."""
        c, py = self.config, self.config.python
        host = [
            py,
            "-m",
            "local.host",
            "--app-root",
            str(ROOT),
            "--settings",
            str(self.settings_path),
        ]
        services = [
            Service(
                "http-host",
                [*host, "--no-eventhub", "--port", str(c.ports.http)],
                ready=http_answers(c.ports.http, "/api/readings"),
                unset=settings,
                cwd=ROOT,
            )
        ]
        for name in self.score_host_names:
            services.append(
                Service(
                    name,
                    [
                        *(*host, "--functions", "score_function", "--no-http"),
                        *("--load-balancing-interval", f"{c.load_balancing_interval:g}"),
                        *("--ownership-expiration", f"{c.ownership_expiration:g}"),
                    ],
                    ready=lambda name=name: (
                        "listening on event hub" in self.processes.current_log(name)
                    ),
                    unset=settings,
                    cwd=ROOT,
                )
            )
        return services

    def _write_settings(self) -> dict[str, str]:
        c, p = self.config, self.config.ports
        values = {
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "FUNCTIONS_KEY": self.function_key,
            # The host refuses a body over the ingest's limit before reading it (Azure reads
            # the same setting); the ingest's own check is then for chunked bodies only.
            "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": str(MAX_BODY_BYTES),
            "AzureWebJobsStorage": self.storage_connection,
            "EVENTHUB_CONNECTION": self.eventhub_connection,
            "EVENTHUB_NAME": _HUB,
            "EVENTHUB_CONSUMER_GROUP": _CONSUMER_GROUP,
            "TABLES_CONNECTION": self.storage_connection,
            "AML_ENDPOINT_URL": c.aml_endpoint_url or f"http://127.0.0.1:{p.aml}/score",
            "AML_ENDPOINT_KEY": "local-demo",  # azmlinfsrv checks no key; AML does
            "POWERBI_API_URL": f"http://127.0.0.1:{p.dashboard}",
            "POWERBI_DATASET_ID": self.dataset_id,
            "POWERBI_ACCESS_TOKEN": self._dashboard_key,
            "POWERBI_INTERVAL_SECONDS": f"{c.powerbi_interval_seconds:g}",
            "POWERBI_WRITERS": str(c.score_hosts),
        }
        doc = {"IsEncrypted": False, "Values": values, "Host": {"LocalHttpPort": p.http}}
        path = self.settings_path
        path.touch(mode=0o600)
        path.chmod(0o600)  # it holds this run's keys
        path.write_text(json.dumps(doc, indent=2) + "\n")
        return values
