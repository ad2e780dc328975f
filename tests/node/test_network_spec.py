"""The constants table of specs/network.md (§1–§3) is what the node uses."""

from __future__ import annotations

import re
from pathlib import Path

from dre.node import blockexchange, dht, gossip
from dre.node.compat import dht_protocol_id

SPEC = Path(__file__).resolve().parents[2] / "specs" / "network.md"

IN_CODE = {
    "gossip_max_message_bytes": gossip.MAX_MESSAGE_BYTES,
    "dht_lookup_timeout_seconds": dht.LOOKUP_TIMEOUT,
    "dht_reprovide_seconds": dht.REPROVIDE_INTERVAL,
    "bitswap_max_inflight": blockexchange.MAX_INFLIGHT,
    "bitswap_max_inflight_per_peer": blockexchange.MAX_INFLIGHT_PER_PEER,
    "bitswap_penalty_limit": blockexchange.PENALTY_LIMIT,
    "bitswap_invalid_block_penalty": blockexchange.INVALID_BLOCK_PENALTY,
    "bitswap_timeout_penalty": blockexchange.TIMEOUT_PENALTY,
}


def test_constants_match_spec() -> None:
    text = SPEC.read_text(encoding="utf-8")
    section = text.split("## Constants (§1–§3)", 1)[1].split("\n## ", 1)[0]
    rows = {k: float(v) for k, v in re.findall(r"^\| ([a-z_]+) \| ([0-9.]+) \|", section, re.M)}
    assert rows == {k: float(v) for k, v in IN_CODE.items()}


def test_names_on_the_wire_match_spec() -> None:
    text = SPEC.read_text(encoding="utf-8")
    assert gossip.topic_name("main", gossip.ANNOUNCE) == "dre/main/announce"
    assert gossip.topic_name("main", gossip.ATTEST) == "dre/main/attest"
    assert dht_protocol_id("main") == "/dre/main/kad/1.0.0"
    assert "`/dre/<network>/kad/1.0.0`" in text
    assert dht.NAME_KEY_PREFIX == b"dre-name-v1\x00"
    assert 'b"dre-name-v1\\x00"' in text
