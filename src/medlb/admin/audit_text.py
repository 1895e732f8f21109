"""An audit entry as one sentence, for the page's and `medlb ctl audit`'s DETAIL column.

The store keeps each entry's detail as JSON and the API answers it as it is; this
sentence is made when entries are read, so entries written before it have one too.
An action this module does not know reads as its name, target and detail.
"""

from __future__ import annotations

import datetime
from typing import Any

_STATE = {"halt": "Halted {what}", "drain": "Set {what} to drain", "online": "Set {what} online"}


def describe_entry(entry: dict[str, Any]) -> str:
    action, target = entry["action"], entry["target"]
    detail: dict[str, Any] = entry.get("detail") or {}
    if action == "set_state":
        service, _, server = target.partition("/")
        text = _STATE.get(detail.get("to", ""), "Set {what} to " + str(detail.get("to")))
        was = f" (was {detail['from']})" if detail.get("from") else ""
        return text.format(what=f"server {server} of {service}") + was
    if action == "set_pool_state":
        service, pool, tier = (target.split("/") + ["", ""])[:3]
        servers = detail.get("servers") or {}
        what = f"the {tier} servers of " + (service if pool == "default" else f"pool {pool} of {service}")
        text = _STATE.get(detail.get("to", ""), "Set {what} to " + str(detail.get("to"))).format(what=what)
        return text + (f" ({', '.join(servers)})" if servers else "")
    if action == "failback":
        service, _, pool = target.partition("/")
        kept = "".join(f"; pool {name} stays on its backup: {why}"
                       for name, why in (detail.get("not_failed_back") or {}).items())
        return f"Failed {service if not pool else f'pool {pool} of {service}'} back to the primary servers{kept}"
    if action == "reload":
        return _reload(target, detail)
    if action == "login":
        return f"Logged in to the web page as {detail.get('role', 'a user')}"
    if action == "logout":
        return "Logged out of the web page"
    if action == "login_failed":
        return "Failed login to the web page (wrong user name or password)"
    if action == "login_locked":
        return "Login to the web page refused: locked out after too many failed logins"
    if action == "unlock":
        lifted = detail.get("lifted") or []
        return "Lifted the login lock-out of " + (", ".join(lifted) if lifted else target)
    if action in ("ha_release", "ha_takeover"):
        what = "Released the VIPs to the peer" if action == "ha_release" else "Took the VIPs over"
        return f"{what} on node {target} (it was {detail.get('role', 'unknown')})"
    if action == "ha_split_brain":
        return _split_brain(target, detail)
    details = ", ".join(f"{key} {value}" for key, value in sorted(detail.items()))
    return f"{action} {target}" + (f": {details}" if details else "")


def _split_brain(target: str, detail: dict[str, Any]) -> str:
    start = datetime.datetime.fromtimestamp(float(detail.get("start") or 0), datetime.timezone.utc)
    kept = "kept the VIPs" if detail.get("kept_vips") else "gave them up"
    at_most = "" if detail.get("start_known") else " at most"
    return (f"Split brain: both nodes active for{at_most} {float(detail.get('duration') or 0):.1f} s from "
            f"{start:%Y-%m-%d %H:%M:%S} UTC; node {target} {kept}"
            + (" (as the peer saw it)" if detail.get("told_by_peer") else ""))


def _reload(target: str, detail: dict[str, Any]) -> str:
    if detail.get("result") == "ok":
        services = detail.get("services") or []
        text = f"Reloaded {target}: {len(services)} service(s): {', '.join(services)}"
        if detail.get("workers_not_answered"):
            text += "; not yet confirmed by worker " + ", ".join(str(w) for w in detail["workers_not_answered"])
        return text
    problems = detail.get("problems") or []
    first = f": {problems[0]}" if problems else ""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"Refused to reload {target}; the running config stays{first}{more}"
