"""TLS settings shared by the server, the agent and the CLI (see docs/adr/0011).

Clients verify the server, always: ``client_context(ca_file)`` is the one SSL context a
process builds, trusting only ``ca_file`` when given and the system's trust store otherwise.
There is no option to switch verification off. ``tls_failure(exc)`` finds a TLS failure in
an exception chain (httpx and websockets wrap the ``ssl`` error differently) and words it as
one line. ``check_server_files`` loads the server's certificate and key once at start, so a
bad file is one line naming it instead of a traceback from inside uvicorn.

Every failure here is a ``TlsConfigError`` whose message is one line fit for ``error: ``.
"""

from __future__ import annotations

import ssl
from pathlib import Path

ENV_TLS_CA = "L2POP_TLS_CA"
#: appended to a verification failure: what the user can do about it
TRUST_HINT = f"trust the server's CA with --tls-ca or {ENV_TLS_CA}"


class TlsConfigError(Exception):
    """A TLS file that cannot be used; the message is one line naming the file."""


def _readable(path: str, what: str) -> None:
    try:
        with Path(path).open("rb"):
            pass
    except OSError as exc:
        raise TlsConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """The context clients of the server use: hostname and chain verified, TLS >= 1.2."""
    if ca_file:
        _readable(ca_file, "CA file")
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except ssl.SSLError as exc:
        raise TlsConfigError(
            f"CA file {ca_file} holds no usable PEM certificate ({exc.reason or exc})"
        ) from None


def check_server_files(cert_file: str, key_file: str) -> None:
    """Raise ``TlsConfigError`` unless the PEM certificate and key load and match."""
    _readable(cert_file, "TLS certificate")
    _readable(key_file, "TLS key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise TlsConfigError(
            f"TLS certificate {cert_file} and key {key_file} do not load as a matching PEM "
            f"pair ({exc.reason or exc})"
        ) from None


def tls_failure(exc: BaseException) -> str | None:
    """One line for the TLS failure behind ``exc`` (followed through its causes), or None."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):
            why = cur.verify_message or cur.reason or str(cur)
            return f"TLS certificate verification failed: {why} ({TRUST_HINT})"
        if isinstance(cur, ssl.SSLError):
            hint = " (is it serving plain http?)" if cur.reason == "WRONG_VERSION_NUMBER" else ""
            return f"TLS handshake failed: {cur.reason or cur}{hint}"
        cur = cur.__cause__ or cur.__context__
    return None
