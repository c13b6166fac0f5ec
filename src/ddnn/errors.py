"""The one error type users see: a one-line message that names the problem and what to do."""

import difflib
from collections.abc import Iterable


class DdnnError(Exception):
    """Bad input or an impossible request; the CLI prints it on one line and exits with code 2."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' hint for a misspelt name, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
