"""The `kinesis-video-signaling` HTTPS API: GetIceServerConfig and SendAlexaOfferToMaster.

Both are served on the HTTPS endpoint that GetSignalingChannelEndpoint hands out (the same port as
everything else). SendAlexaOfferToMaster joins the channel as a *virtual viewer* named after
`SenderClientId`: the offer travels through the hub exactly like a WebSocket viewer's, and the
master's SDP_ANSWER to that client id comes back to the waiting HTTP request — so the routing rules
(presence, buffering, limits) live in one place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from signalite.config import Settings
from signalite.controlplane.operations import active_channel
from signalite.ice import turn_credentials
from signalite.model.errors import (
    ClientLimitExceededException,
    NotImplementedException,
    ResourceNotFoundException,
    ServiceError,
)
from signalite.model.service import Operation
from signalite.signaling.hub import ChannelRef, ConnectRefused, Role
from signalite.signaling.protocol import MessageType
from signalite.store.base import Channel, ChannelStore
from signalite.web.auth import Caller
from signalite.web.websocket import Connection, SignalingSockets


class SignalingApi:
    """Handler for the kinesis-video-signaling operations."""

    def __init__(
        self,
        store: ChannelStore,
        sockets: SignalingSockets,
        settings: Callable[[], Settings],
        clock: Callable[[], float] = time.time,
        *,
        answer_timeout: float = 5.0,
    ) -> None:
        self.store = store
        self.sockets = sockets
        self.settings = settings  # a callable: SIGHUP may swap TURN settings while running
        self.clock = clock
        self.answer_timeout = answer_timeout

    async def __call__(
        self, request: web.BaseRequest, op: Operation, caller: Caller, params: dict[str, Any]
    ) -> Mapping[str, Any]:
        channel = await self._channel(caller, params["ChannelARN"])
        if op.name == "GetIceServerConfig":
            return self.get_ice_server_config(channel, params)
        if op.name == "SendAlexaOfferToMaster":
            return await self.send_alexa_offer_to_master(channel, params)
        raise NotImplementedException(f"{op.name} is not implemented by signalite.")  # pragma: no cover

    async def _channel(self, caller: Caller, arn: str) -> Channel:
        return await active_channel(self.store, arn, account=caller.account)

    def get_ice_server_config(self, channel: Channel, params: Mapping[str, Any]) -> Mapping[str, Any]:
        s = self.settings()
        if not s.turn_uri or not s.turn_secret:
            return {"IceServerList": []}
        user = params.get("ClientId") or channel.name
        servers = turn_credentials(s.turn_secret, s.turn_uri, s.turn_ttl, self.clock(), user)
        return {"IceServerList": [server.to_json() for server in servers]}

    async def send_alexa_offer_to_master(self, channel: Channel, params: Mapping[str, Any]) -> Mapping[str, Any]:
        sockets = self.sockets
        hub = sockets.hub
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str] = loop.create_future()

        def sink(frame: str) -> None:
            message = orjson.loads(frame)
            if answer.done():
                return
            if message.get("messageType") == MessageType.SDP_ANSWER:
                answer.set_result(message["messagePayload"])
            elif message.get("messageType") == MessageType.STATUS_RESPONSE:
                status = message["statusResponse"]
                answer.set_exception(ServiceError(status.get("description", ""), code=status["errorType"],
                                                  status=int(status.get("statusCode", 400))))  # fmt: skip

        if not (hub.has_master(channel.arn) or await sockets.bus.master_present(channel.arn)):
            raise ResourceNotFoundException("No master is connected to the signaling channel.")
        conn = Connection(sockets.new_id(), Role.VIEWER, params["SenderClientId"], channel.arn, sink=sink)
        sockets.connections[conn.id] = conn
        try:
            try:
                actions = await sockets.join(conn, ChannelRef(channel.arn, channel.message_ttl_seconds))
            except ConnectRefused as e:
                raise ClientLimitExceededException(e.message) from None
            await sockets.perform(actions)
            frame = orjson.dumps({"action": "SDP_OFFER", "messagePayload": params["MessagePayload"],
                                  "correlationId": "alexa"}).decode()  # fmt: skip
            await sockets.perform(hub.receive(conn.id, frame, sockets.monotonic()))
            try:
                payload = await asyncio.wait_for(answer, self.answer_timeout)
            except TimeoutError:
                raise ResourceNotFoundException(
                    f"The master did not answer the offer within {self.answer_timeout:g} seconds."
                ) from None
        finally:
            sockets.forget(conn)
        return {"Answer": payload}
