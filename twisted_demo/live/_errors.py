"""
The one error a parse function raises to refuse its input.  It lives in a
module of its own that imports nothing, so the parser process can load it
without Twisted.
"""

from __future__ import annotations


class ConfigError(Exception):
    """
    A config file could not be used.  The text names the file and the reason
    (with line and column for YAML syntax errors) and is meant for people.
    """
