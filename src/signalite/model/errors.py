"""Errors as the AWS services name them.

A `ServiceError` carries the wire code (the model's exception shape name), the HTTP status and a
message. Web adapters turn it into a rest-json error (`x-amzn-ErrorType` + JSON body) or a WebSocket
STATUS_RESPONSE; nothing in the core formats wire errors itself.
"""

from __future__ import annotations


class ServiceError(Exception):
    """An error a client is meant to see, named and numbered as AWS would."""

    code: str = "InternalFailure"
    status: int = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.status}, {self.message!r})"


def _error(name: str, status: int) -> type[ServiceError]:
    return type(name, (ServiceError,), {"code": name, "status": status, "__module__": __name__})


# The kinesisvideo model's exception shapes (status from each shape's `error.httpStatusCode`).
AccessDeniedException = _error("AccessDeniedException", 401)
AccountChannelLimitExceededException = _error("AccountChannelLimitExceededException", 400)
AccountStreamLimitExceededException = _error("AccountStreamLimitExceededException", 400)
ClientLimitExceededException = _error("ClientLimitExceededException", 400)
InvalidArgumentException = _error("InvalidArgumentException", 400)
InvalidResourceFormatException = _error("InvalidResourceFormatException", 400)
NoDataRetentionException = _error("NoDataRetentionException", 400)
NotAuthorizedException = _error("NotAuthorizedException", 401)
ResourceInUseException = _error("ResourceInUseException", 400)
ResourceNotFoundException = _error("ResourceNotFoundException", 404)
TagsPerResourceExceededLimitException = _error("TagsPerResourceExceededLimitException", 400)
VersionMismatchException = _error("VersionMismatchException", 400)

# Protocol-level errors that every AWS rest-json service shares (not in the models).
SerializationException = _error("SerializationException", 400)
UnknownOperationException = _error("UnknownOperationException", 404)
RequestEntityTooLargeException = _error("RequestEntityTooLargeException", 413)
NotImplementedException = _error("NotImplementedException", 501)
InternalFailure = _error("InternalFailure", 500)
ServiceUnavailableException = _error("ServiceUnavailableException", 503)
