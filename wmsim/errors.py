"""The one exception type the command line turns into a clean message."""


class UserError(Exception):
    """Bad input from the user: a wrong name, path or option.

    The message names the problem and the fix in one line. The command line
    prints it without a traceback and exits with a non-zero status.
    """


EXTRAS = {
    "torch": "train",
    "onnx": "train",
    "onnxscript": "train",
    "tensorboardX": "train",
    "ale_py": "atari",
    "cv2": "atari",
    "PIL": "atari",
    "aiohttp": "play",
}
"""Modules outside the base install, by the extra that installs them."""


def missing_extra(error: ImportError, what: str = "this") -> str | None:
    """One line naming the extra to install for a missing module, or None if it is not ours.

    The base install serves dream envs and remote clients; collecting, training,
    exporting and the agent need ``wmsim[train]``, the real game ``wmsim[atari]``.
    """
    module = (getattr(error, "name", None) or "").partition(".")[0]
    if module not in EXTRAS:
        return None
    extra = EXTRAS[module]
    return (
        f"{what} needs {module}, which the base install leaves out: pip install 'wmsim[{extra}]' "
        f"(from a clone: pip install -e '.[cpu,{extra}]')"
    )
