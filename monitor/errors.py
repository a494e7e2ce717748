"""Errors that reach users: each names the field at fault and what to do about it.

The CLI prints ``str(error)`` as one line and exits with code 2; the Python API raises them as they are.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from a user: a config field, a CLI flag, a file.

    ``field`` names what is wrong (``num_attention_heads``, ``--seq-len``, ``config.json``) and ``fix`` says
    what to do.
    """

    def __init__(self, field: str, problem: str, fix: str | None = None) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        message = f"{field}: {problem}"
        if fix:
            message += f" — {fix}"
        super().__init__(message)


def validation_problem(error: object) -> tuple[str, str]:
    """(problem, fix) for a pydantic ``ValidationError``: the first failing field and its problem, how many
    others. A check across fields (no field of its own) is told by its message alone: its input is the whole
    object, too long for one line."""
    errors = error.errors() if hasattr(error, "errors") else []
    if not errors:
        return str(error), "fix the input"
    first = errors[0]
    field = ".".join(str(part) for part in first.get("loc", ()))
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    if field:
        problem, fix = f"{field}: {message} (got {first.get('input')!r})", "fix this field"
    else:
        problem, fix = message, "fix the fields it names"
    if len(errors) > 1:
        problem += f" (and {len(errors) - 1} more problem(s))"
    return problem, fix


def describe_validation_error(error: object) -> str:
    """One line for a pydantic ``ValidationError`` (see :func:`validation_problem`)."""
    problem, fix = validation_problem(error)
    return f"{problem} — {fix}"
