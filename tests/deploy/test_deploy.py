"""The deploy files: systemd units, the orchestrator's container image and compose file,
the balena application. Built and started when a container engine runs here; otherwise
checked statically (parsed, every path and command they name exists), saying why."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from edge.config import AgentConfig
from orchestrator.config import OrchestratorConfig

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"


def container_engine() -> tuple[str, str]:
    """(engine, "") when one answers, else ("", why not)."""
    why = []
    for engine in ("podman", "docker"):
        path = shutil.which(engine)
        if path is None:
            why.append(f"no {engine}")
            continue
        probe = subprocess.run([engine, "info"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return engine, ""
        why.append(f"{engine} does not run ({(probe.stderr or probe.stdout).strip()[:120]})")
    return "", "; ".join(why)


def console_scripts() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def wheel_modules() -> set[str]:
    return set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"][
            "wheel"
        ]["packages"]
    )


# -- systemd ---------------------------------------------------------------------------------


def unit(name: str) -> dict[str, list[str]]:
    """``Key`` -> values of a unit file (every section; repeated keys kept)."""
    found: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.parametrize("name", ["ondijon-orchestrator.service", "ondijon-agent.service"])
def test_units_run_as_ondijon_hardened_and_name_real_commands(name: str) -> None:
    keys = unit(name)
    assert keys["User"] == ["ondijon"] and keys["StateDirectory"] == ["ondijon"]
    for hardening in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"):
        assert keys[hardening][0] in ("yes", "strict"), hardening
    assert keys["CapabilityBoundingSet"] == [""]
    for command in keys["ExecStart"] + keys.get("ExecStartPre", []):
        argv = command.split()
        assert argv[0].startswith("/opt/ondijon/venv/bin/")
        program = argv[0].rsplit("/", 1)[1]
        if program == "python":
            assert argv[1] == "-m" and (ROOT / (argv[2].replace(".", "/") + ".py")).is_file()
        else:
            assert program in console_scripts()
    if shutil.which("systemd-analyze"):
        verdict = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", str(DEPLOY / "systemd" / name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", verdict.stdout)
        assert exposure, verdict.stdout[-500:] + verdict.stderr[-500:]
        print(f"systemd-analyze security {name}: exposure {exposure.group(1)}")
        assert float(exposure.group(1)) <= 2.0  # "OK" in systemd's words
    else:
        print("systemd-analyze not found: exposure not measured")


def test_sysusers_and_tmpfiles_make_the_user_and_directories_the_units_use() -> None:
    sysusers = (DEPLOY / "systemd" / "ondijon.sysusers").read_text().splitlines()
    entries = [line.split() for line in sysusers if line and not line.startswith("#")]
    assert entries[0][:2] == ["u", "ondijon"]
    assert {("m", "ondijon", "gpio"), ("m", "ondijon", "dialout")} <= {tuple(e) for e in entries}
    tmpfiles = (DEPLOY / "systemd" / "ondijon.tmpfiles").read_text().splitlines()
    made = {line.split()[1] for line in tmpfiles if line.startswith("d ")}
    assert {"/etc/ondijon", "/var/lib/ondijon", "/var/lib/ondijon/firmware"} <= made
    agent = unit("ondijon-agent.service")
    assert "gpio" in agent["SupplementaryGroups"][0]


# -- the orchestrator's container --------------------------------------------------------------


def containerfile() -> list[tuple[str, str]]:
    text = (DEPLOY / "container" / "Containerfile").read_text().replace("\\\n", " ")
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_the_image_runs_as_a_user_checks_its_health_and_ships_a_valid_config() -> None:
    steps = containerfile()
    users = [arg for op, arg in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    health = [arg for op, arg in steps if op == "HEALTHCHECK"]
    assert health and "/readyz" in health[0]
    for op, arg in steps:
        if op == "COPY":
            *sources, _ = arg.split()
            for source in sources:
                if not source.startswith("dist/"):  # made by `make dist`
                    assert (ROOT / source).exists(), source
    assert json.loads(dict(steps)["ENTRYPOINT"])[0] in console_scripts()
    config = OrchestratorConfig.load(DEPLOY / "container" / "orchestrator.toml", {})
    port = int(config.observe_listen.rpartition(":")[2])
    assert f":{port}/readyz" in health[0]
    assert str(port) in dict(steps)["EXPOSE"].split()


def test_compose_runs_postgresql_and_two_replicas_on_it() -> None:
    compose = yaml.safe_load((DEPLOY / "container" / "compose.yaml").read_text())
    services = compose["services"]
    replicas = [s for name, s in services.items() if name.startswith("orchestrator-")]
    assert len(replicas) == 2 and "postgres" in services
    for replica in replicas:
        assert (ROOT / "deploy" / "container" / replica["build"]["context"]).resolve() == ROOT
        assert (ROOT / replica["build"]["dockerfile"]).is_file()
        assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
        # The environment is applied as the image would: a valid configuration on PostgreSQL.
        config = OrchestratorConfig.load(
            DEPLOY / "container" / "orchestrator.toml", replica["environment"]
        )
        assert config.store_url.startswith("postgresql+psycopg://")
        assert "@postgres:5432/" in config.store_url
    host_ports = [p.split(":")[0] for r in replicas for p in r["ports"]]
    assert len(host_ports) == len(set(host_ports))


def test_the_image_builds_and_becomes_healthy_where_a_container_engine_runs() -> None:
    engine, why = container_engine()
    if not engine:
        pytest.skip(f"no container engine runs here ({why}): checked statically above")
    wheels = list((ROOT / "dist").glob("ondijon-*.whl"))
    if not wheels:
        subprocess.run(["make", "dist"], cwd=ROOT, check=True, timeout=600)
    tag = "localhost/ondijon-orchestrator:test"
    subprocess.run(
        [engine, "build", "-f", "deploy/container/Containerfile", "-t", tag, "."],
        cwd=ROOT,
        check=True,
        timeout=1200,
    )
    user = subprocess.run(
        [engine, "run", "--rm", "--entrypoint", "id", tag, "-u"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert user.stdout.strip() != "0"


# -- balena ------------------------------------------------------------------------------------


def test_the_balena_application_gives_the_agent_gpio_and_a_valid_config(tmp_path: Path) -> None:
    balena = DEPLOY / "balena"
    compose = yaml.safe_load((balena / "docker-compose.yml").read_text())
    agent = compose["services"]["agent"]
    assert (balena / agent["build"] / "Dockerfile.template").is_file()
    assert any("gpiochip" in device for device in agent["devices"])
    assert agent["environment"]["GPIOZERO_PIN_FACTORY"] == "lgpio"
    template = (balena / "agent" / "Dockerfile.template").read_text()
    assert "%%BALENA_MACHINE_NAME%%" in template
    for line in template.splitlines():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            for source in sources:
                if source not in ("ondijon-*.whl", "root.pem"):  # copied in, per README
                    assert (balena / "agent" / source).is_file(), source
    assert "start.sh" in template
    # The image's config with one device's variables (as balena sets them) is valid, and
    # has no [firmware]: releases come from balena (orchestrator/firmware/balena.py).
    env = dict(agent["environment"])
    env |= {
        "ONDIJON_AGENT__GATEWAY__ID": "dijon-darcy-01",
        "ONDIJON_AGENT__GATEWAY__SERIAL": "SN-4F2A-0001",
        "ONDIJON_AGENT__SITE__LATITUDE": "47.3226",
    }
    config = AgentConfig.load(balena / "agent" / "agent.toml", env)
    assert config.gateway_id == "dijon-darcy-01" and config.latitude == 47.3226
    assert config.firmware is None and config.observe_listen == "127.0.0.1:9465"
    start = (balena / "agent" / "start.sh").read_text()
    assert "ondijon edge enroll" in start and "exec ondijon edge run" in start


def test_make_dist_builds_the_wheel_the_deploy_steps_install(tmp_path: Path) -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^dist:", makefile, re.M)
    readme = (ROOT / "README.md").read_text()
    assert "make dist" in readme and "ondijon-*.whl" in readme
    wheels = sorted((ROOT / "dist").glob("ondijon-*.whl"))
    if not wheels:
        pytest.skip("dist/ is empty: `make dist` not run in this checkout")
    names = zipfile.ZipFile(wheels[-1]).namelist()
    assert {name.split("/")[0] for name in names if "/" in name} >= wheel_modules()
