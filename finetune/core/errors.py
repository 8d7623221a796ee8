"""One error type for mistakes the user can fix, and the one place that prints it.

Code deep down raises `UserError("what is wrong; how to fix it")`. The CLI catches it at the top and prints
exactly one line, `error: ...`, then exits with code 2. No traceback: the message is the whole story.
"""

import argparse
import re
import sys
from contextlib import contextmanager

from finetune.core.secrets import value_pattern

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input or environment, with a message that names the fix."""


class LossDiverged(UserError):
    """The training loss became NaN or infinite (finetune.core.engine). Its own type because callers branch on it:
    a hyperparameter search counts such a trial as failed and goes on, while any other UserError stops it."""


# Strings shaped like credentials: Hugging Face, GitHub, OpenAI-style and AWS keys, Slack tokens, JWTs, and the
# value of anything written token=..., password: ..., ... They are replaced before any message is printed, so a
# value typed in the wrong place never reaches a terminal or a CI log.
SECRET_SHAPES = re.compile(
    r"\bhf_[A-Za-z0-9]{8,}|\bapi_org_[A-Za-z0-9]{8,}|\bgh[pousr]_[A-Za-z0-9]{16,}|\bgithub_pat_[A-Za-z0-9_]{16,}"
    r"|\bsk-[A-Za-z0-9_-]{16,}|\bAKIA[0-9A-Z]{16}\b|\bxox[abprs]-[A-Za-z0-9-]{10,}"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
)
SECRET_VALUES = re.compile(rf"(?i)((?:{value_pattern()})['\"]?\s*[=:]\s*['\"]?)(?!\[redacted)[^\s,;'\"\])]{{4,}}")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with every credential-shaped substring replaced by [redacted]."""
    return SECRET_VALUES.sub(lambda m: m.group(1) + REDACTED, SECRET_SHAPES.sub(REDACTED, str(text)))


@contextmanager
def user_errors_exit():
    """Turn a UserError into one line on stderr and exit code 2 (used by every command's entry point)."""
    try:
        yield
    except UserError as err:
        message = redact(" ".join(str(err).split()))  # one line, whatever the message held; no secrets
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


class CommandParser(argparse.ArgumentParser):
    """argparse for the commands, with its mistakes (a missing argument, a bad value) as UserErrors.

    argparse's own handling prints the whole usage and exits; here a mistake is one line like any other.
    """

    def error(self, message):
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")
