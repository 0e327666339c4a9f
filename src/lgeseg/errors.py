"""User-facing errors.

Anything the user can fix (a bad file, a bad config value) raises a :class:`UserError` whose message is
one line naming the file, key or value and what is wrong. Command-line entry points print it without a
traceback and exit non-zero; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error caused by input the user controls; its message is shown as-is on one line."""


class DataError(UserError):
    """A dataset folder or file is missing, unreadable or inconsistent."""


class ConfigError(UserError):
    """A configuration key is unknown, of the wrong type or out of range."""


class TrainingError(UserError):
    """Training cannot go on (for example a NaN loss)."""
