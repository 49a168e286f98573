"""The replica suite's cluster: three replicas on PostgreSQL, agents behind a balancer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from provisioning.ca import CertificateAuthority
from tests.replicas.cluster import Cluster, cluster


@pytest.fixture
async def three(tmp_path: Path, ca: CertificateAuthority) -> AsyncIterator[Cluster]:
    async with cluster(tmp_path, ca) as built:
        yield built
