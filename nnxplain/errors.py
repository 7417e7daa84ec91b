"""The one exception type users see. Every message names the file, node, op or argument at fault."""


class NnxplainError(Exception):
    """A problem with the user's input (model, method, parameters, data), stated in one line."""


class UnsupportedError(NnxplainError):
    """The model uses something no adapter or rule handles; the message names the node and op."""


class InternalError(NnxplainError):
    """A bug of nnxplain's, not a problem with the input (an emitted graph that does not check, say):
    the command line exits 3 and asks for a report."""


class NnxplainWarning(UserWarning):
    """Something the user should know that does not stop the work (samples with NaN or inf skipped
    while fitting, or explained as NaN)."""
