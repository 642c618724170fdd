"""Plugins that ship with Empath, each an ordinary in-process plugin (`plugins.factory`) that
a declaration in `EMPATH_PLUGINS` enables by its entry point name: `dkim`, `spf`."""

__all__ = ["dkim_signing", "spf_check"]
