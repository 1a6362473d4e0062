"""``fedge serve``, ``fedge join``, ``fedge relay``, ``fedge keys new`` and ``fedge status``: deployment over gRPC.

gRPC and ``cryptography`` are imported inside the commands, so ``fedge`` starts fast
without them.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from fedge.core.errors import ConfigError

if TYPE_CHECKING:
    from fedge.config.schema import Experiment


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


@click.command("serve")
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--host", help="Listen address (deploy.host).")
@click.option("--port", type=int, help="Listen port (deploy.port; 0 = any free port).")
@click.option("--state", help="SQLite state file (deploy.state).")
@click.option("--resume", is_flag=True, help="Continue the run in --state from its last completed round.")
@click.option("--allow", "allow_list", help="Allow-list of node public keys (deploy.allow_list).")
@click.option("--revoked", help="Revocation list of node public keys (deploy.revoked).")
@click.option("--min-nodes", type=int, help="Nodes a round waits for (deploy.min_nodes).")
@click.option("--tls-cert", help="PEM server certificate (deploy.tls_cert).")
@click.option("--tls-key", help="PEM key of the certificate (deploy.tls_key).")
@click.option("--client-ca", help="PEM CA of node certificates: mutual TLS (deploy.client_ca).")
@click.option(
    "--insecure",
    is_flag=True,
    default=None,
    help="Serve plaintext without --tls-cert/--tls-key: a trusted network only (deploy.insecure).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder written when the run ends, as `fedge run` writes it (default: the config's `output`).",
)
@click.option("--overwrite", is_flag=True, help="Replace an earlier fedge run in the output folder.")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. --set training.lr=0.05 (with --resume: deploy.* keys only).",
)
@click.option(
    "--downgrade-security",
    is_flag=True,
    help="With --resume: allow fewer protections (TLS, client CA, allow-list, revocation list) than the run stored.",
)
@click.option("--dashboard", is_flag=True, help="Serve the live dashboard (address, port, token: [dashboard]).")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr.")
def serve_cmd(
    config: Path | None,
    host: str | None,
    port: int | None,
    state: str | None,
    resume: bool,
    allow_list: str | None,
    revoked: str | None,
    min_nodes: int | None,
    tls_cert: str | None,
    tls_key: str | None,
    client_ca: str | None,
    insecure: bool | None,
    output: Path | None,
    overwrite: bool,
    settings: tuple[str, ...],
    downgrade_security: bool,
    dashboard: bool,
    quiet: bool,
) -> None:
    """Run the federation in CONFIG for remote nodes (`fedge join`) over gRPC.

    The run's state (config, security settings, nodes, per-round metrics, model and
    strategy state) is kept in SQLite after every round; after a crash, `fedge serve
    --resume` continues it with the stored TLS files, allow-list and revocation list
    unless new ones are given. A finished run leaves the same run folder as `fedge run`.

    SIGTERM stops the server at any point with exit code 143: during start-up and while
    waiting for nodes at once, mid-round after that round is finished and checkpointed
    (a second SIGTERM stops at once). `fedge serve --resume` continues from the last
    checkpointed round.
    """
    stopper = _SigTerm()
    previous = signal.signal(signal.SIGTERM, stopper)
    try:
        from fedge.deploy.server import experiment_for

        _logging(not quiet)
        if downgrade_security and not resume:
            raise ConfigError("--downgrade-security goes with --resume")
        fixed = [s for s in settings if not s.strip().startswith("deploy.")]
        if resume and fixed:
            raise ConfigError(f"--resume continues the stored run as it was: --set {fixed[0]} cannot change it")
        deploy_options = {
            "host": host,
            "port": port,
            "state": state,
            "allow_list": allow_list,
            "revoked": revoked,
            "min_nodes": min_nodes,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
            "client_ca": client_ca,
            "insecure": insecure,
        }
        exp = experiment_for(config, deploy_options, settings)
        if not resume:  # a resume may take its TLS files from the store: checked once they are restored
            from fedge.deploy.security import check_plaintext

            check_plaintext(exp.section("deploy"))
        if dashboard:
            exp.section("dashboard").enabled = True
        _serve(exp, stopper, output, resume=resume, overwrite=overwrite, downgrade_security=downgrade_security)
    except _Terminated as exc:
        click.echo(f"fedge serve: stopped by SIGTERM ({exc}); `fedge serve --resume` continues the run", err=True)
        sys.exit(EXIT_SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)  # a caller running the command in its own process keeps its handler


EXIT_SIGTERM = 143
"""Exit code of ``fedge serve`` stopped by SIGTERM (128 + 15, what a shell reports for the signal)."""


class _Terminated(BaseException):
    """Raised by the SIGTERM handler while nothing is left to finish."""


class _SigTerm:
    """SIGTERM handler: before the round loop runs, stop at once; in a round, finish and checkpoint it first."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.signals = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        if self.transport is None:
            raise _Terminated("during start-up")
        if self.signals > 1:
            raise _Terminated("second SIGTERM")
        click.echo("fedge serve: SIGTERM, finishing the current round (SIGTERM again: stop now)", err=True)
        self.transport.stopping.set()


def _serve(
    exp: Experiment, stopper: _SigTerm, output: Path | None, *, resume: bool, overwrite: bool, downgrade_security: bool
) -> None:
    from fedge.deploy.server import StopServing, serve

    def ready(p: int) -> None:
        click.echo(f"fedge serve: listening on {exp.section('deploy').host}:{p}", err=True)

    def attach(transport: Any) -> None:
        stopper.transport = transport
        if stopper.signals:
            transport.stopping.set()

    hooks: list[Any] = [attach]
    board = None
    if exp.section("dashboard").enabled:
        from fedge.report import serve_dashboard_hook

        board = serve_dashboard_hook(exp, lambda url: click.echo(f"fedge serve: dashboard at {url}", err=True))
        hooks.append(board)

    def transport_hook(transport: Any) -> None:
        for hook in hooks:
            hook(transport)

    try:
        served = serve(
            exp,
            resume=resume,
            on_ready=ready,
            transport_hook=transport_hook,
            downgrade_security=downgrade_security,
            on_warning=lambda msg: click.echo(f"fedge serve: WARNING: {msg}", err=True),
            output=output or "default",
            overwrite=overwrite,
        )
    except StopServing as exc:
        raise _Terminated(str(exc)) from None
    finally:
        if board is not None:
            board.close()
    h = served.history
    click.echo(
        f"run {served.run_id}: {len(h)} rounds, final accuracy {h.final_accuracy:.4f}"
        + (f" (stopped: {served.result.stopped_early})" if served.result.stopped_early else "")
        + (f"; wrote {served.output}" if served.output else "")
    )
    if stopper.signals:
        raise _Terminated(f"after round {served.result.state.round_num}, checkpointed")


@click.command("join")
@click.option("--server", required=True, help="HOST:PORT of the fedge server.")
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="This node's private key (from `fedge keys new`).",
)
@click.option(
    "--partition",
    type=int,
    default=-1,
    show_default=True,
    help="Train on client K of the experiment's own dataset (demos, tests).",
)
@click.option(
    "--data",
    type=click.Path(exists=True, path_type=Path),
    help="Train on this CSV/Parquet/.npz file (a real device's data).",
)
@click.option("--label", default="label", show_default=True, help="Label column of --data.")
@click.option(
    "--project",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder of your model/data code ([model] factory, [data] loader), put on the import path.",
)
@click.option("--num-classes", type=int, default=0, help="Classes of the model with --data (0 = from labels).")
@click.option(
    "--ca",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM CA that signed the server certificate: turns on TLS.",
)
@click.option(
    "--cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM client certificate for mutual TLS (with --cert-key).",
)
@click.option("--cert-key", type=click.Path(dir_okay=False, path_type=Path), help="PEM key of --cert.")
@click.option("--insecure", is_flag=True, help="Connect in plaintext without --ca: a trusted network only.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where the client's own state (e.g. SCAFFOLD c_i) is kept.",
)
@click.option(
    "--profile",
    default="",
    help="Device profile name (`fedge devices`), shown in `fedge status`; under heterofl it picks this node's width.",
)
@click.option(
    "--give-up",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds of failed reconnects before the node exits.",
)
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr.")
def join_cmd(
    server: str,
    key_path: Path,
    partition: int,
    data: Path | None,
    label: str,
    project: Path,
    num_classes: int,
    ca: Path | None,
    cert: Path | None,
    cert_key: Path | None,
    insecure: bool,
    state_dir: Path,
    profile: str,
    give_up: float,
    quiet: bool,
) -> None:
    """Join the federation at SERVER and train until the run ends.

    TLS with --ca; plaintext only with an explicit --insecure.
    """
    from fedge.deploy.auth import Signer, load_private
    from fedge.deploy.node import Backoff, Node, file_client
    from fedge.usercode import add_search_paths

    _logging(not quiet)
    add_search_paths([project])
    if data is not None and partition >= 0:
        raise ConfigError("--data and --partition exclude each other")
    if (cert is None) != (cert_key is None):
        raise ConfigError("--cert and --cert-key go together")
    _plaintext_choice(ca, insecure, "join")
    chain = (cert_key.read_bytes(), cert.read_bytes()) if cert and cert_key else None
    state_dir.mkdir(parents=True, exist_ok=True)
    node = Node(
        server,
        Signer(load_private(key_path)),
        partition=partition,
        client_factory=file_client(str(data), label, num_classes) if data else None,
        state_dir=state_dir,
        root_ca=ca.read_bytes() if ca else None,
        cert_chain=chain,
        profile=profile,
        backoff=Backoff(give_up_s=give_up),
        insecure=insecure,
    )
    rounds = node.run()
    click.echo(f"node {node.signer.node_id} (client {node.client_id}): trained {rounds} rounds")


@click.command("relay")
@click.option("--parent", required=True, help="HOST:PORT of the parent: a `fedge serve` server or another relay.")
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="This relay's node key towards its parent (its .pub line, marked relay=N, is in the parent's allow-list).",
)
@click.option(
    "--kappa1",
    type=int,
    default=None,
    help="Edge steps with the children per parent round [default: the parent's [hierarchy] kappa1, else 1].",
)
@click.option("--partition", type=int, default=-1, show_default=True, help="First client id of this relay's block.")
@click.option("--ca", type=click.Path(dir_okay=False, path_type=Path), help="PEM CA of the parent's certificate: TLS.")
@click.option("--cert", type=click.Path(dir_okay=False, path_type=Path), help="PEM client certificate to the parent.")
@click.option("--cert-key", type=click.Path(dir_okay=False, path_type=Path), help="PEM key of --cert.")
@click.option("--insecure", is_flag=True, help="Talk to the parent in plaintext without --ca: a trusted network only.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the children connect to.")
@click.option("--port", type=int, default=9092, show_default=True, help="Port the children connect to (0 = any).")
@click.option(
    "--state",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="This relay's SQLite state file (its children's ids, its progress); kept across restarts.",
)
@click.option("--allow", "allow_list", required=True, help="Allow-list of the children's public keys.")
@click.option("--revoked", help="Revocation list of the children's public keys.")
@click.option("--min-nodes", type=int, default=0, help="Children the first round waits for (0 = all of its block).")
@click.option("--tls-cert", help="PEM certificate the children see.")
@click.option("--tls-key", help="PEM key of --tls-cert.")
@click.option("--client-ca", help="PEM CA of the children's certificates: mutual TLS.")
@click.option(
    "--serve-insecure", is_flag=True, help="Serve the children in plaintext without --tls-cert: a trusted network only."
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="A child-facing deploy.* key, e.g. --set deploy.round_deadline_s=120.",
)
@click.option(
    "--secagg",
    is_flag=True,
    help="SecAgg+ among the children: this relay learns only their sum (needs --kappa1 1). "
    "Under a parent with [secagg] the relay joins the parent's session with or without it.",
)
@click.option("--give-up", type=float, default=300.0, show_default=True, help="Seconds without the parent before exit.")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr.")
def relay_cmd(
    parent: str,
    key_path: Path,
    kappa1: int | None,
    partition: int,
    ca: Path | None,
    cert: Path | None,
    cert_key: Path | None,
    insecure: bool,
    host: str,
    port: int,
    state: Path,
    allow_list: str,
    revoked: str | None,
    min_nodes: int,
    tls_cert: str | None,
    tls_key: str | None,
    client_ca: str | None,
    serve_insecure: bool,
    settings: tuple[str, ...],
    secagg: bool,
    give_up: float,
    quiet: bool,
) -> None:
    """Relay between a parent and children for hierarchical FL.

    To its parent it is a node with its own key; to its children a server with its own TLS,
    allow-list and state file. Each parent round it runs --kappa1 rounds with its children
    and sends the parent one partial sum, never a child's update. SIGTERM stops it; run it
    again with the same --state to rejoin with the same children.
    """
    from fedge.deploy.auth import Signer, load_private
    from fedge.deploy.node import Backoff
    from fedge.deploy.relay import run_relay
    from fedge.deploy.server import experiment_for

    _logging(not quiet)
    other = [s for s in settings if not s.strip().startswith("deploy.")]
    if other:
        raise ConfigError(f"fedge relay takes only deploy.* settings, not --set {other[0]}")
    if (cert is None) != (cert_key is None):
        raise ConfigError("--cert and --cert-key go together")
    if kappa1 is not None and kappa1 < 1:
        raise ConfigError(f"--kappa1 must be >= 1, got {kappa1}")
    _plaintext_choice(ca, insecure, "relay")
    options = {
        "host": host,
        "port": port,
        "state": str(state),
        "allow_list": allow_list,
        "revoked": revoked,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "client_ca": client_ca,
        "insecure": serve_insecure or None,
        "min_nodes": min_nodes or 1 << 30,
    }
    cfg = experiment_for(None, options, settings).section("deploy")
    chain = (cert_key.read_bytes(), cert.read_bytes()) if cert and cert_key else None
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        rounds = run_relay(
            parent,
            Signer(load_private(key_path)),
            cfg,
            kappa1=kappa1,
            partition=partition,
            root_ca=ca.read_bytes() if ca else None,
            cert_chain=chain,
            insecure=insecure,
            backoff=Backoff(give_up_s=give_up),
            on_ready=lambda p: click.echo(f"fedge relay: serving children on {host}:{p}", err=True),
            stop=stop,
            secagg=secagg,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo(f"relay {Signer(load_private(key_path)).node_id}: relayed {rounds} rounds")


@click.group("keys")
def keys_group() -> None:
    """Node key pairs for authenticating to a fedge server."""


@keys_group.command("new")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for NAME.key (private, mode 0600) and NAME.pub.",
)
@click.option("--name", default="node", show_default=True, help="Key name (also in the .pub line).")
def keys_new(out: Path, name: str) -> None:
    """Write a new Ed25519 key pair; add NAME.pub's line to the server's allow-list."""
    from fedge.deploy.auth import new_keys, parse_keys

    key, pub = new_keys(out, name)
    (node_id,) = parse_keys(pub.read_text(), str(pub))
    click.echo(f"wrote {key} and {pub} (node id {node_id})")


def _plaintext_choice(ca: Path | None, insecure: bool, command: str) -> None:
    """``--ca`` or ``--insecure``, never both; plaintext is said out loud."""
    from fedge.deploy.node import PLAINTEXT

    if ca is not None and insecure:
        raise ConfigError("--ca and --insecure exclude each other")
    if ca is None and not insecure:
        raise ConfigError(PLAINTEXT)
    if insecure:
        click.echo(f"fedge {command}: WARNING: --insecure: no TLS, everything travels in plaintext", err=True)


@click.command("status")
@click.option("--server", required=True, help="HOST:PORT of the fedge server.")
@click.option(
    "--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="PEM CA of the server certificate: TLS."
)
@click.option(
    "--cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM client certificate when the server wants mutual TLS (with --cert-key).",
)
@click.option("--cert-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="PEM key of --cert.")
@click.option("--insecure", is_flag=True, help="Read a plaintext server's status (no --ca): a trusted network only.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw status JSON.")
def status_cmd(
    server: str, ca: Path | None, cert: Path | None, cert_key: Path | None, insecure: bool, as_json: bool
) -> None:
    """Show a running server's nodes, current round and last metrics."""
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # failures are explained in one line, not by gRPC's log
    from fedge.deploy.client import fetch_status

    if (cert is None) != (cert_key is None):
        raise ConfigError("--cert and --cert-key go together")
    if ca is not None and insecure:
        raise ConfigError("--ca and --insecure exclude each other")
    chain = (cert_key.read_bytes(), cert.read_bytes()) if cert and cert_key else None
    st = fetch_status(server, root_ca=ca.read_bytes() if ca else None, cert_chain=chain, insecure=insecure)
    if as_json:
        click.echo(st.to_json())
        return
    click.echo(
        f"run {st.run_id}: {st.phase}, round {st.round}/{st.rounds}, "
        f"{st.connected} of {len(st.nodes)} nodes connected (need {st.min_nodes}), "
        f"{st.received} updates in, waiting on {len(st.waiting_on)}"
    )
    if st.last_metrics:
        click.echo("last round: " + json.dumps(st.last_metrics))
    for n in st.nodes:
        click.echo(
            f"  client {n.client_id:4d}  node {n.node_id}  {n.profile or '-':12s} "
            f"{'connected' if n.connected else 'gone':9s} {'busy' if n.busy else 'idle'}  "
            f"last heartbeat {n.last_heartbeat:.1f}"
        )


@click.group("certs")
def certs_group() -> None:
    """TLS certificates for `fedge serve`, `fedge join` and `fedge status`."""


@certs_group.command("new")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for ca.pem/ca.key, server.pem/server.key and NAME.pem/NAME.key (keys mode 0600).",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    required=True,
    help="Name or IP address nodes use to reach the server (repeat for several).",
)
@click.option("--client", "clients", multiple=True, help="Also a node certificate NAME.pem for mutual TLS (repeat).")
@click.option("--days", type=int, default=365, show_default=True, help="Validity of every certificate.")
def certs_new(out: Path, hosts: tuple[str, ...], clients: tuple[str, ...], days: int) -> None:
    """Write a private CA and a server certificate for the given hosts; never overwrites a file.

    Then: `fedge serve --tls-cert OUT/server.pem --tls-key OUT/server.key` (add
    `--client-ca OUT/ca.pem` for mutual TLS); copy OUT/ca.pem to each device for
    `fedge join --ca` and `fedge status --ca` (and NAME.pem/NAME.key for `--cert/--cert-key`).
    Keep ca.key off the server and the devices.
    """
    from fedge.deploy.certs import new_certs

    files = new_certs(out, hosts, clients, days=days)
    click.echo(f"wrote {files.ca} and {files.ca_key} (the CA: keep the key safe)")
    click.echo(f"wrote {files.server} and {files.server_key} for {', '.join(hosts)}: fedge serve --tls-cert/--tls-key")
    for name, (cert, key) in files.clients.items():
        click.echo(f"wrote {cert} and {key} for node {name}: fedge join --cert/--cert-key")


def register(cli: click.Group) -> None:
    cli.add_command(serve_cmd)
    cli.add_command(join_cmd)
    cli.add_command(relay_cmd)
    cli.add_command(keys_group)
    cli.add_command(certs_group)
    cli.add_command(status_cmd)
