"""The one error type that reaches users as a single line and exit code 2."""


class UserError(Exception):
    """Bad input from the user (config, data, paths). The CLI prints it and exits 2.

    Several problems may be joined with newlines; each line is printed as one `key: problem`.
    """
