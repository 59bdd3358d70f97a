"""Domain errors. Every message is one line: what was wrong, the bad value, and the fix.

Surfaces translate these: the CLI prints ``error: <message>`` on stderr and exits 2; the
HTTP server answers 4xx with a JSON body. Nothing else in the package prints errors.
"""

from __future__ import annotations


class AigcError(Exception):
    """Base of every error a user can cause. The message alone must be enough to act on."""


class InvalidInput(AigcError, ValueError):
    """A bad argument, option or input file (missing, empty, undecodable, wrong column...)."""


class NotFound(AigcError, LookupError):
    """An unknown dataset, run, family or preset."""


class AlreadyExists(AigcError):
    """A name that is taken; the message says which flag replaces it."""


class Overloaded(AigcError):
    """The server's queue is full or its memory cap is reached; try again after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(AigcError, TimeoutError):
    """A request ran past its deadline before it finished (or before it started)."""


class Unauthorized(AigcError):
    """A missing, unknown or revoked API key."""


class EngineUnavailable(AigcError):
    """The engine cannot take requests: its process died or the server is shutting down.

    Our fault, not the caller's: the HTTP server answers 503 without ``Retry-After`` (a client
    told to retry would retry forever against a dead engine); ``/health`` says 503 too."""


class ContentBlocked(InvalidInput):
    """A prompt the workspace's safety policy blocks (the input rail). HTTP 400 with code
    ``content_filter``; ``categories`` names what it matched."""

    def __init__(self, message: str, categories: list[str] | None = None):
        super().__init__(message)
        self.categories = list(categories or [])

    def __reduce__(self):  # across the engine process's pipe, categories included
        return (type(self), (str(self), self.categories))


class ArtifactStoreError(AigcError):
    """The artifact store (``$AIGC_ARTIFACTS``) failed: a bucket that does not exist, an endpoint
    that does not answer, missing or refused credentials, a stored copy that fails its checksums.
    A fault of the deployment, not of the request: the HTTP server may answer it with 503."""
