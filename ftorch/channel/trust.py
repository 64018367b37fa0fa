"""Who may speak on the logging channel: the pair's two agents, and nobody else.

The channel runs over TLS 1.3 with one credential per pair (an EC P-256 key and a self-signed
certificate naming the pair), made when the pair comes up and given to both hosts over SSH, kept
0600 in each host's pair folder. Each side presents it and accepts only a peer that presents the
same certificate: mutual authentication, integrity and privacy (the log carries the guest's
network input) from Python's `ssl`, with no crypto of our own. Why not per-frame HMAC: it would
be a protocol of our own to get right (nonces, replay, key separation) and leave the log readable
on the LAN; TLS costs one handshake per connection and ~1 µs a frame (bench/results/latest.md).
"""
from __future__ import annotations

import datetime
import os
import ssl
from pathlib import Path

from ftorch.errors import ChannelError

KEY_FILE = "channel.key"
CERT_FILE = "channel.crt"
CREDENTIAL_FILES = (KEY_FILE, CERT_FILE)
HANDSHAKE_S = 3.0    # a peer that has not authenticated by then is dropped


def new_credential(pair: str) -> dict[str, bytes]:
    """A fresh key and self-signed certificate for `pair`: file name -> content."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ftorch pair {pair}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            # hosts' clocks may differ by a day; the credential lives as long as the pair
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    return {
        KEY_FILE: key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()),
        CERT_FILE: cert.public_bytes(serialization.Encoding.PEM),
    }


def read_credential(folder: Path) -> dict[str, bytes]:
    """This host's copy of the pair's credential (to hand to a new backup over SSH)."""
    try:
        return {n: (folder / n).read_bytes() for n in CREDENTIAL_FILES}
    except OSError as e:
        raise ChannelError(f"the pair's channel credential is missing in {folder} ({e}); "
                           "`ftorch down` and `ftorch up` make a new one") from None


def context(folder: Path, server: bool) -> ssl.SSLContext:
    """A TLS context that presents the pair's certificate and accepts only the same one."""
    key, cert = folder / KEY_FILE, folder / CERT_FILE
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False        # the pair's certificate is the identity, not an address
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        if key.stat().st_mode & 0o077:
            raise ChannelError(f"{key} is readable by others (mode "
                               f"{oct(key.stat().st_mode & 0o777)}): it must be 0600")
        ctx.load_cert_chain(str(cert), str(key))
        ctx.load_verify_locations(cafile=str(cert))
    except OSError as e:   # ssl.SSLError is one
        raise ChannelError(f"cannot load the pair's channel credential from {folder}: {e}; "
                           "`ftorch down` and `ftorch up` make a new one") from None
    return ctx


def write_credential(folder: Path, files: dict[str, bytes]) -> None:
    """Store a credential 0600 (tests and the lab; hosts get theirs through rpc)."""
    for name, data in files.items():
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
