"""One exception root so the CLI and the stages can turn any expected failure into one message."""


class PartError(Exception):
    """An expected failure with a message that names the problem and the fix."""
