"""The one exception type users see. Every message names the file, node, op or argument at fault."""


class NnxplainError(Exception):
    """A problem with the user's input (model, method, parameters, data), stated in one line."""


class UnsupportedError(NnxplainError):
    """The model uses something no adapter or rule handles; the message names the node and op."""
