"""Expected failures. Each carries one line that tells the user what to fix.

The CLI maps these to exit codes in one place (`kbench.cli.main`); library code raises them and
never prints or exits.
"""


class KbenchError(Exception):
    """An expected failure; the message is shown to the user as one line."""

    exit_code = 1


class ConfigError(KbenchError):
    """Bad user input: a grid file, an option, a name that does not exist."""

    exit_code = 2


class UnreadableImage(ConfigError):
    """An image that does not decode: bad input (no retry mends it), named so it can be fixed
    (`unreadable`). One message, as every error here: a DataLoader worker's error is raised
    again in the trainer from its type and text alone."""


def unreadable(what: str, error: BaseException) -> UnreadableImage:
    return UnreadableImage(f"{what}: not an image kbench can read ({error}): remove or fix it")


class StoreError(KbenchError):
    """Storage cannot be reached, or holds nothing where something was expected."""


class StoreUnavailable(StoreError):
    """A failure that may pass: the endpoint refuses or drops connections, times out, answers
    5xx or asks to slow down."""


class BackendError(KbenchError):
    """A backend cannot run or reach what it was asked to."""


class PairsUnsuccessful(KbenchError):
    """The command worked, but a pair failed, was cancelled or is gone: scripts that wait on
    a run tell this apart from a command that could not do its work."""

    exit_code = 3


# A training job that stops on an expected error prints one line starting with this and exits
# with 2, so whoever launched it (the local backend, a pod's log) can show the reason.
JOB_ERROR_PREFIX = "kbench.jobs.train: error:"
JOB_ERROR_EXIT_CODE = 2
# A process of a multi-node pair whose peer went away (preempted, its node lost) while it was
# fine itself: its pod is replaced without spending a restart (the gang Job's podFailurePolicy);
# the peer's own failure decides whether the gang's restart counts.
PEER_LOST_EXIT_CODE = 3
PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, as a process killed by it: stopped, resumes later
