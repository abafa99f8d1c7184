"""The two dependency stacks of the desk run, each with the one fault it injects.

PostgreSQL: Patroni with etcd and two nodes in synchronous mode (sardag_testing.patroni);
the fault is losing the primary's host (its Patroni and PostgreSQL SIGKILLed), the stack has
recovered once Patroni reports another node as the running primary, and the lost node is
then started again so that it rejoins as a standby. Redis: one master, one replica, three
sentinels (sardag_testing.sentinel); the fault is the master SIGKILLed, recovered once the
sentinels name another master, and the old one restarted as a replica.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sardag_testing.patroni import Node, PatroniCluster
from sardag_testing.sentinel import SentinelStack


class PostgresFailover:
    """The Patroni cluster behind database-service, and the loss of its primary's host."""

    name = "postgresql"

    def __init__(self, cluster: PatroniCluster) -> None:
        self.cluster = cluster
        self.lost: Node | None = None

    def settings(self) -> dict[str, str]:
        """database-service's URLs: the primary wherever it is, and reads from a standby."""
        return {"DATABASE_URL": self.cluster.url(), "DATABASE_READ_URL": self.cluster.read_url()}

    def inject(self) -> None:
        """SIGKILL the primary's Patroni and PostgreSQL."""
        self.lost = self.cluster.leader()
        assert self.lost is not None, "no primary to fail"
        self.cluster.kill(self.lost)

    def recovered(self) -> bool:
        """Another node is the running primary."""
        leader = self.cluster.leader()
        return leader is not None and leader is not self.lost

    def heal(self) -> None:
        """Start the lost node again: it rejoins as a standby by itself."""
        if self.lost is not None:
            self.cluster.start_node(self.lost)


class RedisFailover:
    """The Sentinel-watched Redis behind both services, and the loss of its master."""

    name = "redis"

    def __init__(self, stack: SentinelStack) -> None:
        self.stack = stack
        self.url = stack.url

    def inject(self) -> None:
        """SIGKILL the master."""
        self.stack.kill_master()

    def recovered(self) -> bool:
        """The sentinels name the replica as the master (the stack then swaps their roles)."""
        if self.stack.master_port() != self.stack.replica.port:
            return False
        self.stack.wait_failover(timeout=1.0)
        return True

    def heal(self) -> None:
        """Restart the old master: the sentinels make it a replica."""
        self.stack.rejoin_old_master()


@contextmanager
def database_stack() -> Iterator[PostgresFailover]:
    """A started Patroni cluster (synchronous mode), stopped afterwards."""
    with PatroniCluster(synchronous_mode=True) as cluster:
        yield PostgresFailover(cluster)


@contextmanager
def redis_stack() -> Iterator[RedisFailover]:
    """A started Sentinel stack, stopped afterwards."""
    with SentinelStack() as stack:
        yield RedisFailover(stack)
