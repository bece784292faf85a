"""The one exception type for a user's mistake.

Anything the user can fix (a bad file, key, value or path) raises :class:`BenchxferError` with a
message of one line that names the culprit and what is allowed. The CLI turns it into a non-zero
exit and that one line, without a traceback.
"""


class BenchxferError(Exception):
    """A user's mistake, reported as one clear line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class Absent(BenchxferError):
    """Something a run needs is not on this machine (a dataset root, an init's file in the zoo). The real run
    refuses it like any other mistake; ``sweep --dry-run`` lists it, one line each, and still plans the trials."""
