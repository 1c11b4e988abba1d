"""Who is calling, and may they? The adapter between aiohttp requests and the pure auth core.

Open mode (no `--credentials`): every caller is accepted as `--account-id`; the region comes from
the request's SigV4 scope when it has one. Strict mode: every REST request and every WebSocket
handshake must carry a valid SigV4 signature of a known key (`auth/sigv4.py`), the caller's account
is the key's, and the key's policy (`auth/policy.py`) must allow the action on the resource.
Request-rate quotas (`controlplane/quotas.py`) apply in both modes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy

from signalite.auth.credentials import Identity
from signalite.auth.policy import CONNECT_AS_MASTER, CONNECT_AS_VIEWER, Policy, action_name, evaluate
from signalite.auth.sigv4 import (
    RequestParts,
    accept_presigned,
    accept_request,
    scope_from_request,
    verify_presigned,
    verify_request,
)
from signalite.controlplane.quotas import RequestQuotas
from signalite.model.errors import (
    AccessDeniedException,
    NotAuthorizedException,
    ResourceNotFoundException,
    ServiceError,
)
from signalite.model.service import Operation
from signalite.signaling.hub import Role
from signalite.store.base import ChannelStore


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: whose resources, which region, what it may do."""

    account: str
    region: str
    policy: Policy | None = None
    access_key_id: str | None = None


class HeaderView(Mapping[str, str]):
    """An aiohttp request's headers as SigV4 reads them: lower-case names, repeats joined by ",".

    A view, not a copy: verification reads a handful of headers, so only those are looked at.
    Names asked for must be lower case (the multidict underneath does not care, a dict would).
    The fast paths read the multidict itself (`getall`); this is for the general path.
    """

    __slots__ = ("_headers",)

    def __init__(self, headers: CIMultiDictProxy[str]) -> None:
        self._headers = headers

    def get(self, name: str, default: Any = None) -> Any:
        values = self._headers.getall(name, None)
        if values is None:
            return default
        return values[0] if len(values) == 1 else ",".join(values)

    def __getitem__(self, name: str) -> str:
        value: str | None = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._headers

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name.lower() for name in self._headers))

    def __len__(self) -> int:
        return len({name.lower() for name in self._headers})


def request_parts(request: web.BaseRequest, body: bytes) -> RequestParts:
    """The parts of an aiohttp request that SigV4 signs, exactly as received."""
    # The raw request target, split by hand: exactly the bytes the client signed, and no yarl URL
    # built (and cached on the request) for it.
    path, _, query = request.raw_path.partition("?")
    return RequestParts(request.method, path, query, HeaderView(request.headers), body)


# `Credential=<key>/<yyyymmdd>/<region>/` in an Authorization header: the region, as the SigV4 parser
# (`scope_from_request`) accepts it.
_SCOPE_REGION = re.compile(r"Credential=[^/,\s]+/[0-9]{8}/([A-Za-z0-9-]{1,64})/")

# Callers remembered by `Gatekeeper.authenticate`; past this, the table starts over.
_MAX_CALLERS = 1024

# The member that names the resource an operation acts on, in order of preference.
_ARN_MEMBERS = ("ChannelARN", "ResourceARN", "StreamARN")


class Gatekeeper:
    """Authentication, authorization and request quotas for every surface."""

    def __init__(
        self,
        *,
        identities: Mapping[str, Identity] | None,
        default_account: str,
        default_region: str,
        store: ChannelStore,
        quotas: RequestQuotas,
        clock: Callable[[], float],
    ) -> None:
        self.identities = identities
        self.default_account = default_account
        self.default_region = default_region
        self.store = store
        self.quotas = quotas
        self.clock = clock
        # The identities are fixed at start-up: a plain dict's bound `get` is the cheapest lookup.
        self._credentials = {} if identities is None else {k: i.credential for k, i in identities.items()}
        self._credential_of = self._credentials.get
        # (access key id, region) -> Caller: all of it follows from the key and the scope's region.
        self._callers: dict[tuple[str, str], Caller] = {}

    @property
    def mode(self) -> str:
        return "open" if self.identities is None else "strict"

    # -- REST ------------------------------------------------------------------------------------

    async def authenticate(self, request: web.BaseRequest, body: bytes) -> Caller:
        if self.identities is None:
            # Open mode: only the region is needed, so read it from the credential scope directly
            # instead of assembling every signed part of the request.
            header = request.headers.get("Authorization")
            match = _SCOPE_REGION.search(header) if header else None
            if match is None and header is None and "X-Amz-Credential" in request.query:
                scope = scope_from_request(request_parts(request, body))
                return Caller(self.default_account, scope.region if scope else self.default_region)
            return Caller(self.default_account, match.group(1) if match else self.default_region)
        # The fast path straight from the raw target and the parser's headers (each read once, a
        # repeated one sends the request on); anything it cannot accept is verify_request's to decide.
        path, _, query = request.raw_path.partition("?")
        now = self.clock()
        verified = (
            None
            if query
            else accept_request(request.method, path, request.headers.getall, body, self._credential_of, now)
        )
        if verified is None:
            parts = RequestParts(request.method, path, query, HeaderView(request.headers), body)
            verified = verify_request(parts, self._credential_of, now)
        key = (verified.credential.access_key_id, verified.scope.region)
        caller = self._callers.get(key)
        if caller is None:
            if len(self._callers) >= _MAX_CALLERS:
                self._callers.clear()  # regions are client-chosen: keep the table bounded
            identity = self.identities[key[0]]
            caller = Caller(verified.credential.account_id, key[1], identity.policy, key[0])
            self._callers[key] = caller
        return caller

    async def authorize(self, op: Operation, caller: Caller, params: Mapping[str, Any]) -> None:
        resource, channel_arn = await self._resource(op, caller, params)
        if caller.policy is not None and not evaluate(caller.policy, action_name(op.name), [resource]):
            message = f"User {caller.access_key_id} is not authorized to perform {action_name(op.name)} on {resource}"
            if op.service == "kinesis-video-signaling":
                raise NotAuthorizedException(message)
            raise AccessDeniedException(message)
        self.quotas.check(op.name, caller.account, channel_arn, self.clock())

    async def _resource(self, op: Operation, caller: Caller, params: Mapping[str, Any]) -> tuple[str, str | None]:
        """(the ARN a policy is checked against, the caller's own channel ARN for per-channel quotas).

        The quota key is always the resolved ARN of a channel in the caller's account, so asking by
        name or by ARN spends the same bucket, and nobody can spend another account's.
        """
        own = f"arn:aws:kinesisvideo:{caller.region}:{caller.account}:"
        for member in _ARN_MEMBERS:
            value = params.get(member)
            if isinstance(value, str):
                mine = value.startswith(f"arn:aws:kinesisvideo:{caller.region}:{caller.account}:channel/")
                return value, value if mine else None
        name = params.get("ChannelName")
        if isinstance(name, str):
            pattern = f"{own}channel/{name}/*"
            if caller.policy is None and not self.quotas.has_channel_rate(op.name):
                return pattern, None
            found = await self.store.find_channel(caller.account, caller.region, name)
            return (found.arn, found.arn) if found else (pattern, None)
        name = params.get("StreamName")
        if isinstance(name, str):
            if caller.policy is None:
                return f"{own}stream/{name}/*", None
            stream = await self.store.find_stream(caller.account, caller.region, name)
            return (stream.arn if stream else f"{own}stream/{name}/*"), None
        return "*", None

    # -- WebSocket ---------------------------------------------------------------------------------

    def authorize_connect(self, request: web.BaseRequest, arn: str, role: Role) -> str:
        """Check a ConnectAsMaster/ConnectAsViewer handshake; return the caller's account."""
        if self.identities is None:
            return self.default_account
        path, _, query = request.raw_path.partition("?")
        now = self.clock()
        verified = accept_presigned(request.method, path, query, request.headers.getall, b"", self._credential_of, now)
        try:
            if verified is None:
                parts = RequestParts(request.method, path, query, HeaderView(request.headers), b"")
                verified = verify_presigned(parts, self._credential_of, now)
        except ServiceError as e:
            # Every handshake refusal for credentials is a 403 on the WebSocket (kvs-protocol §5.3),
            # with the same code and message as on REST.
            raise ServiceError(e.message, code=e.code, status=403) from None
        credential = verified.credential
        if not arn.split(":")[4] == credential.account_id:
            raise ResourceNotFoundException("The requested channel is not found or not active.")
        policy = self.identities[credential.access_key_id].policy
        if policy is not None:
            action = action_name(CONNECT_AS_MASTER if role is Role.MASTER else CONNECT_AS_VIEWER)
            if not evaluate(policy, action, [arn]):
                raise ServiceError(
                    f"User {credential.access_key_id} is not authorized to perform {action} on {arn}",
                    code="AccessDeniedException",
                    status=403,
                )
        return credential.account_id
