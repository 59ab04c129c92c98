"""Fabric's signature-policy language: ``OutOf(n, ...)``, ``AND(...)``, ``OR(...)``, ``'MSP.role'``.

Only parsing and checking (and which organisations' endorsements satisfy a policy, for clients
that name their endorsers) live here; the policy string itself is handed to Fabric unchanged.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from fabric_protos.common import policies_pb2
from fabric_protos.msp import msp_principal_pb2
from fabric_protos.peer import policy_pb2

ROLES = ("member", "admin", "client", "peer", "orderer")  # MSPRole.MSPRoleType order
_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+)|(?P<name>[A-Za-z]+)|'(?P<principal>[^']*)'|(?P<sym>[(),]))"
)
_PRINCIPAL = re.compile(r"^(?P<msp>[A-Za-z0-9.-]+)\.(?P<role>[a-z]+)$")


class PolicyError(ValueError):
    """A policy string is malformed or refers to something that does not exist."""


@dataclass(frozen=True)
class Principal:
    msp_id: str
    role: str


@dataclass(frozen=True)
class OutOf:
    """``n`` of ``rules`` must be satisfied (AND = all, OR = one)."""

    n: int
    rules: tuple[OutOf | Principal, ...]


Rule = OutOf | Principal
"""A parsed policy (`parse_policy`, `from_application_policy`)."""


def parse_policy(text: str) -> OutOf | Principal:
    """Parse a policy string; raise `PolicyError` naming the problem."""
    tokens = _tokenize(text)
    rule, pos = _parse(tokens, 0, text)
    if pos != len(tokens):
        raise PolicyError(f"unexpected {tokens[pos][1]!r} after the end of policy {text!r}")
    return rule


def principals(rule: OutOf | Principal) -> list[Principal]:
    """Every principal in the policy, in order of appearance."""
    if isinstance(rule, Principal):
        return [rule]
    return [p for sub in rule.rules for p in principals(sub)]


def satisfied_by(rule: OutOf | Principal, orgs: Collection[str]) -> bool:
    """Whether one peer endorsement from each of `orgs` (MSP ids) satisfies `rule` (a peer
    counts for its org's ``peer`` and ``member`` principals; each principal is checked on
    its own, so a rule naming one org twice counts that org's one peer twice)."""
    if isinstance(rule, Principal):
        return rule.msp_id in orgs and rule.role in ("peer", "member")
    return sum(satisfied_by(sub, orgs) for sub in rule.rules) >= rule.n


def endorsing_sets(
    policy: str | OutOf | Principal, own: str, msp_ids: Sequence[str]
) -> list[tuple[str, ...]]:
    """The smallest sets of organisations, each `own` first and then others in the order of
    `msp_ids`, whose peers' endorsements satisfy `policy` (a string or a parsed rule), in the
    order to try them (empty when no set holding `own` does)."""
    rule = parse_policy(policy) if isinstance(policy, str) else policy
    others = [m for m in msp_ids if m != own]
    for size in range(len(others) + 1):
        found = [
            (own, *combo)
            for combo in itertools.combinations(others, size)
            if satisfied_by(rule, {own, *combo})
        ]
        if found:
            return found
    return []


def from_application_policy(data: bytes) -> OutOf | Principal | None:
    """The signature policy in a chaincode definition's ``validation_parameter`` (a
    ``peer.ApplicationPolicy``), as `parse_policy` would give it; None when the definition
    refers to a channel policy instead. Raises `PolicyError` for bytes that are not one."""
    try:
        policy = policy_pb2.ApplicationPolicy.FromString(data)
    except Exception as exc:  # protobuf's DecodeError
        raise PolicyError(f"not a chaincode endorsement policy: {exc}") from exc
    if policy.WhichOneof("Type") != "signature_policy":
        return None
    envelope = policy.signature_policy
    who = []
    for identity in envelope.identities:
        if identity.principal_classification != msp_principal_pb2.MSPPrincipal.ROLE:
            raise PolicyError("a chaincode endorsement policy names a principal by other than role")
        role = msp_principal_pb2.MSPRole.FromString(identity.principal)
        who.append(Principal(role.msp_identifier, ROLES[role.role]))  # ROLES: enum order

    def rule(sig: policies_pb2.SignaturePolicy) -> OutOf | Principal:
        if sig.WhichOneof("Type") == "signed_by":
            return who[sig.signed_by]
        return OutOf(sig.n_out_of.n, tuple(rule(r) for r in sig.n_out_of.rules))

    return rule(envelope.rule)


def majority_policy(msp_ids: list[str], role: str = "peer") -> str:
    """``OutOf(n//2 + 1, ...)`` over the given organisations."""
    members = ", ".join(f"'{m}.{role}'" for m in msp_ids)
    return f"OutOf({len(msp_ids) // 2 + 1}, {members})"


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise PolicyError(f"cannot read policy {text!r} at position {pos}")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


def _expect(tokens: list[tuple[str, str]], pos: int, symbol: str, text: str) -> int:
    if pos >= len(tokens) or tokens[pos] != ("sym", symbol):
        raise PolicyError(f"expected {symbol!r} in policy {text!r}")
    return pos + 1


def _parse(tokens: list[tuple[str, str]], pos: int, text: str) -> tuple[OutOf | Principal, int]:
    if pos >= len(tokens):
        raise PolicyError(f"policy {text!r} ends too early")
    kind, value = tokens[pos]
    if kind == "principal":
        m = _PRINCIPAL.match(value)
        if not m or m["role"] not in ROLES:
            raise PolicyError(f"principal {value!r} must be 'MSPID.role' with role in {ROLES}")
        return Principal(m["msp"], m["role"]), pos + 1
    if kind != "name" or value.lower() not in ("outof", "and", "or"):
        raise PolicyError(f"unexpected {value!r} in policy {text!r}")
    op = value.lower()
    pos = _expect(tokens, pos + 1, "(", text)
    n = None
    if op == "outof":
        if pos >= len(tokens) or tokens[pos][0] != "num":
            raise PolicyError(f"OutOf needs a number first in policy {text!r}")
        n = int(tokens[pos][1])
        pos = _expect(tokens, pos + 1, ",", text)
    rules = []
    while True:
        rule, pos = _parse(tokens, pos, text)
        rules.append(rule)
        if pos < len(tokens) and tokens[pos] == ("sym", ","):
            pos += 1
            continue
        pos = _expect(tokens, pos, ")", text)
        break
    if op == "and":
        n = len(rules)
    elif op == "or":
        n = 1
    assert n is not None
    if not 1 <= n <= len(rules):
        raise PolicyError(f"OutOf({n}, ...) needs 1 <= n <= {len(rules)} rules in policy {text!r}")
    return OutOf(n, tuple(rules)), pos
