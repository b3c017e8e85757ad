"""Errors skorch-loadfix raises on its own account."""

import pickle


class UntrustedPickleError(pickle.UnpicklingError):
    """A pickled net needs a global that ``weights_only=True`` does not allow.

    A subclass of ``pickle.UnpicklingError`` so that code which already handles
    unreadable pickles handles this one too.
    """
