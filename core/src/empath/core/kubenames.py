"""The names a MailServer's objects have in Kubernetes, where more than one part relies on them.

The operator creates the control Service and the token Secret under these names; `kubectl
empath` finds them by the same names. One definition, so the two cannot drift apart.
"""

from __future__ import annotations

# The control Service's port, by name: the API server's service proxy addresses it so.
CONTROL_PORT_NAME = "http"
# The key of the control token Secret that holds the token.
CONTROL_TOKEN_KEY = "token"


def control_service(mailserver: str) -> str:
    """The Service in front of a MailServer's control pods."""
    return f"{mailserver}-control"


def control_token_secret(mailserver: str) -> str:
    """The Secret holding a MailServer's control token (made once by the operator)."""
    return f"{mailserver}-control-token"


def event_keys_secret(mailserver: str) -> str:
    """The Secret holding a MailServer's event keys (`empath.core.signing`; made once by the
    operator, never rewritten: rotating them is editing it)."""
    return f"{mailserver}-event-keys"
