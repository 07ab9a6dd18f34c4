"""Keys of the selector value maps, packed through the ``abi.h`` layouts (``vg_eq_key``,
``vg_pfx_key``, ``vg_int_key``, ``vg_addr_key``). The policy compilers build every map key
here, so a change of the header changes them all. Pure Python."""

from __future__ import annotations

import ipaddress

from vigil.abi.pack import pack

#: address family numbers the address tries store
_FAMILY = {4: 2, 6: 10}


def eq_key(set_id: int, raw: bytes) -> bytes:
    """A string-equality set member (``len(raw)`` < VG_STR_KEY; ValueError otherwise)."""
    return pack("vg_eq_key", {"set": set_id, "len": len(raw), "s": raw})


def pfx_key(set_id: int, raw: bytes) -> bytes:
    """A prefix-trie member (postfix tries take the string reversed): the trie matches
    the set id (32 bits) and then ``8 * len(raw)`` bits of the string."""
    return pack("vg_pfx_key", {"prefixlen": 32 + 8 * len(raw), "set": set_id, "s": raw})


def sub_key(set_id: int, raw: bytes) -> bytes:
    """A SubString set member (``len(raw)`` < VG_SUB_KEY; ValueError otherwise): the set
    id and the value, NUL-terminated (the kernel searches up to the NUL)."""
    return pack("vg_sub_key", {"set": set_id, "s": raw})


def int_key(set_id: int, value: int) -> bytes:
    """An InMap integer set member (stored as a signed 64-bit value)."""
    return pack("vg_int_key", {"set": set_id, "v": value})


def addr_key(set_id: int, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bytes:
    """An address-trie member: set id and family (64 bits) then the network's prefix."""
    return pack("vg_addr_key", {"prefixlen": 64 + net.prefixlen, "set": set_id,
                                "family": _FAMILY[net.version],
                                "addr": net.network_address.packed})
