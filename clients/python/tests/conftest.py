"""
Fixtures: the real falkd of this repository (built once with ``dotnet build Falk.Api -c Release``), Debian's
sshd as a custom template, and, for the tests marked ``podman``, podman's API service with the test image.
Everything started here is stopped and removed at the end of the session.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import pytest

from falk_client import FalkClient, FalkError

from .support import FaultyProxy

REPO = Path(__file__).resolve().parents[3]
FALKD_DLL = REPO / "Falk.Api" / "bin" / "Release" / "net10.0" / "falkd.dll"
IMAGE_DIR = Path(os.environ.get("FALK_IMAGE_DIR", "/var/cache/falk-test-images"))
PODMAN_IMAGE = os.environ.get("FALK_TEST_IMAGE", "localhost/falk-test-sshd:latest")
CONTAINERS_CONF = REPO / "images" / "podman" / "containers.conf"

# vm_ports for the daemons of this run: away from the .NET tests' ranges (21000-41000).
_next_port = 42000 + (os.getpid() % 40) * 100


def _port_range(count: int = 20) -> tuple[int, int]:
    global _next_port
    first = _next_port
    _next_port += count
    return first, first + count - 1


def wait_until_sync(probe: Callable[[], str | None], timeout: float, what: str, interval: float = 0.05) -> None:
    """Polls ``probe`` (None = done, otherwise why not yet) until it is done or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    reason: str | None = "not tried"
    while time.monotonic() < deadline:
        reason = probe()
        if reason is None:
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} within {timeout:g} s; last: {reason}")


@pytest.fixture(scope="session")
def falkd_dll() -> Path:
    """falkd of this checkout, built once (``FALK_PY_NO_BUILD=1`` uses what is built)."""
    if os.environ.get("FALK_PY_NO_BUILD") != "1" or not FALKD_DLL.exists():
        subprocess.run(["dotnet", "build", str(REPO / "Falk.Api"), "-c", "Release", "-v", "quiet", "-nologo"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    assert FALKD_DLL.exists(), f"dotnet build did not make {FALKD_DLL}"
    return FALKD_DLL


@dataclass
class SshFiles:
    directory: Path
    host_public_key: Path
    client_key: Path
    config: Path
    user: str

    @property
    def launch(self) -> str:
        return f"/usr/sbin/sshd -D -e -p {{SSHPORT}} -f {self.config}"


def make_ssh_files(directory: Path) -> SshFiles:
    directory.mkdir(parents=True, exist_ok=True)
    host_key, client_key = directory / "ssh_host_ed25519_key", directory / "client_ed25519"
    for key, comment in ((host_key, "falk-py-host"), (client_key, "falk-py-client")):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)], check=True)
    shutil.copy(f"{client_key}.pub", directory / "authorized_keys")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation folder (its init script would make it)
    config = directory / "sshd_config"
    config.write_text(
        f"HostKey {host_key}\nAuthorizedKeysFile {directory / 'authorized_keys'}\nListenAddress 127.0.0.1\nPidFile none\n"
        "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        # A ~/.bashrc that runs `pyenv rehash` waits up to 60 s on a lock a killed session left: bound it.
        "SetEnv PYENV_REHASH_TIMEOUT=0\n"
    )
    import getpass

    return SshFiles(directory, Path(f"{host_key}.pub"), client_key, config, getpass.getuser())


class Daemon:
    """A falkd process on a config in its own temporary folder; :meth:`stop` ends it (SIGTERM, then SIGKILL) and removes the folder."""

    def __init__(self, dll: Path, templates: str, *, extra: str = "", ports: int = 20, permissions: str = "770") -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="falk-py-"))
        if permissions != "770":
            self.directory.chmod(0o755)  # others reach the socket
        self.socket = self.directory / "falk.sock"
        self.state_dir = self.directory / "state"
        first, last = _port_range(ports)
        self.config = self.directory / "falk.conf"
        self.config.write_text(
            f"[falk]\nname = falk-py-test\ncontrol_socket = {self.socket}\ncontrol_socket_permissions = {permissions}\n"
            f"vm_ports = [{first},{last}]\nstate_dir = {self.state_dir}\non_shutdown = destroy\n{extra}\n\n{templates}\n"
        )
        self.log = self.directory / "falkd.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(["dotnet", str(dll), "--config", str(self.config)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until_sync(self._answers, 60, "falkd answering on its socket")
        except BaseException:
            self.stop()
            raise

    @property
    def instance(self) -> str:
        """The ``org.falk.instance`` label of what this daemon makes (a hash of its state_dir)."""
        return hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]

    def _answers(self) -> str | None:
        if self.process.poll() is not None:
            raise RuntimeError(f"falkd exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")

        async def probe() -> None:
            async with FalkClient(self.socket) as client:
                await client.info()

        try:
            asyncio.run(probe())
            return None
        except FalkError as e:
            return str(e)

    def client(self) -> FalkClient:
        return FalkClient(self.socket)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def ssh_files(tmp_path_factory: pytest.TempPathFactory) -> SshFiles:
    return make_ssh_files(tmp_path_factory.mktemp("ssh"))


@pytest.fixture(scope="session")
def daemon(falkd_dll: Path, ssh_files: SshFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One falkd for the session with custom templates that run Debian's sshd (and a few that fail on purpose)."""
    other = make_ssh_files(tmp_path_factory.mktemp("other-ssh"))
    s = ssh_files
    templates = f"""
[sshd]
type = custom
launch = {s.launch}
ssh_user = {s.user}
ssh_host = 127.0.0.1
ssh_known_host_key_file = {s.host_public_key}

[sshd-unpinned]
type = custom
launch = {s.launch}
ssh_user = {s.user}
ssh_host = 127.0.0.1

[sshd-wrong-key]
type = custom
launch = {s.launch}
ssh_user = {s.user}
ssh_host = 127.0.0.1
ssh_known_host_key_file = {other.host_public_key}

[sshd-one]
type = custom
launch = {s.launch}
ssh_user = {s.user}
ssh_host = 127.0.0.1
ssh_known_host_key_file = {s.host_public_key}
max_machines = 1

[podman-down]
type = podman
base_image = localhost/falk-test-sshd:latest
ssh_user = chantal
ssh_host = 127.0.0.1

[never-ready]
type = custom
launch = sleep 600
ssh_user = {s.user}
ssh_host = 127.0.0.1
ssh_known_host_key_file = {s.host_public_key}
"""
    # podman-down: a podman template whose API service socket nobody answers on.
    d = Daemon(falkd_dll, templates, extra=f"podman_socket = unix://{tmp_path_factory.mktemp('no-podman')}/podman.sock")
    yield d
    d.stop()


@pytest.fixture
async def client(daemon: Daemon) -> AsyncIterator[FalkClient]:
    async with daemon.client() as c:
        yield c


@pytest.fixture
async def proxy(daemon: Daemon, tmp_path: Path) -> AsyncIterator[FaultyProxy]:
    """A Unix socket in front of the daemon's that a test can cut, refuse or make drop an answer."""
    p = FaultyProxy(tmp_path / "proxy.sock", daemon.socket)
    await p.start()
    yield p
    await p.close()


# ----- podman -----


def podman(*args: str) -> list[str]:
    done = subprocess.run(["podman", *args], check=True, capture_output=True, text=True, env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)})
    return done.stdout.split()


def remove_podman_instance(instance: str) -> None:
    """Removes the containers and images (committed versions) a daemon instance made, found by its label."""
    label = f"label=org.falk.instance={instance}"
    containers = podman("ps", "-a", "-q", "--filter", label)
    if containers:
        podman("rm", "-f", *containers)
    for _ in range(5):  # versions can be layered on each other: each round removes the ones nothing uses
        images = sorted(set(podman("images", "-a", "-q", "--no-trunc", "--filter", label)))
        if not images:
            return
        subprocess.run(["podman", "rmi", "-f", *images], capture_output=True, env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)})


@dataclass
class PodmanSetup:
    daemon: Daemon
    client_key: Path


@pytest.fixture(scope="session")
def podman_daemon(falkd_dll: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanSetup]:
    """The test image (images/podman/build-image.sh, cached), ``podman system service`` on a socket of its own and a falkd using it."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/install-deps.sh installs it)")
    subprocess.run([str(REPO / "images" / "podman" / "build-image.sh")], check=True, stdout=subprocess.DEVNULL)
    directory = tmp_path_factory.mktemp("podman")
    socket_path = directory / "podman.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    daemon: Daemon | None = None
    try:

        def service_answers() -> str | None:
            if service.poll() is not None:
                raise RuntimeError(f"podman system service exited with {service.returncode}")
            import socket

            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(str(socket_path))
                    return None
                except OSError as e:
                    return str(e)

        wait_until_sync(service_answers, 30, "podman system service answering")
        daemon = Daemon(
            falkd_dll,
            f"[debian-ssh]\ntype = podman\nbase_image = {PODMAN_IMAGE}\nssh_user = chantal\nssh_host = 127.0.0.1\n",
            extra=f"podman_socket = unix://{socket_path}",
        )
        yield PodmanSetup(daemon, IMAGE_DIR / "podman" / "id_ed25519")
    finally:
        instance = daemon.instance if daemon is not None else None
        if daemon is not None:
            daemon.stop()
        if instance is not None:
            remove_podman_instance(instance)
        os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()
