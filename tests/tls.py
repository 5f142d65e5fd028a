"""Throwaway certificate authorities for tests that speak TLS (gRPC between services, SMTP, ...).

``make_ca(directory)`` makes a CA; its ``leaf(name)`` certificates are valid for 127.0.0.1 and
localhost and good for both ends of a connection (serverAuth and clientAuth), as a pod's
certificate is in production (deploy/overlays/prod/grpc-tls.yaml). ``local_ca(directory)`` is a
CA with one server certificate and its SSLContext, for a local server. Nothing here is trusted
outside the test that made it.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.common.config import GrpcTls


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class CertificateAuthority:
    directory: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    def leaf(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) files for ``name``, valid for 127.0.0.1 and localhost."""
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_file, key_file = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        return cert_file, key_file

    def tls(self, name: str, client_auth: bool = True) -> GrpcTls:
        cert_file, key_file = self.leaf(name)
        return GrpcTls(cert_file=cert_file, key_file=key_file, ca_file=self.ca_file, client_auth=client_auth)

    def env(self, name: str, client_auth: bool = True) -> dict[str, str]:
        """The CONFIDANT_GRPC_TLS_* settings of a process presenting ``name``'s certificate."""
        tls = self.tls(name, client_auth)
        return {
            "CONFIDANT_GRPC_TLS_CERT_FILE": str(tls.cert_file),
            "CONFIDANT_GRPC_TLS_KEY_FILE": str(tls.key_file),
            "CONFIDANT_GRPC_TLS_CA_FILE": str(tls.ca_file),
            "CONFIDANT_GRPC_TLS_CLIENT_AUTH": "required" if client_auth else "none",
        }


def make_ca(directory: Path, name: str = "Confidant test CA") -> CertificateAuthority:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    ca = CertificateAuthority(directory, key, cert)
    ca.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca


@dataclass(frozen=True)
class LocalCa:
    ca_file: Path  # PEM: give it to the client
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def local_ca(directory: Path) -> LocalCa:
    """A CA and a server certificate for 127.0.0.1 and localhost signed by it."""
    ca = make_ca(directory)
    cert_file, key_file = ca.leaf("localhost")
    return LocalCa(ca.ca_file, cert_file, key_file)
