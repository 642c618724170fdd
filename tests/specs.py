"""MailServer resources as a user writes them, for the operator and chart tests."""

from __future__ import annotations

from typing import Any


def mailserver(name: str = "corp", *, namespace: str = "mail", **spec: Any) -> dict[str, Any]:
    """A MailServer with what every one needs (hostname, NATS, object store) and `spec`;
    the `uid` is what the API server would have given it."""
    return {
        "apiVersion": "empath.io/v1alpha1",
        "kind": "MailServer",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": {
            "hostname": "mx.example.com",
            "nats": {"url": "nats://nats.mail.svc:4222"},
            "objectStore": {"endpoint": "http://s3.mail.svc:8333", "credentialsSecret": "s3"},
            **spec,
        },
    }
