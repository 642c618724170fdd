"""The one exception hierarchy of Empath.

Mail cares about one split above all: is a failure temporary (try again later) or permanent
(give up and tell the sender)? That split is a property of the exception type, mapped once: to
4xx/5xx replies in ingress, to redeliver-later/terminate acknowledgements in the consumers
(`bus.consume`), to HTTP statuses in the spool's query API. Every exception Empath raises is
one of these, or derives from one (the services' own are named by module)::

    EmpathError
    ├── TemporaryError                  retry later: SMTP 4xx, JetStream nak, HTTP 503
    │   ├── StoreUnavailable
    │   ├── BusUnavailable
    │   ├── NewerEvent
    │   ├── delivery.client.SessionLost
    │   ├── delivery.limits.LimitsUnavailable
    │   ├── delivery.resolver.DeliveryDeferred      (also a delivery.resolver.DeliveryError)
    │   ├── ingress.transports.PluginError      (its plugin's failurePolicy decides the reply)
    │   └── operator.kube.ApiError
    └── PermanentError                  give up: SMTP 5xx, JetStream term
        ├── ConfigurationError
        │   └── operator.configmap.InvalidSpec
        ├── BadEvent
        ├── NotFound                    HTTP 404
        ├── Conflict                    HTTP 409
        ├── ingress.syntax.SyntaxProblem
        ├── core.queries.BadQuery       HTTP 400
        └── delivery.resolver.DeliveryFailed        (also a delivery.resolver.DeliveryError)

`delivery.resolver.DeliveryError` carries the SMTP reply its recipients get; only its two
subclasses above can be raised (the base refuses to be made). In the query API any other
permanent error is answered 400 (retrying cannot help), and anything that is no `EmpathError`
at all (a bug, a stored record that does not load) is logged with its traceback and answered
503. Library exceptions (minio, nats, dnspython, sockets) are wrapped into these where they
enter, with `raise ... from`. Two exceptions stand outside the tree on purpose, as they are
answers rather than failures: control's `calls.Problem` (the HTTP status and reason of a call
it refuses) and `transport.Failed` (the line and exit code of an `empathctl` command).
"""

from __future__ import annotations


class EmpathError(Exception):
    """Base of every error raised by Empath code."""

    temporary: bool = False
    # The message the error is about, when known (a consumer's handler sets it), for the log.
    queue_id: str | None = None


class TemporaryError(EmpathError):
    """A failure that may go away by itself: retry later (SMTP 4xx, NATS nak)."""

    temporary = True


class PermanentError(EmpathError):
    """A failure that will not go away by retrying (SMTP 5xx, NATS term)."""

    temporary = False


class ConfigurationError(PermanentError):
    """A setting is wrong; the service must not start. The message names the setting."""


class StoreUnavailable(TemporaryError):
    """The object store could not be reached or refused the operation."""


class BusUnavailable(TemporaryError):
    """NATS JetStream could not be reached or did not acknowledge in time."""


class BadEvent(PermanentError):
    """An event that does not decode, or of a kind, or an older version, this service does not
    read."""


class NotFound(PermanentError):
    """The thing asked for does not exist."""


class NewerEvent(TemporaryError):
    """An event of a newer version than this service reads: a newer peer is rolling out, and
    this service will read it once it is upgraded too, so the event waits (nak with a delay)."""


class Conflict(PermanentError):
    """The message is not in a state for what was asked (hold a delivered message, retry one
    in flight), or the request names what the message does not have."""
