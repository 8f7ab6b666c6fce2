"""shmex.schema: the exact byte layout of every record, pinned.

A failure here means a layout changed. That is a deliberate, versioned act: bump
SCHEMA_VERSION (old WAL segments, snapshots and segments then refuse to attach by digest),
then update the pins below in the same change.
"""

from __future__ import annotations

import numpy as np
import pytest

from shmex import schema

COMMAND_DESCR = [
    ("kind", "|u1"), ("side", "|u1"), ("order_type", "|u1"), ("tif", "|u1"), ("stp", "|u1"),
    ("verdict", "|u1"), ("producer", "<u2"), ("symbol", "<u4"), ("account", "<u4"),
    ("client_id", "<u8"), ("price", "<i4"), ("qty", "<i4"), ("pseq", "<u8"),
    ("sent_ns", "<i8"), ("seq", "<i8"), ("engine_ns", "<i8"),
]
COMMAND_OFFSETS = {
    "kind": 0, "side": 1, "order_type": 2, "tif": 3, "stp": 4, "verdict": 5, "producer": 6, "symbol": 8,
    "account": 12, "client_id": 16, "price": 24, "qty": 28, "pseq": 32, "sent_ns": 40,
    "seq": 48, "engine_ns": 56,
}

REPORT_DESCR = [
    ("kind", "|u1"), ("reason", "|u1"), ("side", "|u1"), ("liquidity", "|u1"),
    ("producer", "<u2"), ("contra_producer", "<u2"), ("symbol", "<u4"), ("price", "<i4"),
    ("qty", "<i4"), ("leaves", "<i4"), ("client_id", "<u8"), ("contra_client_id", "<u8"),
    ("cmd_seq", "<i8"), ("pseq", "<u8"), ("sent_ns", "<i8"),
]
REPORT_OFFSETS = {
    "kind": 0, "reason": 1, "side": 2, "liquidity": 3, "producer": 4, "contra_producer": 6,
    "symbol": 8, "price": 12, "qty": 16, "leaves": 20, "client_id": 24,
    "contra_client_id": 32, "cmd_seq": 40, "pseq": 48, "sent_ns": 56,
}

# View types (what Matcher.resting() / depth() return): packed, never on the wire or on disk.
RESTING_DESCR = [("symbol", "<u4"), ("side", "|u1"), ("price", "<i4"), ("producer", "<u2"),
                 ("client_id", "<u8"), ("leaves", "<i4"), ("account", "<u4")]
RESTING_OFFSETS = {"symbol": 0, "side": 4, "price": 5, "producer": 9, "client_id": 11,
                   "leaves": 19, "account": 23}
LEVEL_DESCR = [("price", "<i4"), ("qty", "<i8"), ("orders", "<i4")]
LEVEL_OFFSETS = {"price": 0, "qty": 4, "orders": 12}

# name: (descr, offsets, itemsize, dtype_digest hex)
PINNED = {
    "COMMAND": (COMMAND_DESCR, COMMAND_OFFSETS, 64, "cb776816461ebd0fb93709f595b71255"),
    "REPORT": (REPORT_DESCR, REPORT_OFFSETS, 64, "65b202e165fab4ccd9f4cb8207ca3d82"),
    "RESTING": (RESTING_DESCR, RESTING_OFFSETS, 27, "aad960e3a55dbef42b8a3f72375fb981"),
    "LEVEL": (LEVEL_DESCR, LEVEL_OFFSETS, 16, "4f981bba3bd74d0952c1e5f60a2dc29a"),
}
RECORDS = ("COMMAND", "REPORT")   # the wire/disk records: one cache line each


def test_schema_version():
    assert schema.SCHEMA_VERSION == 2
    assert schema.RECORD_BYTES == 64


def test_every_dtype_in_the_module_is_pinned():
    found = {n for n, v in vars(schema).items() if isinstance(v, np.dtype) and not n.startswith("_")}
    assert found == set(PINNED)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_descr_is_pinned(name):
    assert getattr(schema, name).descr == PINNED[name][0]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_field_offsets_are_pinned(name):
    dt = getattr(schema, name)
    assert {f: off for f, (_, off) in dt.fields.items()} == PINNED[name][1]
    assert list(dt.names) == list(PINNED[name][1])   # field order too


@pytest.mark.parametrize("name", sorted(PINNED))
def test_itemsize_is_pinned(name):
    assert getattr(schema, name).itemsize == PINNED[name][2]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_digest_is_pinned(name):
    digest = schema.dtype_digest(getattr(schema, name))
    assert len(digest) == 16
    assert digest.hex() == PINNED[name][3]


@pytest.mark.parametrize("name", RECORDS)
def test_records_are_one_cache_line_little_endian(name):
    dt = getattr(schema, name)
    assert dt.itemsize == schema.RECORD_BYTES == 64
    for field, (ft, off) in dt.fields.items():
        assert ft.str[0] in "<|", f"{name}.{field} is {ft.str}: records are little-endian"
        assert off % ft.itemsize == 0, f"{name}.{field} at {off} is not aligned to {ft.itemsize}"
        assert ft.kind in "iu", f"{name}.{field} is {ft}: records hold integers only"


def test_digests_tell_records_apart():
    digests = {schema.dtype_digest(getattr(schema, n)) for n in PINNED}
    assert len(digests) == len(PINNED)


def test_record_builder_refuses_an_overrun():
    # numpy refuses the itemsize first; the builder's own assert backs it up
    with pytest.raises((ValueError, AssertionError)):
        schema.record(("a", "i8", 60))


def test_record_builder_pads_and_forces_little_endian():
    dt = schema.record(("a", "i4", 0), ("b", "u2", 8))
    assert dt.itemsize == 64
    assert dt.fields["a"][0].str == "<i4" and dt.fields["b"][0].str == "<u2"
    assert dt.fields["b"][1] == 8


@pytest.mark.parametrize("enum, values", [
    (schema.Kind, {"NEW": 1, "CANCEL": 2, "REPLACE": 3, "CANCEL_ALL": 4}),
    (schema.Side, {"BUY": 1, "SELL": 2}),
    (schema.OrderType, {"LIMIT": 1, "MARKET": 2}),
    (schema.Tif, {"GTC": 1, "IOC": 2, "FOK": 3, "POST_ONLY": 4}),
    (schema.Stp, {"NONE": 0, "CANCEL_NEWEST": 1, "CANCEL_OLDEST": 2, "CANCEL_BOTH": 3,
                  "DECREMENT": 4}),
    (schema.ReportKind, {"ACK": 1, "FILL": 2, "CANCELED": 3, "REPLACED": 4, "REJECTED": 5,
                         "EXPIRED": 6}),
    (schema.Liquidity, {"NONE": 0, "MAKER": 1, "TAKER": 2}),
    (schema.Reason, {"NONE": 0, "UNKNOWN_ORDER": 1, "DUPLICATE_ID": 2, "BAD_QTY": 3,
                     "PRICE_BAND": 4, "UNKNOWN_SYMBOL": 5, "BAD_FIELD": 6, "BOOK_FULL": 7,
                     "POST_ONLY_WOULD_CROSS": 8, "SELF_TRADE": 9, "BAD_PSEQ": 10,
                     "WRONG_ACCOUNT": 11, "TOO_MANY_ORDERS": 12, "DISCONNECTED": 13}),
], ids=lambda v: getattr(v, "__name__", ""))
def test_enum_values_are_pinned(enum, values):
    # the values are bytes in the WAL: renumbering one is a layout change
    assert {m.name: m.value for m in enum} == values


@pytest.mark.parametrize("const, member", [
    ("K_NEW", schema.Kind.NEW), ("K_CANCEL", schema.Kind.CANCEL), ("K_REPLACE", schema.Kind.REPLACE),
    ("K_CANCEL_ALL", schema.Kind.CANCEL_ALL), ("RS_DISCONNECTED", schema.Reason.DISCONNECTED),
    ("BUY", schema.Side.BUY), ("SELL", schema.Side.SELL),
    ("LIMIT", schema.OrderType.LIMIT), ("MARKET", schema.OrderType.MARKET),
    ("GTC", schema.Tif.GTC), ("IOC", schema.Tif.IOC), ("FOK", schema.Tif.FOK),
    ("POST_ONLY", schema.Tif.POST_ONLY),
    ("STP_NONE", schema.Stp.NONE), ("STP_DECREMENT", schema.Stp.DECREMENT),
    ("R_ACK", schema.ReportKind.ACK), ("R_EXPIRED", schema.ReportKind.EXPIRED),
    ("LIQ_NONE", schema.Liquidity.NONE), ("MAKER", schema.Liquidity.MAKER),
    ("TAKER", schema.Liquidity.TAKER),
    ("RS_NONE", schema.Reason.NONE), ("RS_SELF_TRADE", schema.Reason.SELF_TRADE),
    ("RS_BAD_PSEQ", schema.Reason.BAD_PSEQ), ("RS_WRONG_ACCOUNT", schema.Reason.WRONG_ACCOUNT),
    ("RS_TOO_MANY_ORDERS", schema.Reason.TOO_MANY_ORDERS),
])
def test_kernel_constants_match_their_enums(const, member):
    value = getattr(schema, const)
    assert type(value) is int and value == member.value


def test_value_bounds_fit_the_fields():
    assert schema.PRICE_MIN == np.iinfo(schema.COMMAND["price"]).min
    assert schema.PRICE_MAX == np.iinfo(schema.COMMAND["price"]).max
    assert schema.QTY_MAX == np.iinfo(schema.COMMAND["qty"]).max


def test_zeroed_arrays():
    c, r = schema.commands(3), schema.reports(2)
    assert c.dtype == schema.COMMAND and len(c) == 3 and not c.view(np.uint8).any()
    assert r.dtype == schema.REPORT and len(r) == 2 and not r.view(np.uint8).any()
    assert len(schema.commands()) == 0
