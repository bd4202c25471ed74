"""
The one error a parse function raises to refuse its input, and the one a
runner fails with when the parse function crashed on it.  They live in a
module of their own that imports nothing, so the parser process can load
them without Twisted.
"""

from __future__ import annotations


class ConfigError(Exception):
    """
    A config file could not be used.  The text names the file and the reason
    (with line and column for YAML syntax errors) and is meant for people.
    """


class ParseCrashed(Exception):
    """
    The parse function raised something other than L{ConfigError}, could
    not be imported in the parser process, or returned a value that cannot
    be sent back; the text is one line.  Asking again with the same input
    gives the same answer, so the live service takes it as a refusal of
    that input, not as a failure of its own to retry.
    """
