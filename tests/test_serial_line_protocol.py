"""The serial line protocol and its framing: every rejection reason, and the simulated
devices' own encoder agreeing byte for byte with the gateway's."""

import pytest

from devices.registry import Device
from devices.rejections import Reason, Rejection
from devices.serial.line_protocol import encode_line, parse_line
from devices.serial.line_reader import Garbage, LineFramer
from devices.serial.results import decoded
from domain import Location, Reading
from simulators.serial.sentences import sentence

HERE = Location(26.08, 119.3)
REGISTRY = {
    "WL-1": Device("WL-1", "water_level", HERE),
    "MH-1": Device("MH-1", "manhole_cover", HERE),
    "BIN-1": Device("BIN-1", "bin", HERE),
}
NOW = 1_763_700_000_000


def parse(line: bytes):
    return parse_line(line, REGISTRY, NOW)


def reason(result) -> Reason:
    assert isinstance(result, Rejection), result
    return result.reason


def with_checksum(body: str) -> bytes:
    check = 0
    for byte in body.encode():
        check ^= byte
    return f"${body}*{check:02X}\r\n".encode()


def test_the_spec_example_is_what_encode_line_sends():
    assert encode_line("WL", "WL-101", [42.5, 91]) == b"$WL,WL-101,42.5,91*24\r\n"


@pytest.mark.parametrize(
    ("kind", "device", "values"),
    [
        ("water_level", "WL-1", {"level_cm": 42.5, "battery_pct": 91.0}),
        ("manhole_cover", "MH-1", {"tilt_deg": 17.25, "lid_open": True, "battery_pct": 88.0}),
        ("bin", "BIN-1", {"fill_pct": 0.0, "battery_pct": 5.5}),
    ],
)
def test_each_type_round_trips_and_is_stamped_with_receive_time(kind, device, values):
    result = parse(sentence(kind, device, values))
    assert result == Reading(device_id=device, kind=kind, ts=NOW, values=values)


def test_device_encoder_and_gateway_encoder_agree_byte_for_byte():
    values = {"tilt_deg": 3.1, "lid_open": False, "battery_pct": 70.0}
    assert sentence("manhole_cover", "MH-1", values) == encode_line("MH", "MH-1", [3.1, False, 70])


def test_empty_battery_is_left_out_and_line_end_may_be_bare_newline():
    line = encode_line("BN", "BIN-1", [80, None]).replace(b"\r\n", b"\n")
    result = parse(line)
    assert isinstance(result, Reading)
    assert result.values == {"fill_pct": 80.0}


def test_lowercase_checksum_is_accepted():
    line = encode_line("WL", "WL-1", [10, 90])
    assert isinstance(parse(line[:-4] + line[-4:-2].lower() + b"\r\n"), Reading)


def test_wrong_checksum_is_bad_checksum_and_names_the_device():
    result = sentence("water_level", "WL-1", {"level_cm": 10.0}, corrupt=True)
    rejected = parse(result)
    assert reason(rejected) == Reason.BAD_CHECKSUM
    assert rejected.device_id == "WL-1"


@pytest.mark.parametrize(
    "line",
    [
        b"$WL,WL-1,10,90\r\n",  # no checksum
        b"$WL,WL-1,10,90*G1\r\n",  # not hex
        "$WL,WL-1,10,9°*00\r\n".encode(),  # not ASCII
    ],
)
def test_lines_that_are_not_sentences_are_garbage(line):
    assert reason(parse(line)) == Reason.GARBAGE


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("XX,WL-1,10,90", Reason.BAD_SCHEMA),  # unknown type
        ("WL,WL-1,10", Reason.BAD_SCHEMA),  # a field short
        ("WL,WL-1,10,90,1", Reason.BAD_SCHEMA),  # a field too many
        ("BN,WL-1,10,90", Reason.BAD_SCHEMA),  # a bin sentence from a water gauge
        ("WL,WL-1,1e3,90", Reason.BAD_SCHEMA),  # exponent
        ("WL,WL-1,nan,90", Reason.BAD_SCHEMA),
        ("WL,WL-1,,90", Reason.BAD_SCHEMA),  # the level is required
        ("MH,MH-1,3,2,90", Reason.BAD_SCHEMA),  # a flag is 0 or 1
        ("WL,WL-9,10,90", Reason.UNKNOWN_DEVICE),
        ("BN,BIN-1,140,90", Reason.OUT_OF_RANGE),
        ("WL,WL-1,-5,90", Reason.OUT_OF_RANGE),
    ],
)
def test_each_bad_sentence_is_rejected_with_its_reason(body, expected):
    assert reason(parse(with_checksum(body))) == expected


def test_framer_skips_noise_before_a_sentence_as_one_garbage_run():
    framer = LineFramer()
    out = framer.feed(b"\x00\xffnoise" + encode_line("WL", "WL-1", [1, 2]))
    assert out[0] == Garbage(7, "bytes outside a sentence")
    assert out[1] == encode_line("WL", "WL-1", [1, 2])


def test_framer_joins_a_sentence_split_across_reads_and_ignores_bare_line_ends():
    framer = LineFramer()
    line = encode_line("WL", "WL-1", [1, 2])
    assert framer.feed(b"\r\n\r\n" + line[:5]) == []
    assert framer.feed(line[5:]) == [line]


def test_framer_gives_up_a_sentence_cut_short_by_the_next():
    framer = LineFramer()
    line = encode_line("WL", "WL-1", [1, 2])
    out = framer.feed(line[:9] + line)
    assert out == [Garbage(9, "sentence cut short by the next one"), line]


def test_framer_bounds_an_overlong_line_and_resumes_after_it():
    framer = LineFramer(max_bytes=32)
    line = encode_line("WL", "WL-1", [1, 2])
    out = framer.feed(b"$" + b"A" * 100 + b"\r\n" + line)
    assert out == [Garbage(102, "line over 32 bytes"), line]  # the "\n" ends the run


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("WL,WL-1," + "9" * 200 + ",90", Reason.OUT_OF_RANGE),  # a number beyond any level
        ("WL,WL-1,inf,90", Reason.BAD_SCHEMA),
        ("WL,WL-1" + ",1" * 120, Reason.BAD_SCHEMA),  # 120 fields
        ("WL," + "W" * 64 + ",10,90", Reason.UNKNOWN_DEVICE),
        ("WL," + "W" * 65 + ",10,90", Reason.TOO_LARGE),  # the registry's id bound
    ],
    ids=["200-digits", "inf", "120-fields", "64-char-id", "65-char-id"],
)
def test_extreme_but_framed_sentences_are_refused_by_reason(body, expected):
    assert reason(parse(with_checksum(body))) == expected


def test_a_line_over_256_bytes_is_garbage_even_when_framed():
    longest = with_checksum("WL,WL-1,10," + "0" * (256 - 17))  # 256 bytes with its line end
    assert len(longest) == 256 and isinstance(parse(longest), Reading)
    result = parse(with_checksum("WL,WL-1,10," + "0" * (257 - 17)))
    assert reason(result) == Reason.GARBAGE
    assert result.detail == "line of 257 bytes is over 256"


def test_a_decoder_that_raises_costs_one_internal_rejection_not_the_reading_thread():
    def broken() -> Reading:
        raise ValueError("no such field")

    assert decoded(broken) == Rejection(Reason.INTERNAL, "ValueError: 'no such field'")
    assert decoded(lambda: parse(encode_line("WL", "WL-1", [10, 90]))) == Reading(
        "WL-1", "water_level", NOW, {"level_cm": 10.0, "battery_pct": 90.0}
    )
