"""One exception root so the CLI and the stages can turn any expected failure into one message."""


class PartError(Exception):
    """An expected failure with a message that names the problem and the fix.

    The message is kept to one line: a library's multi-line text quoted inside it (a YAML parser's
    pointer, torch's list of mismatched tensors) would otherwise split the one message a person
    reads, and a log line, in pieces.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))
