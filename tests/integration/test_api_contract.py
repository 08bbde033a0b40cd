"""The published OpenAPI contract holds against a real server, on both engines.

``schemathesis run --checks all`` fuzzes every operation of ``/openapi.json`` (examples,
coverage, fuzzing and stateful phases) against a real ``l2pop server`` process: no 5xx, every
status and body as documented, schema-invalid input refused, schema-valid input accepted
except for the semantic refusals listed in docs/adr/0013-input-contract.md.

Two runs per engine: the agent's operation (``PUT /v1/ports/{id}/status``) with a host's
token, then every other operation with the admin token (that run deletes hosts, the agent's
too, so it comes second).

``L2POP_FUZZ_EXAMPLES`` (default 25 per operation and phase) and ``L2POP_FUZZ_SEED`` (a
number; default fixed, so CI is repeatable; ``random`` for a new one each run) tune it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ADMIN, Api
from l2pop.model import ArpSuppression, Encap
from l2pop.model import validation as v
from l2pop.wire.api import ERROR_CODES

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = int(os.environ.get("L2POP_FUZZ_EXAMPLES", "25"))
SEED = os.environ.get("L2POP_FUZZ_SEED", "20260601")
STATUS_OPERATION = "/v1/ports/{port_id}/status"
#: a wait for a revision: fuzzed with a short ``wait`` (the fuzz agent is never connected,
#: so a wait that includes it runs its whole length: 504, documented, the one 5xx allowed)
WAIT_OPERATION = "/v1/revisions/{revision}"
WAIT_FUZZ_S = "0.05"

# Schema-valid input these operations refuse for reasons no JSON Schema can state: a port
# address of the wrong class (multicast, loopback, ... : spelled in too many ways for a
# pattern), two spellings of one address, a host that is not registered, a VNI that differs
# from the network's, a page marker naming no network. 422, as documented. Every other
# operation must accept all schema-valid input.
SEMANTIC_422 = [
    ("/v1/ports", "POST"),
    ("/v1/ports/{port_id}", "PATCH"),
    ("/v1/networks/{network_id}", "PATCH"),
    ("/v1/networks", "GET"),
]


def config(agent_token: str, agent_port: str) -> str:
    lines = [
        "[auth.openapi.adminToken]",
        f'bearer = "{ADMIN}"',
        "[auth.openapi.agentToken]",
        f'bearer = "{agent_token}"',
        # half of the agent's calls name a port bound to its host, so they reach the use-case
        "[dictionaries.agent-port]",
        f'values = ["{agent_port}"]',
        "[parameters]",
        '"path.port_id" = { dictionary = "agent-port", probability = 0.5 }',
    ]
    for path, method in SEMANTIC_422:
        lines += [
            "[[operations]]",
            f'include-path = "{path}"',
            f'include-method = "{method}"',
            "[operations.checks.positive_data_acceptance]",
            'expected-statuses = ["2xx", "401", "403", "404", "409", "422"]',
        ]
    lines += [
        "[[operations]]",
        f'include-path = "{WAIT_OPERATION}"',
        "[operations.parameters]",
        f'"query.wait" = "{WAIT_FUZZ_S}"',
        "[operations.checks.not_a_server_error]",
        'expected-statuses = ["2xx", "3xx", "4xx", "504"]',
    ]
    return "\n".join(lines) + "\n"


def schemathesis(api: Api, tmp_path: Path, name: str, *selection: str) -> tuple[int, str]:
    """Run the CLI against the server; returns (test cases generated, output)."""
    cfg = tmp_path / "schemathesis.toml"
    if not cfg.exists():
        agent = api.host("fuzz-agent", "192.0.2.250")
        net = api.network(name="fuzz")
        port = api.port(network_id=net["id"], host="fuzz-agent", fixed_ips=["198.19.250.1"])
        cfg.write_text(config(str(agent["token"]), str(port["id"])))
    cmd = [
        str(SCHEMATHESIS),
        "--config-file",
        str(cfg),
        "run",
        f"{api.server.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--no-color",
        *selection,
    ]
    if SEED != "random":
        cmd += ["--seed", SEED]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path
    )
    text = out.stdout + out.stderr
    (tmp_path / f"schemathesis-{name}.txt").write_text(text)
    generated = re.search(r"(\d+) generated", text)
    assert out.returncode == 0, text[-12000:]
    assert generated, text[-4000:]
    return int(generated.group(1)), text


@pytest.mark.timeout(600)
def test_the_server_keeps_its_openapi_contract(api: Api, tmp_path: Path) -> None:
    agent_cases, _ = schemathesis(api, tmp_path, "agent", "--include-path", STATUS_OPERATION)
    admin_cases, _ = schemathesis(api, tmp_path, "admin", "--exclude-path", STATUS_OPERATION)
    print(f"schemathesis: {agent_cases} agent + {admin_cases} admin test cases, 0 failures")
    log = Path(api.server.log_path or "").read_text() if api.server.log_path else ""
    assert "Traceback" not in log, log[-8000:]
    assert agent_cases > 0 and admin_cases > 0


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _field(doc: dict[str, Any], model: str, name: str) -> dict[str, Any]:
    """The non-null branch of a model property's schema."""
    prop = doc["components"]["schemas"][model]["properties"][name]
    branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    assert len(branches) == 1, prop
    return _resolve(doc, branches[0])


def test_the_openapi_document_states_the_real_contract(api: Api) -> None:
    doc = api.http.get("/openapi.json").json()
    text = json.dumps(doc)
    assert "HTTPValidationError" not in text and "ValidationError" not in text
    schemes = doc["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http"}
    assert {s["scheme"] for s in schemes.values()} == {"bearer"}

    error_codes = _field(doc, "ErrorDetail", "code")["enum"]
    assert set(error_codes) == set(ERROR_CODES)
    assert {"too_large", "unavailable", "bad_request", "invalid"} <= set(error_codes)

    for path, operations in doc["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            assert op.get("security"), where
            statuses = set(op["responses"])
            assert {"400", "401", "403", "422", "503"} <= statuses, where
            if "requestBody" in op:
                assert {"413", "408"} <= statuses, where
            if "{" in path:
                assert "404" in statuses, where
            for status, answer in op["responses"].items():
                if status.startswith(("4", "5")):
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody"), where
            for param in op.get("parameters", []):
                schema = param["schema"]
                branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
                assert all(
                    "pattern" in b
                    or "enum" in _resolve(doc, b)
                    or b.get("type") in ("integer", "number")
                    for b in branches
                ), (where, param)

    # the constraints are the model's constants, not copies
    assert _field(doc, "NetworkCreate", "vni") == {
        "type": "integer",
        "minimum": v.VNI_MIN,
        "maximum": v.VNI_MAX,
    }
    name = _field(doc, "NetworkCreate", "name")
    assert (name["maxLength"], name["pattern"]) == (v.NAME_MAX_LENGTH, v.NAME_PATTERN)
    host = _field(doc, "HostCreate", "name")
    assert (host["maxLength"], host["pattern"]) == (v.HOST_NAME_MAX_LENGTH, v.HOST_NAME_PATTERN)
    assert _field(doc, "PortCreate", "host")["pattern"] == v.HOST_NAME_PATTERN
    assert _field(doc, "PortCreate", "mac")["pattern"] == v.MAC_PATTERN
    assert _field(doc, "PortUpdate", "mac")["pattern"] == v.MAC_PATTERN
    assert _field(doc, "PortCreate", "network_id")["pattern"] == v.UUID_PATTERN
    ips = _field(doc, "PortCreate", "fixed_ips")
    assert ips["maxItems"] == v.MAX_FIXED_IPS
    assert ips["items"]["maxLength"] == v.IP_MAX_LENGTH
    assert ips["items"]["pattern"] == v.IP_PATTERN
    vtep = _field(doc, "HostCreate", "vtep_ip")
    assert (vtep["format"], vtep["maxLength"], vtep["pattern"]) == (
        "ipv4",
        v.IPV4_MAX_LENGTH,
        v.VTEP_IP_PATTERN,
    )
    assert _field(doc, "NetworkCreate", "arp_suppression")["enum"] == [
        m.value for m in ArpSuppression
    ]
    assert _field(doc, "NetworkCreate", "encap")["enum"] == [m.value for m in Encap]
    assert _field(doc, "PortStatusReport", "status")["enum"] == ["ACTIVE", "DOWN"]
