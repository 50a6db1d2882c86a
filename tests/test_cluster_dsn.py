"""``cluster.postgres_dsn`` (gateway/cluster_settings.py) is no secret: the effective config
shows it as written. So a DSN that carries the server password or the client key's
``sslpassword``, in either libpq form, is refused at load, and the refusal never quotes it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.cluster_settings import ClusterSettings

SECRET = "Zq-dsn-secret-7f3a"
PASSWORD = "give the password as postgres_password, not in postgres_dsn"
SSLPASSWORD = (
    "postgres_dsn holds sslpassword: the DSN is no secret (GET /api/v1/config shows it); give"
    " the replica a client key without a passphrase (sslkey, a file only it can read)"
)


@pytest.mark.parametrize(
    ("dsn", "problem"),
    [
        (f"host=db user=citygw password={SECRET}", PASSWORD),
        (f"postgresql://citygw:{SECRET}@db/citygw", PASSWORD),
        (f"host=db user=citygw sslkey=/run/key.pem sslpassword={SECRET}", SSLPASSWORD),
        (f"postgresql://citygw@db/citygw?sslkey=/run/key.pem&sslpassword={SECRET}", SSLPASSWORD),
        (f"host=db sslpassword='{SECRET} with spaces'", SSLPASSWORD),
    ],
)
def test_a_dsn_holding_a_password_is_refused_without_quoting_it(dsn: str, problem: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ClusterSettings(postgres_dsn=dsn)
    assert [e["msg"] for e in refused.value.errors()] == [f"Value error, {problem}"]
    assert SECRET not in str(refused.value)


def test_a_dsn_without_one_loads_as_written() -> None:
    dsn = "host=db user=citygw dbname=citygw sslmode=verify-full sslkey=/run/key.pem"
    assert ClusterSettings(postgres_dsn=dsn).postgres_dsn == dsn
