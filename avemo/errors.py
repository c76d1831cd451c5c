"""The one base of every error a user can act on: a setting, an input file, a missing model or output.

Its message says what is wrong and what to do; the command line prints it and exits with 1, without a
traceback. Errors that mean a bug in avemo are not AvemoErrors, so they keep their traceback.
"""

from __future__ import annotations


class AvemoError(ValueError):
    """Something the user can fix; the message names it and the way out."""
