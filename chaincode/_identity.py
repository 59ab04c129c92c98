"""The identity that submitted the transaction, read from the proposal's creator."""

from __future__ import annotations

import functools
import json

from cryptography import x509
from cryptography.x509.oid import NameOID
from fabric_protos.msp import identities_pb2

from fedfabric.chaincode._errors import ChaincodeError

_ROLES = ("admin", "client", "peer", "orderer")
_ATTRIBUTES_OID = x509.ObjectIdentifier("1.2.3.4.5.6.7.8.1")  # Fabric CA attribute extension


class ClientIdentity:
    """The transaction creator: MSP id and X.509 certificate (from ``SerializedIdentity``).

    Raises ``ChaincodeError`` when the creator bytes are not a serialized X.509 identity.

    Example::

        if ctx.client_identity.role != "admin":
            raise ChaincodeError("only an admin may do this", status=403)
    """

    def __init__(self, creator: bytes) -> None:
        identity = identities_pb2.SerializedIdentity()
        try:
            identity.ParseFromString(creator)
            certificate = x509.load_pem_x509_certificate(identity.id_bytes)
        except Exception as exc:
            raise ChaincodeError(f"creator is not a serialized X.509 identity: {exc}") from exc
        self.msp_id: str = identity.mspid
        self.cert_pem: bytes = identity.id_bytes
        self.certificate: x509.Certificate = certificate

    @property
    def id(self) -> str:
        """The certificate subject as an RFC 4514 string, e.g. ``CN=user1,OU=client``."""
        return self.certificate.subject.rfc4514_string()

    @property
    def enrollment_id(self) -> str | None:
        """The enrolment id: the Fabric CA attribute ``hf.EnrollmentID``, else the subject's
        common name; None when the certificate has neither. Certificates of one enrolment
        share it even when other subject fields (``L=``, ``OU=``...) differ."""
        return enrollment_id(self.certificate)

    @property
    def organizational_units(self) -> tuple[str, ...]:
        """The subject's OU values, in certificate order."""
        ous = self.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        return tuple(str(ou.value) for ou in ous)

    @property
    def role(self) -> str | None:
        """The NodeOU role (``admin``, ``client``, ``peer`` or ``orderer``) or None."""
        return next((ou for ou in self.organizational_units if ou in _ROLES), None)

    def attribute(self, name: str) -> str | None:
        """The value of a Fabric CA attribute (``hf.EnrollmentID``, custom attributes) or None."""
        return self._attributes.get(name)

    @functools.cached_property
    def _attributes(self) -> dict[str, str]:
        return _ca_attributes(self.certificate)

    def __repr__(self) -> str:
        return f"ClientIdentity(msp_id={self.msp_id!r}, id={self.id!r})"


def enrollment_id(certificate: x509.Certificate) -> str | None:
    """A certificate's enrolment id (see `ClientIdentity.enrollment_id`)."""
    from_ca = _ca_attributes(certificate).get("hf.EnrollmentID")
    if from_ca:
        return from_ca
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names and names[0].value else None


def _ca_attributes(certificate: x509.Certificate) -> dict[str, str]:
    """The Fabric CA attributes a certificate carries (none without the extension)."""
    try:
        ext = certificate.extensions.get_extension_for_oid(_ATTRIBUTES_OID)
    except x509.ExtensionNotFound:
        return {}
    try:
        attrs = json.loads(ext.value.value).get("attrs", {})  # type: ignore[attr-defined]
    except (ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in attrs.items()}
