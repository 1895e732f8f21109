"""A runtime change as one sentence in the operator's words.

`Change` records keep their structured fields (kind, subject, old, new) for the API,
scripts and tests; the events list, the page and a server's "last change" also show
this sentence, so that "failed_over of default false → true" reads "Failed over to
the backup cluster: ...". Pools are named only when the service has more than its
default one.
"""

from __future__ import annotations

from medlb.runtime.events import Change

_STATE_WORDS = {
    "halt": "halted{by} (was {old}): it takes no work at all",
    "drain": "set to drain{by} (was {old}): no new work, open connections go on",
    "online": "back online{by} (was {old})",
}
_TIER_WORDS = {"primary": "the primary servers", "backup": "the backup cluster"}


def describe_change(change: Change, named_pools: bool = False) -> str:
    by = f" by {change.who}" if change.who and change.who != "system" else ""
    if change.kind == "state":
        words = _STATE_WORDS.get(change.new, f"set to {change.new}{{by}} (was {{old}})")
        return f"Server {change.subject} {words.format(by=by, old=change.old)}"
    if change.kind == "health":
        if change.new == "down":
            return f"Server {change.subject} is down: {change.reason or 'its health check failed'}"
        return f"Server {change.subject} is up again" + (f": {change.reason}" if change.reason else "")
    pool = f"Pool {change.subject}: " if named_pools else ""
    if change.kind == "pool":
        if change.new == "none":
            text = "no server can take new work, new clients are refused"
        else:
            text = f"new work goes to {_TIER_WORDS.get(change.new, change.new)}" + (
                " again" if change.new == "primary" and change.old != "none" else "")
        reason = change.reason or (f"failed back{by}" if by else "")
        return _sentence(pool, text + (f": {reason}" if reason else ""))
    if change.kind == "failed_over":
        if change.new == "true":
            return _sentence(pool, "failed over to the backup cluster: no primary server online; it stays there "
                                   "until an operator fails back (failback: manual)")
        if by:
            return _sentence(pool, f"failed back to the primary servers{by}")
        return _sentence(pool, "left the backup cluster: it can no longer serve and a primary can")
    return _sentence(pool, f"{change.kind} of {change.subject}: {change.old} → {change.new}" +
                     (f": {change.reason}" if change.reason else ""))


def _sentence(prefix: str, text: str) -> str:
    return prefix + text if prefix else text[:1].upper() + text[1:]
