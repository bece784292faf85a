"""The one exception type for a user's mistake.

Anything the user can fix (a bad file, key, value or path) raises :class:`BenchxferError` with a
message of one line that names the culprit and what is allowed. The CLI turns it into a non-zero
exit and that one line, without a traceback.
"""


class BenchxferError(Exception):
    """A user's mistake, reported as one clear line."""

    def __init__(self, message: str):
        text = str(message)
        if text.startswith("Caught ") and "\nOriginal Traceback" in text:
            # torch's DataLoader re-raises a worker's exception as the same type, with the worker's traceback in
            # its message: keep the worker's own line (the traceback's last, "benchxfer.errors.X: message")
            text = text.rstrip().splitlines()[-1].split(": ", 1)[-1]
        super().__init__(" ".join(text.split()))


class Absent(BenchxferError):
    """Something a run needs is not on this machine (a dataset root, an init's file in the zoo). The real run
    refuses it like any other mistake; ``sweep --dry-run`` lists it, one line each, and still plans the trials."""


class Absences:
    """What this machine lacks for a run, as a plan meets it: a real run raises each :class:`Absent` at once; a dry
    run (``dry_run``) keeps its line in :attr:`lines` and goes on."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run
        self.lines: list[str] = []

    def add(self, err: Absent) -> None:
        if not self.dry_run:
            raise err
        self.lines.append(str(err))
