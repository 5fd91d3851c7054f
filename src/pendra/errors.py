"""The error tree shared by every part of Pendra.

Rules: each boundary translates foreign exceptions into one of these classes at the edge and keeps
the cause (``raise X from exc``). Every class carries the HTTP status it maps to, so the server's
single handler and the worker's error frames agree without a second table. The CLI catches only
``PendraError`` and prints ``Kind: message``.
"""

from __future__ import annotations


class PendraError(Exception):
    """Root of every error Pendra raises on purpose."""

    status: int = 500
    kind: str = "internal_error"
    # OpenAI's error ``param`` (the request field at fault, e.g. ``messages[0].content``) and
    # ``code`` (e.g. ``context_length_exceeded``); None when they do not apply.
    param: str | None = None
    code: str | None = None
    # For a passing condition (busy, a backend restarting, too many attempts): seconds after which
    # trying again may succeed. The HTTP layer turns it into ``Retry-After``; None: no such hint.
    retry_after_s: float | None = None

    def __init__(self, message: str, *, status: int | None = None, param: str | None = None,
                 code: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if param is not None:
            self.param = param
        if code is not None:
            self.code = code
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


# --- configuration and local state -------------------------------------------------------------


class ConfigError(PendraError):
    """A setting is missing or invalid; the message names the key and where it came from."""

    kind = "config_error"


class CannotListen(PendraError):
    """The control plane cannot open its listening socket (port taken, address not local, ...);
    raised before anything is created, and the message names the address."""

    kind = "cannot_listen"


# --- backends (worker side) ---------------------------------------------------------------------


class BackendError(PendraError):
    """Something went wrong talking to an inference backend (Ollama, ...)."""

    status = 502
    kind = "backend_error"


class BackendUnavailable(BackendError):
    """The backend did not answer (connection refused, timeout, closed mid-response).

    ``retry_after_s``, when known, is when the worker will next look for the backend: the honest
    earliest moment a retry can succeed.
    """

    status = 503
    kind = "backend_unavailable"


class BackendTimeout(BackendError):
    """The backend took the request but then sent nothing for longer than a limit allows: no first
    token within the first-token limit, or silence mid-stream past the stall limit."""

    status = 504
    kind = "backend_timeout"


class BackendRejected(BackendError):
    """The backend answered with an error body; ``status`` is the backend's own status."""

    kind = "backend_rejected"


class UnsupportedOperation(BackendError):
    """This backend (or this version of it) cannot do what was asked, e.g. transcription."""

    status = 501
    kind = "unsupported"


class ModelNotFound(BackendError):
    """The model is not installed on the backend (chat to a missing model, delete of a missing one)."""

    status = 404
    kind = "model_not_found"


class InstallFailed(BackendError):
    """A model install (``/api/pull``) ended with an error line or a broken stream."""

    kind = "install_failed"


# --- worker protocol ------------------------------------------------------------------------------


class ProtocolError(PendraError):
    """A peer sent a frame that breaks the /ws/gpu protocol."""

    status = 400
    kind = "protocol_error"


class AuthenticationFailed(PendraError):
    """A worker's signature, key or id was refused."""

    status = 401
    kind = "authentication_failed"


# --- control plane ----------------------------------------------------------------------------------


class InvalidRequest(PendraError):
    """The client's request is malformed or names something impossible."""

    status = 400
    kind = "invalid_request_error"


class Unauthorized(PendraError):
    """Missing, unknown or revoked API key / console session."""

    status = 401
    kind = "authentication_error"


class Forbidden(PendraError):
    status = 403
    kind = "permission_error"


class NotFound(PendraError):
    status = 404
    kind = "not_found_error"


class Conflict(PendraError):
    status = 409
    kind = "conflict_error"


class PayloadTooLarge(PendraError):
    status = 413
    kind = "payload_too_large"


class NoCapacity(PendraError):
    """Every worker serving the model is busy and the bounded wait ran out."""

    status = 503
    kind = "overloaded_error"
    retry_after_s: float | None = 1


class ModelUnavailable(NoCapacity):
    """Every connected worker that served the model has lost the backend serving it (e.g. its
    Ollama is restarting): a passing outage, so 503 with Retry-After rather than 404."""

    kind = "service_unavailable_error"


class WorkerFailed(PendraError):
    """The worker that took the request failed; names it so the client can report it."""

    status = 502
    kind = "worker_error"

    def __init__(self, message: str, *, worker_id: str = "", worker_name: str = "",
                 status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.worker_id = worker_id
        self.worker_name = worker_name


class UpstreamTimeout(PendraError):
    status = 504
    kind = "timeout_error"
