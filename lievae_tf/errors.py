"""The one exception type whose message is meant for the user as it stands."""


class UserError(ValueError):
  """Something the user asked for or supplied is wrong; the message says what and how to fix it.

  The command-line tools print the message alone (no traceback) and exit with status 1.
  """
