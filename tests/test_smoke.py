from tests.conftest import NodeFixture
from tests.support import pk_env, run_pk


def test_bootstrap_then_info_reports_the_same_node_id(fresh_node: NodeFixture) -> None:
    node_id = fresh_node.node.info().node_id
    fresh_node.node.close()
    env = pk_env(fresh_node.path, PK_PASSWORD=fresh_node.password)
    result = run_pk("node", "info", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    assert node_id.encode() in result.stdout
