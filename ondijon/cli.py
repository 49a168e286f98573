"""``ondijon``: one command for every role.

    ondijon ca init --dir DIR                     create the root and issuing CA
    ondijon operator add NAME --config ORCH.toml  register an operator, write its profile
    ondijon orchestrator serve --config ORCH.toml run the orchestrator
    ondijon orchestrator migrate --config ORCH.toml
    ondijon gateway add|list|show ...             fleet registry (admin API)
    ondijon gateway revoke GATEWAY [--reason R]   revoke its certificates, close its stream
    ondijon gateway token GATEWAY                 a fresh one-time enrollment token
    ondijon audit export --format csv|jsonl       the audit log, for archiving
    ondijon devices GATEWAY                       current device states
    ondijon desired put GATEWAY KIND FILE.json    push a schedule, signal plans, access list
    ondijon desired get GATEWAY KIND              the document in force, as JSON
    ondijon command override GATEWAY --level N    force lamps for a while
    ondijon bollard lower|raise|auto|reset|emergency-lower|release-emergency GATEWAY BOLLARD
    ondijon signal flash|plan GATEWAY ...         a crossing to flashing amber or a plan
    ondijon override list|cancel GATEWAY ...      overrides in force; end one
    ondijon events [GATEWAY] [--watch]            events, newest first, filtered
    ondijon edge enroll --config AGENT.toml --token T
    ondijon edge run --config AGENT.toml          run a cabinet's agent
    ondijon release keygen|build|sign|upload|list agent releases (see ondijon.firmware_cli)
    ondijon campaign create|list|show|pause|resume|abort   firmware campaigns
    ondijon city|assets|group|fleet ...           the city: register, groups, targets
                                                  (see ondijon.city_cli)
    ondijon demo                                  a local city: orchestrator + 3 cabinets
    ondijon alarms list|watch|ack|shelve|assign|close   alarms (see ondijon.alarms_cli)
    ondijon opendata export --config ORCH.toml --out DIR   open data (ondijon.opendata_cli)
    ondijon energy --since DAY [--by commune]     kWh, burning hours, saving vs baseline
    ondijon playbook put|list|start|confirm|end|show    crisis playbooks

Errors print one line naming what is wrong and exit 2; listings take ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec

from foundation.clock import SystemClock
from foundation.errors import FieldError
from foundation.escaping import escape
from foundation.logs import LogSettings
from foundation.logs import configure as configure_logging

# The commands this module defines itself. When one of them is typed, the commands of the
# other modules (the admin client, the city's register, alarms, open data, firmware) are not
# even loaded: a cabinet's ``ondijon edge run`` imports nothing of the control room's.
_OWN_COMMANDS = frozenset({"ca", "operator", "orchestrator", "edge", "demo"})


def _command_typed(argv: Sequence[str]) -> str | None:
    """The command word of ``argv`` (the only global option, ``-v``, takes no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command`` (the word typed) one of ours, without the others'."""
    everyone = command not in _OWN_COMMANDS
    parser = argparse.ArgumentParser(prog="ondijon", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    ca = sub.add_parser("ca", help="the private certificate authority")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True)
    ca_init = ca_sub.add_parser("init", help="create a root and an issuing CA")
    ca_init.add_argument("--dir", type=Path, required=True)
    ca_init.add_argument("--name", default="OnDijon")

    operator = sub.add_parser("operator", help="operator accounts (run on the orchestrator host)")
    op_sub = operator.add_subparsers(dest="operator_command", required=True)
    op_add = op_sub.add_parser("add", help="register an operator and write its profile")
    op_add.add_argument("name")
    op_add.add_argument("--config", type=Path, required=True, help="orchestrator TOML")
    op_add.add_argument(
        "--role", choices=["viewer", "operator", "crisis", "admin"], default="operator"
    )
    op_add.add_argument("--commune", action="append", help="commune in scope ('*' for all)")
    op_add.add_argument("--profile-dir", type=Path, required=True)
    op_add.add_argument("--address", required=True, help="orchestrator host:port for the CLI")
    op_pw = op_sub.add_parser(
        "password",
        help="set an operator's web console password and a new TOTP secret (printed once)",
    )
    op_pw.add_argument("name")
    op_pw.add_argument("--config", type=Path, required=True, help="orchestrator TOML")
    op_pw.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )

    orch = sub.add_parser("orchestrator", help="the central service")
    orch_sub = orch.add_subparsers(dest="orchestrator_command", required=True)
    for name, text in (("serve", "run the orchestrator"), ("migrate", "migrate the store")):
        p = orch_sub.add_parser(name, help=text)
        p.add_argument("--config", type=Path, required=True)

    if everyone:
        from ondijon.admin import add_commands as add_admin_commands

        add_admin_commands(sub)

    edge = sub.add_parser("edge", help="the cabinet agent")
    edge_sub = edge.add_subparsers(dest="edge_command", required=True)
    enroll = edge_sub.add_parser(
        "enroll",
        help="make a key, get a certificate with a token",
        description="Make a new key on this gateway (it never leaves it) and trade a one-time "
        "token for a certificate. The running agent renews that certificate by itself over "
        "its link at two thirds of its lifetime; an agent that stayed offline past the "
        "expiry, or was revoked, comes back only this way, with a fresh token from "
        "`ondijon gateway token`.",
    )
    enroll.add_argument("--config", type=Path, required=True)
    enroll.add_argument("--token", required=True)
    run = edge_sub.add_parser("run", help="run the agent")
    run.add_argument("--config", type=Path, required=True)

    demo = sub.add_parser("demo", help="a local city: orchestrator and three cabinets")
    demo.add_argument("--dir", type=Path, default=Path("demo-run"))
    demo.add_argument("--speed", type=float, default=120.0, help="simulated clock speed")
    demo.add_argument("--seconds", type=float, default=0, help="stop after this long (0: Ctrl-C)")
    demo.add_argument(
        "--city",
        action="store_true",
        help="also put the generated Dijon-sized city (1,500 cabinets, 34,000 lamps) in the "
        "asset register, beside the three live cabinets",
    )

    if everyone:
        from ondijon.firmware_cli import add_commands

        add_commands(sub)
        from ondijon.city_cli import add_commands as add_city_commands

        add_city_commands(sub)
        from ondijon import alarms_cli

        alarms_cli.add_commands(sub)
        from ondijon import opendata_cli

        opendata_cli.add_commands(sub)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "ca":
        from datetime import UTC, datetime

        from provisioning.ca import CertificateAuthority

        ca = CertificateAuthority.init(args.dir, now=datetime.now(UTC), name=args.name)
        print(f"CA created in {escape(str(ca.directory))} (root.key and issuing.key are mode 0600)")
        return 0
    if args.command == "operator" and args.operator_command == "password":
        return _console_password(args)
    if args.command == "operator":
        from datetime import UTC, datetime

        from orchestrator.config import OrchestratorConfig
        from orchestrator.identity.operators import add_operator

        profile = add_operator(
            OrchestratorConfig.load(args.config),
            name=args.name,
            role=args.role,
            communes=args.commune or [],
            profile_dir=args.profile_dir,
            address=args.address,
            now=datetime.now(UTC),
        )
        print(
            f"operator {escape(args.name)} ({args.role}) written to "
            f"{escape(str(profile.directory))}"
        )
        return 0
    if args.command == "orchestrator":
        from orchestrator.config import OrchestratorConfig

        config = OrchestratorConfig.load(args.config)
        _configure_logging(config.log, args.verbose)
        if args.orchestrator_command == "migrate":
            from orchestrator.store.database import Store

            Store.open(config.store_url).close()
            print("store is at the newest schema")
            return 0
        from orchestrator.server import serve

        asyncio.run(serve(config, SystemClock()))
        return 0
    if args.command == "edge":
        from edge.config import AgentConfig

        agent_config = AgentConfig.load(args.config)
        _configure_logging(agent_config.log, args.verbose)
        if args.edge_command == "enroll":
            from edge.identity import enroll

            leaf = asyncio.run(enroll(agent_config, args.token))
            print(
                f"enrolled {agent_config.gateway_id}; certificate valid until "
                f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
            )
            return 0
        from edge.agent import run_agent

        asyncio.run(run_agent(agent_config))
        return 0
    if args.command == "demo":
        from ondijon.demo import run_demo

        return run_demo(args.dir, speed=args.speed, seconds=args.seconds, with_city=args.city)
    if args.command in ("release", "campaign"):
        from ondijon.firmware_cli import run_firmware

        return run_firmware(args)
    if args.command in ("city", "assets", "group", "fleet"):
        from ondijon.city_cli import run_city

        return run_city(args)
    if args.command == "opendata":
        from ondijon import opendata_cli

        return opendata_cli.run(args)
    if args.command in ("alarms", "energy", "playbook"):
        from ondijon import alarms_cli

        return alarms_cli.run(args)
    if getattr(args, "admin", None):
        from ondijon.admin import run_admin

        return run_admin(args)
    raise AssertionError(args.command)


def _configure_logging(settings: LogSettings, verbose: bool) -> None:
    """The ``[log]`` table of the configuration just read (``-v`` keeps debug)."""
    if verbose:
        settings = msgspec.structs.replace(settings, level="debug")
    configure_logging(settings)


def main(argv: Sequence[str] | None = None) -> int:
    # gRPC's own C-core log lines (e.g. "Handshake failed") would precede our one-line
    # errors; it reads this before it is first imported.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    if argv is None:
        argv = sys.argv[1:]
    args = _parser(_command_typed(argv)).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader left (`ondijon events | head`): what it read is what it wanted. Point
        # stdout at /dev/null so the interpreter's last flush has nowhere to fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (FieldError, OSError) as exc:
        # The one place any field error becomes a line for a person: every subsystem's
        # errors share FieldError (foundation.errors), and all of them mean nothing changed.
        if args.verbose:
            raise
        # The orchestrator's answer may quote what a caller or a gateway typed.
        print(f"ondijon: error: {escape(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


def _console_password(args: argparse.Namespace) -> int:
    import getpass
    from datetime import UTC, datetime

    from orchestrator.config import OrchestratorConfig
    from orchestrator.identity.operators import set_console_password
    from provisioning.totp import provisioning_uri

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("console password: ")
        if getpass.getpass("again: ") != password:
            print("ondijon: error: password: the two entries differ", file=sys.stderr)
            return 2
    secret = set_console_password(
        OrchestratorConfig.load(args.config),
        name=args.name,
        password=password,
        now=datetime.now(UTC),
    )
    print(f"console password set for {escape(args.name)}; their open sessions ended.")
    print("TOTP secret (add it to the operator's authenticator app; shown only now):")
    print(f"  {secret}")
    print(f"  {provisioning_uri(secret, args.name)}")
    return 0
