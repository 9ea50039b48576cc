"""Who may talk to whom: ZeroMQ CURVE keys per role, and the explicit insecure mode.

A key folder (made by ``seal keys init``) holds, per role, a CURVE key pair
(``ROLE.key`` public, ``ROLE.key_secret`` secret, in pyzmq's certificate
format), plus the auditor's Ed25519 signing key (see :mod:`protocol.signing`),
and a subfolder per role, ``ROLE/``, holding only the files that role needs
(:func:`role_key_files`): a deployment mounts that subfolder alone, so no role
holds another's secret key.
A server accepts only the public keys of the roles allowed to call it; a
client must know the server's public key. The ZAP handler also names each
connection's role (its User-Id, read from the key that connected), which the
server checks against :mod:`protocol.authorisation`. Plain TCP needs
``--insecure`` and is refused on anything but loopback.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from protocol.authorisation import PERMISSIONS
from protocol.messages import Role
from protocol.signing import SIGNING_KEY, VERIFY_KEY

log = logging.getLogger(__name__)

ROLES: tuple[Role, ...] = ("teacher", "student", "auditor", "cli")
# The roles allowed to call each server role: those with permissions on its channel.
ALLOWED_CALLERS: dict[Role, tuple[Role, ...]] = {server: tuple(callers) for server, callers in PERMISSIONS.items()}  # type: ignore[misc]


class SecurityError(Exception):
    """Missing or unusable keys, or an insecure endpoint that is not loopback."""


@dataclass(frozen=True)
class KeyPair:
    public: bytes
    secret: bytes


@dataclass(frozen=True)
class CurveServer:
    """A server's own key pair and the public keys it lets in, each with the role it authenticates."""

    keys: KeyPair
    callers: Mapping[bytes, Role]  # z85-encoded public key -> role


@dataclass(frozen=True)
class CurveClient:
    """A client's own key pair and the public key of the server it calls."""

    keys: KeyPair
    server_public: bytes


def create_role_keys(folder: Path) -> list[Path]:
    """Write a CURVE key pair for every role that has none yet; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for role in ROLES:
        if not (folder / f"{role}.key_secret").exists():
            public, secret = zmq.auth.create_certificates(str(folder), role)
            written += [Path(public), Path(secret)]
    for path in folder.glob("*.key_secret"):
        path.chmod(0o600)
    return written


# The verdict-signing files each role needs: the auditor signs, the student (before it serves) and the CLI
# (before it sends a promotion, and in `seal ledger verify`) check.
SIGNING_FILES: dict[Role, tuple[str, ...]] = {"auditor": (SIGNING_KEY,), "student": (VERIFY_KEY,), "cli": (VERIFY_KEY,)}


def role_key_files(role: Role) -> list[str]:
    """The key-folder files ``role`` needs: its own secret key, the public keys of the roles it calls or that
    call it, and its verdict-signing file, if any."""
    calls = [server for server, callers in ALLOWED_CALLERS.items() if role in callers]
    peers = sorted({*ALLOWED_CALLERS.get(role, ()), *calls})
    return [f"{role}.key_secret", *(f"{peer}.key" for peer in peers), *SIGNING_FILES.get(role, ())]


def write_role_folders(folder: Path) -> list[Path]:
    """Copy into ``folder/ROLE/`` the files each role needs (:func:`role_key_files`); returns those written.

    A copy is written when it is missing or differs from the folder's own file, so the role folders follow
    the keys kept at the top level. Secret files keep their owner-only mode.
    """
    written = []
    for role in ROLES:
        target = folder / role
        target.mkdir(mode=0o700, exist_ok=True)
        for name in role_key_files(role):
            source, copy = folder / name, target / name
            data = source.read_bytes()
            if copy.is_file() and copy.read_bytes() == data:
                continue
            copy.write_bytes(data)
            copy.chmod(source.stat().st_mode & 0o777)
            written.append(copy)
    return written


def load_keys(folder: Path, role: Role) -> KeyPair:
    """A role's key pair from the key folder."""
    path = folder / f"{role}.key_secret"
    public, secret = _load_certificate(path, f"no usable secret key for the {role}")
    if secret is None:
        raise SecurityError(f"{path} holds no secret key")
    return KeyPair(public, secret)


def load_public(folder: Path, role: Role) -> bytes:
    """A peer role's public key from the key folder."""
    return _load_certificate(folder / f"{role}.key", f"no public key for the {role}")[0]


def _load_certificate(path: Path, missing: str) -> tuple[bytes, bytes | None]:
    """(public, secret or None) from a pyzmq certificate file; ``missing`` starts the error when unreadable."""
    try:
        return zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise SecurityError(f"{missing} at {path} ({exc}); run 'seal keys init'") from None


def server_security(folder: Path, role: Role) -> CurveServer:
    """The server's keys and its allowed callers' public keys, each bound to the caller's role."""
    callers = {load_public(folder, caller): caller for caller in ALLOWED_CALLERS[role]}
    return CurveServer(load_keys(folder, role), callers)


def client_security(folder: Path, role: Role, server_role: Role) -> CurveClient:
    return CurveClient(load_keys(folder, role), load_public(folder, server_role))


def apply_curve(sock: zmq.Socket, security: CurveServer | CurveClient | None) -> None:
    """Set a socket's CURVE options before it binds or connects."""
    if security is None:
        return
    sock.curve_secretkey = security.keys.secret
    sock.curve_publickey = security.keys.public
    if isinstance(security, CurveServer):
        sock.curve_server = True
    else:
        sock.curve_serverkey = security.server_public


class _AllowList:
    """ZAP credentials callback: a client is let in only if its public key is listed."""

    def __init__(self, allowed: Mapping[bytes, Role]):
        self.allowed = allowed  # z85-encoded, as pyzmq hands keys to the callback

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in self.allowed
        if not ok:
            log.warning("refused a CURVE client with an unknown public key")
        return ok


class _RoleAuthenticator(ThreadAuthenticator):
    """A ZAP handler whose User-Id for each connection is the role its public key belongs to."""

    def __init__(self, ctx: zmq.Context, callers: Mapping[bytes, Role]):
        super().__init__(ctx)
        self.callers = callers

    def curve_user_id(self, client_public_key: bytes) -> str:
        """The caller's role; only called for a key the allow list let in."""
        return self.callers[z85.encode(client_public_key)]


def start_authenticator(ctx: zmq.Context, security: CurveServer) -> ThreadAuthenticator:
    """Run the ZAP handler that checks every connecting client's key and names its role; stop it with the server.

    A server reads the role from any received frame: ``frame.get("User-Id")`` (received with ``copy=False``).
    """
    auth = _RoleAuthenticator(ctx, security.callers)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=_AllowList(security.callers))
    return auth


def check_insecure_endpoint(endpoint: str) -> None:
    """Plain TCP is allowed on loopback only; say so loudly."""
    parsed = urlparse(endpoint)
    if parsed.scheme in ("ipc", "inproc"):
        return
    host = (parsed.hostname or "").strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SecurityError(f"--insecure is only allowed on loopback, not on {endpoint}; use --keys instead")
    log.warning("INSECURE: %s uses plain TCP without authentication (--insecure)", endpoint)
