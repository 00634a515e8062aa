"""The exception types whose message is meant for the user as it stands."""

# The exit status of a command stopped on request (a signal) after saving its work: re-running the
# same command resumes it. sysexits.h's EX_TEMPFAIL ("try again later"), so that launchers (the
# sweep, a batch system, a shell loop) tell "resume me" from a failure (status 1).
EXIT_STOPPED = 75


class UserError(ValueError):
  """Something the user asked for or supplied is wrong; the message says what and how to fix it.

  The command-line tools print the message alone (no traceback) and exit with `exit_status`.
  """
  exit_status = 1


class Stopped(UserError):
  """The command was stopped by a signal after saving its work; the same command resumes it."""
  exit_status = EXIT_STOPPED
