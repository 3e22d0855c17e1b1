r"""Failure signatures: what deduplicates failures, and tells one root cause from another.

A signature is `kind:stage[:detail]` (oracles.Outcome.signature). The stage names where the
oracles met the failure, refined by re-runs where a case holds several suspects: the first pass
after which results differ, the schedule command (primitive, or template by name) after which they
first do (oracles._culprit), the graph rule that breaks the graph alone (graph_oracle). The detail
(`_detail`) is the crash's exception type and innermost tessel frame, or the form of a verifier /
interpreter / race message without the names, numbers and dtypes of the case (`message_form`);
diffs, hangs and nondeterminism carry none (their values differ from case to case).

Example:
    >>> _detail("verify", "kernel 'k' failed verification with 1 problem(s):\n  - kernel 'k': loop 'j' has extent 0")
    'loop _ has extent N'
"""

from __future__ import annotations


def _detail(kind: str, message: str) -> str:
    """What tells one root cause from another within a kind and stage: crashes carry
    "Type@file:function" (the innermost tessel frame) as their first line; a verifier, execution
    or race failure the form of its message without the names and numbers of this case (`message_form`);
    a diff, hang or nondeterminism nothing more (their stage names the pass, schedule primitive,
    template or graph rule that the re-runs found first: values differ from case to case)."""
    if kind in ("crash", "died"):
        return message.split("\n", 1)[0]
    if kind in ("verify", "exec", "race"):
        return message_form(message)
    return ""


def message_form(message: str) -> str:
    r"""The form of a verifier / interpreter / race-checker message without this case's names and
    numbers, so that one bug met by different programs gives one signature and two different
    problems two.

    >>> a = message_form("kernel 'fz12': data race on shared buffer 'A_s' element (3, 4): write by thread 5 "
    ...                  "at 'A_s[i] = x' and earlier read by thread 7 at 'A_s[j]': no barrier orders them (seed 9)")
    >>> a == message_form("kernel 'k': data race on shared buffer 'B' element (1,): read by thread 0 at 'B[0]' "
    ...                   "and earlier write by thread 2 at 'B[1] = 0': no barrier orders them (seed 1)")
    True
    >>> a
    'race on shared memory: no barrier orders them'
    >>> message_form("kernel 'f' failed verification with 2 problem(s):\n  - kernel 'f': loop 'i' has extent -1")
    'loop _ has extent N'
    >>> message_form("kernel 'C': two buffers are named 'acc' with different shapes: [4, 8, 2] float16 and [2] float16")
    'two buffers are named _ with different shapes: [N] T and [N] T'
    """
    import re

    m = re.search(r"data race on (\w+) buffer .*: ([^:]+?)(?: \(seed [^)]*\))?$", message.split("\n", 1)[0])
    if m:
        why = re.sub(r"\b(read|write|written|store|load)s?\b", "access", m.group(2))
        return f"race on {m.group(1)} memory: {why}"[:100]
    line = message.strip()
    if "failed verification" in line.split("\n", 1)[0] and "\n  - " in line:
        line = line.split("\n  - ", 1)[1]
    line = line.split("\n", 1)[0]
    line = re.sub(r"^(kernel '[^']*'[^:]*:\s*)+", "", line)
    line = re.sub(r"'[^']*'|\"[^\"]*\"", "_", line)
    line = re.sub(r"-?\b\d+(\.\d+)?(e-?\d+)?\b", "N", line)
    line = re.sub(r"\b(b?float|u?int)(8|16|32|64)\b", "T", line)  # (the dtypes of this case's buffers)
    line = re.sub(r"\((N,? ?)+\)", "(N)", line)
    line = re.sub(r"\[(N,? ?)+\]", "[N]", line)
    return re.sub(r"\s+", " ", line).strip()[:100]


__all__ = ["message_form"]
