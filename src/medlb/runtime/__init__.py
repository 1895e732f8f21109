"""The live model of services, pools and servers. No I/O; changes come as events."""

from medlb.runtime.events import Change, CheckResult, Failback, SetFailedOver, SetState
from medlb.runtime.model import Conflict, NotFound, Pool, Runtime, Server, Service, Snapshot

__all__ = ["Change", "CheckResult", "Conflict", "Failback", "NotFound", "Pool", "Runtime", "Server", "Service",
           "SetFailedOver", "SetState", "Snapshot"]
