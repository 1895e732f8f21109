"""The live model of services, pools and servers. No I/O; changes come as events."""

from medlb.runtime.events import Change, CheckResult, Failback, SetFailedOver, SetState
from medlb.runtime.model import Pool, Runtime, Server, Service

__all__ = ["Change", "CheckResult", "Failback", "Pool", "Runtime", "Server", "Service", "SetFailedOver", "SetState"]
