"""The one exception type the command line turns into a clean message."""


class UserError(Exception):
    """Bad input from the user: a wrong name, path or option.

    The message names the problem and the fix in one line. The command line
    prints it without a traceback and exits with a non-zero status.
    """
