"""The lab's own certificate authority and the certificate of its S3 endpoint (`localhost`): pgBackRest's S3
driver speaks only TLS and matches the endpoint's name against the certificate's DNS names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from .context import LabContext
from .state import write_secret

VALID_DAYS = 3650
SERVER_NAMES = ("localhost",)


def certificate_files(context: LabContext) -> tuple[Path, Path, Path]:
    """CA certificate, server certificate (with the CA's after it), server key."""
    folder = context.paths.tls_dir
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


def ensure_certificates(context: LabContext) -> bool:
    """Made once per lab; returns whether they were made now."""
    ca_file, certificate_file, key_file = certificate_files(context)
    if ca_file.exists() and certificate_file.exists() and key_file.exists():
        return False
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC) - timedelta(minutes=5)

    def named(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lifeline lab"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_certificate = (
        x509.CertificateBuilder().subject_name(named("Lifeline lab CA")).issuer_name(named("Lifeline lab CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256()))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_certificate = (
        x509.CertificateBuilder().subject_name(named(SERVER_NAMES[0])).issuer_name(ca_certificate.subject)
        .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in SERVER_NAMES]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_file.parent.mkdir(parents=True, exist_ok=True)
    ca_file.parent.chmod(0o755)
    ca_file.write_bytes(ca_certificate.public_bytes(pem))
    certificate_file.write_bytes(server_certificate.public_bytes(pem) + ca_certificate.public_bytes(pem))
    key_text = server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    write_secret(key_file, key_text, owner=(context.user.uid, context.user.gid))
    return True
