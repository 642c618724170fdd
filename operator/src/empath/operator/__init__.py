"""Empath's Kubernetes operator: MailServer and MailPlugin custom resources (kopf)."""
