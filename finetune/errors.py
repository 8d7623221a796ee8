"""One error type for mistakes the user can fix, and the one place that prints it.

Code deep down raises `UserError("what is wrong; how to fix it")`. The CLI catches it at the top and prints
exactly one line, `error: ...`, then exits with code 2. No traceback: the message is the whole story.
"""

import argparse
import sys
from contextlib import contextmanager

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input or environment, with a message that names the fix."""


@contextmanager
def user_errors_exit():
    """Turn a UserError into one line on stderr and exit code 2 (used by every command's entry point)."""
    try:
        yield
    except UserError as err:
        message = " ".join(str(err).split())  # one line, whatever the message held
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


class CommandParser(argparse.ArgumentParser):
    """argparse for the commands, with its mistakes (a missing argument, a bad value) as UserErrors.

    argparse's own handling prints the whole usage and exits; here a mistake is one line like any other.
    """

    def error(self, message):
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")
