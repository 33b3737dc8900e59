"""The error type that the CLI turns into a one-line message instead of a traceback."""

from __future__ import annotations

import re


class MipnetError(Exception):
    """A user-facing failure: bad input file, missing weights, mismatched checkpoint."""


def os_error_message(exc: OSError) -> str:
    """'PATH: reason' for a failed file operation (both paths for a rename)."""
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return reason
    if exc.filename2 is not None:
        return f"{exc.filename} -> {exc.filename2}: {reason}"
    return f"{exc.filename}: {reason}"


def torch_load_message(exc: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, without torch's advice to load it
    unrestricted (which would run whatever code the file carries)."""
    text = str(exc).strip()
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            return (f"refused: not a plain tensor checkpoint (unpickling it would call "
                    f"{found.group(1)}, which could run any code); only weights are read")
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        return ("cannot read as a PyTorch checkpoint ("
                f"{detail.group(1).strip() if detail else 'not a tensor pickle'})")
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"cannot read as a PyTorch checkpoint ({first})"
